import DirtyLogCore
import Testing
@testable import ShadowMMU

/// The successors' mechanics, each on a small VM.
@Suite struct SuccessorTests {
    func round(_ vm: VirtualMachine, _ s: Strategy, _ pages: [Int], mapping: (Int) -> Int = { _ in 0 }) -> (Harvest, [Int]) {
        vm.beginRound(slotID: 0, for: s)
        vm.write(pages, mapping: mapping)
        return vm.harvest(s)
    }

    @Test func maskedTakesEachWordWithXchgAndHandsOutTheBuffer() {
        let vm = VirtualMachine.small(.tdp)
        let (h, pages) = round(vm, .masked, [0, 1, 63, 64, 4000])
        #expect(pages == [0, 1, 63, 64, 4000])
        #expect(h.bitmap == vm.measured.otherBitmap, "the cleared other half is the buffer")
        #expect(vm.measured.state.pointee.activeHalf == 0, "no swap")
        #expect(DirtyBitmap.popcount(vm.measured.dirtyBitmap, words: vm.measured.bitmapWords) == 0)
        #expect(h.counters.lockAcquisitions == 1)
        #expect(vm.writableGFNs.isEmpty)
    }

    @Test func rmapWalkVisitsEverySpteAndKeepsTheLockUncontended() {
        let vm = VirtualMachine.small(.shadow(mappings: 2), slotPages: 4096)
        let (h, _) = round(vm, .rmapWalk, [5, 6, 7])
        // Nobody waits for mmu_lock: no yield (ConcurrencyTests has the contended walk).
        #expect(h.counters.lockAcquisitions == 1)
        #expect(h.counters.rmapEntriesVisited == 2 * 4096)
        #expect(h.counters.sptesProtected == 3)
    }

    @Test func tdpWalkScansTheSlotsRangeOfTheTreeOnly() {
        let vm = VirtualMachine.small(.tdp, slotPages: 2048, vmPages: 8192)
        let (h, _) = round(vm, .tdpWalk, [0, 2047])
        #expect(h.counters.sptesProtected == 2)
        #expect(h.counters.rmapEntriesVisited == 0, "no rmap is read")
        // The 4 leaf tables of the slot, scanned whole, plus one entry per upper level each.
        #expect(h.counters.sptesScanned == 4 * 512 + 4 + 1 + 1)
        #expect(vm.writableGFNs.isEmpty)
        let other = vm.slot(1)
        #expect(vm.withMMU { isWritableSPTE($0.spte(gfn: 5000, mapping: 0, slot: other)!.pointee) }, "the other slot is untouched")
    }

    @Test func tdpMaskedDescendsOncePerWord() {
        let vm = VirtualMachine.small(.tdp)
        let (h, _) = round(vm, .tdpMasked, [1, 2, 3, 700])
        #expect(h.counters.sptesProtected == 4)
        #expect(h.counters.shadowPagesVisited == 2 * 4, "two words, four tables each")
        #expect(vm.writableGFNs.isEmpty)
    }

    /// clear_dirty_pt_masked() walks the leaves from the mask's first set
    /// bit and stops at the first leaf it reads with the mask spent: one
    /// past the last set bit's, within the word.
    @Test func tdpMaskedReadsTheLeavesBetweenAWordsFirstAndLastPages() {
        let vm = VirtualMachine.small(.tdp)
        let (h, _) = round(vm, .tdpMasked, [3, 40, 128 + 60, 128 + 63])
        #expect(h.counters.sptesProtected == 4)
        #expect(h.counters.sptesScanned == (40 - 3 + 2) + (63 - 60 + 1), "3 to 41 in one word, 60 to 63 in the other")
    }

    @Test func dirtyBitClearingLetsWritesThroughAndLogsThemByPML() {
        let vm = VirtualMachine.small(.tdp)
        vm.beginRound(slotID: 0, for: .dbitClear)
        #expect(vm.writableGFNs.count == 4096 && vm.dirtyGFNs.isEmpty, "writable and clean")
        #expect(vm.write(Array(0..<600)) == 0, "no fault")
        // 512 frames filled vCPU 0's PML buffer, which flushed into the bitmap.
        #expect(vm.measured.state.pointee.nrDirtyPages == 512)
        #expect(vm.withMMU { $0.vcpus[0].pmlCount } == 88)
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
        let (h, pages) = vm.harvest(.dbitClear)
        #expect(pages == Array(0..<600), "the harvest flushes the rest first")
        #expect(h.counters.sptesProtected == 600)
        #expect(vm.dirtyGFNs.isEmpty && vm.writableGFNs.count == 4096)
    }

