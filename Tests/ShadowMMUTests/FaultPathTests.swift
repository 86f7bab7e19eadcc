import DirtyLogCore
import Testing
@testable import ShadowMMU

@Suite struct FaultPathTests {
    @Test func aWriteToAProtectedPageFaultsOnceAndMarksItDirty() {
        let vm = VirtualMachine.small(.tdp)
        #expect(vm.write([5]) == 1)
        #expect(vm.writableGFNs == [5])
        #expect(vm.write([5]) == 0, "the spte is writable now: no second fault")
        let s = vm.measured
        #expect(s.state.pointee.nrDirtyPages == 1)
        #expect(s.dirtyBitmap[0] == 1 << 5)
        let spte = vm.withMMU { $0.spte(gfn: 5, mapping: 0, slot: s)!.pointee }
        #expect(spte & SPTE.dirty != 0)
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
    }

    /// Every path that makes a leaf writable on a write sets the bits its
    /// era's fault handler set: no SPTE_MMU_WRITEABLE before 3.6 (it came
    /// with c7ba5b48's series), the bit from then on. The rounds the
    /// harvests take, the vCPU's fault and the lifecycle's access agree.
    @Test(arguments: KernelEra.allCases)
    func everyWritePathSetsItsErasBits(era: KernelEra) {
        let vm = VirtualMachine.small(.tdp)
        vm.enterEra(era)
        vm.startGuests(count: 1)
        defer { vm.stopGuests() }
        let want = era.hasMMUWritable
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            let round = mmu.spte(gfn: 5, mapping: 0, slot: s)!
            mmu.guestWrite(slot: s, gfn: 5, sptep: round)
            mmu.vcpuEnterGuest(0)
            let fault = mmu.spte(gfn: 6, mapping: 0, slot: s)!
            _ = mmu.vcpuWriteFault(0, slot: s, gfn: 6, sptep: fault, fastPath: false)
            let access = mmu.spte(gfn: 7, mapping: 0, slot: s)!
            _ = mmu.vcpuAccess(0, slot: s, gfn: 7, write: true, fastPath: false)
            mmu.vcpuLeaveGuest(0)
            for (name, sptep) in [("the round's write", round), ("the vCPU's fault", fault), ("the lifecycle's access", access)] {
                #expect(isWritableSPTE(sptep.pointee), "\(name) at \(era.label)")
                #expect((sptep.pointee & SPTE.mmuWritable != 0) == want, "\(name) at \(era.label)")
            }
        }
    }

    @Test func nrDirtyPagesCountsPagesNotWrites() {
        let vm = VirtualMachine.small(.shadow(mappings: 3))
        // The same page through each of its three sptes: three faults, one dirty page.
        #expect(vm.write([9, 9, 9], mapping: { _ in 0 }) == 1)
        #expect(vm.write([9], mapping: { _ in 1 }) == 1)
        #expect(vm.write([9], mapping: { _ in 2 }) == 1)
        #expect(vm.measured.state.pointee.nrDirtyPages == 1)
        #expect(vm.writableGFNs == [9, 9, 9])
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
    }

    @Test func aHarvestHandsOutWhatWasWrittenAndClearsTheCurrentHalf() {
        let vm = VirtualMachine.small(.tdp)
        vm.write([1, 64, 4095])
        let (h, pages) = vm.harvest(.rmap)
        #expect(h.nrDirtyPages == 3)
        #expect(pages == [1, 64, 4095])
        #expect(vm.measured.state.pointee.nrDirtyPages == 0)
        #expect(DirtyBitmap.popcount(vm.measured.dirtyBitmap, words: vm.measured.bitmapWords) == 0)
        #expect(h.bitmap == vm.measured.otherBitmap, "the handed-out half is the other one now")
    }

    @Test func aHarvestWithNothingDirtyTouchesNoPageTable() {
        let vm = VirtualMachine.small(.tdp)
        let flushes = vm.tlbFlushes
        let (h, pages) = vm.harvest(.slotWalk)
        #expect(pages.isEmpty && h.nrDirtyPages == 0)
        #expect(h.counters == ProtectCounters())
        #expect(vm.tlbFlushes == flushes)
    }
}

/// spte_has_volatile_bits() by era: which sptes a holder of mmu_lock must
/// update atomically because the fast page fault may change them.
@Suite struct VolatileBitsTests {
    @Test func theRuleOfEachEra() {
        let writable = SPTE.leaf(pfn: 1) | SPTE.writable | SPTE.mmuWritable
        let protected = SPTE.leaf(pfn: 1) | SPTE.mmuWritable
        let plain = SPTE.leaf(pfn: 1)
        // 3.3: no lockless fault, nothing volatile.
        #expect(!KernelEra.linux3_3to3_5.spteHasVolatileBits(writable) && !KernelEra.linux3_3to3_5.spteHasVolatileBits(protected))
        // c7ba5b48: host- and MMU-writable, writable or not.
        #expect(KernelEra.linux4_2to5_11.spteHasVolatileBits(writable) && KernelEra.linux4_2to5_11.spteHasVolatileBits(protected))
        #expect(!KernelEra.linux4_2to5_11.spteHasVolatileBits(plain))
        // The later rule: only read-only and MMU-writable.
        #expect(!KernelEra.linux5_14on.spteHasVolatileBits(writable) && KernelEra.linux5_14on.spteHasVolatileBits(protected))
    }
}
