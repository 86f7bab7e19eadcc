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
