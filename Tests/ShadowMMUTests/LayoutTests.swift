import DirtyLogCore
import Testing
@testable import ShadowMMU

@Suite struct LayoutTests {
    @Test func tdpCountsShadowPagesAsTheKernelDoes() {
        // 4096 pages: 8 leaf tables, one level-2 page, one level-3 page, the root.
        let vm = VirtualMachine.small(.tdp)
        #expect(vm.nUsedMMUPages == 11)
        #expect(VMLayout(paging: .tdp, slotPages: 4096).expectedShadowPages == 11)
        #expect(VMLayout(paging: .tdp, slotPages: 262_144).expectedShadowPages == 515)
        #expect(VMLayout(paging: .tdp, slotPages: 1 << 22).expectedShadowPages == 8210)
    }

    @Test func tdpMapsEachGFNOnceWithADirectSpte() {
        let vm = VirtualMachine.small(.tdp, slotPages: 1000)
        let s = vm.measured
        for gfn in (0..<UInt64(1000)).map { GFN($0) } {
            #expect(PteList.count(s.rmapHead(gfn: gfn, level: 1).pointee) == 1)
            #expect(s.rmapHead(gfn: gfn, level: 1).pointee & 1 == 0)
        }
        #expect(vm.pteListDescsInUse == 0)
    }

    @Test(arguments: [1, 3, 4, 5, 9])
    func shadowPagingMapsEachGFNOncePerAddressSpace(mappings k: Int) {
        let vm = VirtualMachine.small(.shadow(mappings: k), slotPages: 2048)
        #expect(vm.nUsedMMUPages == k * VMLayout.shadowPagesPerAddressSpace(pages: 2048))
        let s = vm.measured
        for gfn in stride(from: UInt64(0), to: 2048, by: 97).map { GFN($0) } {
            #expect(PteList.count(s.rmapHead(gfn: gfn, level: 1).pointee) == k)
        }
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).ok)
    }

    @Test func secondSlotTakesTheRestOfTheVMAndCountsInNUsed() {
        let vm = VirtualMachine.small(.tdp, slotPages: 1024, vmPages: 4096)
        #expect(vm.nUsedMMUPages == VirtualMachine.small(.tdp, slotPages: 4096).nUsedMMUPages)
        let other = vm.slot(VMLayout.otherSlotID)
        #expect(other.baseGFN == 1024 && other.npages == 3072)
        #expect(!other.state.pointee.dirtyLogging)
        // The other slot is not logging: its leaves stay writable.
        #expect(vm.withMMU { mmu in isWritableSPTE(mmu.spte(gfn: 2000, mapping: 0, slot: other)!.pointee) })
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).ok)
    }

    @Test func enablingDirtyLoggingProtectsTheWholeSlot() {
        let vm = VirtualMachine.small(.shadow(mappings: 2))
        #expect(vm.writableGFNs.isEmpty)
        #expect(vm.measured.state.pointee.nrDirtyPages == 0)
        #expect(vm.tlbFlushes == 1)
    }

    @Test func tearingDownAVMReturnsEveryByteToTheArena() {
        let arena = JemallocArena()
        let before = arena.allocatedBytes
        do {
            let vm = VirtualMachine(layout: VMLayout(paging: .shadow(mappings: 5), slotPages: 8192, vmPages: 9000), arena: arena)
            #expect(arena.allocatedBytes > before + vm.nUsedMMUPages * 4096)
            #expect(arena.residentBytes > 0)
        }
        #expect(arena.allocatedBytes == before)
    }

    @Test func estimateCoversWhatTheArenaHolds() {
        let arena = JemallocArena()
        let layout = VMLayout(paging: .shadow(mappings: 3), slotPages: 16384)
        let vm = VirtualMachine(layout: layout, arena: arena)
        #expect(arena.allocatedBytes <= layout.estimatedBytes())
        #expect(arena.allocatedBytes > layout.estimatedBytes() / 2)
        _ = vm
    }
}