    @Test func clearChunkedGetsWithoutClearingThenClearsPerChunk() {
        let vm = VirtualMachine.small(.tdp, slotPages: 4096)
        vm.state.pointee.clearChunkPages = 1024
        vm.beginRound(slotID: 0, for: .clearChunked)
        vm.write([10, 20, 3000])
        var phases = HarvestPhaseMarks()
        let before = MonotonicClock.now()
        let h = vm.withMMU { mmu in mmu.harvest(slot: mmu.slot(id: 0), strategy: .clearChunked, phases: &phases) }
        var pages: [Int] = []
        DirtyBitmap.forEachSetBit(h.bitmap, words: vm.measured.bitmapWords) { pages.append($0.index) }
        #expect(pages == [10, 20, 3000])
        #expect(phases.firstPhaseEnd >= before, "GET's end was stamped")
        #expect(h.counters.lockAcquisitions == 2, "two of the four 1024-page chunks are dirty")
        #expect(h.counters.tlbFlushes == 2)
        #expect(vm.measured.state.pointee.nrDirtyPages == 0)
        #expect(vm.writableGFNs.isEmpty)
    }

    @Test func theRingMergesEntriesWithin64PagesIntoOneMask() {
        let vm = VirtualMachine(layout: VMLayout(paging: .tdp, slotPages: 4096), vcpus: 1, ringEntries: 1024)
        // 100, 101, 150 (within 64 of 100), 90 (backwards, and the mask
        // still fits), 500: two masks.
        let (h, pages) = round(vm, .ring, [100, 101, 150, 90, 500])
        #expect(pages == [90, 100, 101, 150, 500])
        #expect(h.counters.lockAcquisitions == 2)
        // With 163, the mask reaches bit 63, 90 no longer fits behind it: three masks, as the kernel does.
        let (h3, _) = round(vm, .ring, [100, 101, 163, 90, 500])
        #expect(h3.counters.lockAcquisitions == 3)
        #expect(vm.writableGFNs.isEmpty)
        #expect(vm.measured.state.pointee.nrDirtyPages == 0)
        #expect(DirtyBitmap.popcount(vm.measured.dirtyBitmap, words: vm.measured.bitmapWords) == 0, "no bitmap is used")
    }

    @Test func aSoftFullRingStopsTheVCPU() {
        let vm = VirtualMachine(layout: VMLayout(paging: .tdp, slotPages: 4096), vcpus: 1, ringEntries: 128)
        vm.beginRound(slotID: 0, for: .ring)
        let results: [GuestWrite] = vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            return (0..<64).map { p in mmu.guestWrite(slot: s, gfn: GFN(UInt64(p)), sptep: mmu.spte(gfn: GFN(UInt64(p)), mapping: 0, slot: s)!) }
        }
        // 128 entries less 64 reserved: the 64th push fills it.
        #expect(results.prefix(63).allSatisfy { $0 == .faulted })
        #expect(results[63] == .ringFull)
        #expect(vm.harvest(.ring).1 == Array(0..<64))
    }

    @Test func vCPUsWriteToTheirOwnRings() {
        let vm = VirtualMachine(layout: VMLayout(paging: .tdp, slotPages: 4096), vcpus: 2, ringEntries: 1024)
        vm.beginRound(slotID: 0, for: .ring)
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            for p in 0..<10 { mmu.guestWrite(slot: s, gfn: GFN(UInt64(p)), sptep: mmu.spte(gfn: GFN(UInt64(p)), mapping: 0, slot: s)!, vcpu: p % 2) }
            #expect(mmu.vcpus[0].dirtyIndex == 5 && mmu.vcpus[1].dirtyIndex == 5)
        }
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
        #expect(vm.harvest(.ring).1 == Array(0..<10))
    }
}
