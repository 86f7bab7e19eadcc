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

    @Test func rmapWalkVisitsEverySpteAndYieldsTheLockAsToldTo() {
        let vm = VirtualMachine.small(.shadow(mappings: 2), slotPages: 4096)
        vm.state.pointee.yieldEveryGFNs = 1000
        let (h, _) = round(vm, .rmapWalk, [5, 6, 7])
        // 4096 4 KiB heads + 8 level-2 heads + 1 level-3 head = 4105 heads: 4 yields.
        #expect(h.counters.lockAcquisitions == 5)
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
        let (h, pages) = round(vm, .clearChunked, [10, 20, 3000])
        #expect(pages == [10, 20, 3000])
        #expect(h.firstPhaseEnd > 0)
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
            return (0..<64).map { p in mmu.guestWrite(slot: s, gfn: UInt64(p), sptep: mmu.spte(gfn: UInt64(p), mapping: 0, slot: s)!) }
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
            for p in 0..<10 { mmu.guestWrite(slot: s, gfn: UInt64(p), sptep: mmu.spte(gfn: UInt64(p), mapping: 0, slot: s)!, vcpu: p % 2) }
            #expect(mmu.vcpus[0].dirtyIndex == 5 && mmu.vcpus[1].dirtyIndex == 5)
        }
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
        #expect(vm.harvest(.ring).1 == Array(0..<10))
    }
}

/// The adaptive rule's decisions and its look at the bitmap.
@Suite struct AdaptiveTests {
    func model() -> CostModel {
        var m = CostModel()
        m.calibrated = true
        m.masked.fixed = 1000
        m.masked.perPage = .init(regular: PerPageCurve(sparse: 20, dense: 5), scattered: PerPageCurve(sparse: 100, dense: 30, denseRho: 16))
        m.rmap = m.masked
        m.rmap.fixed = 2000
        m.slotWalk.fixed = 100_000
        m.slotWalk.perEdge = .init(regular: 0, scattered: 5)
        m.rmapWalk.fixed = 500_000
        return m
    }

    @Test func fewPagesGoToMaskedManyToTheWalkWithoutLookingWhenThatIsClear() {
        let m = model()
        var looked = false
        #expect(m.choose(dirty: 10, pages: 1 << 18, words: 4096) { looked = true; return BitmapShape(nonZeroWords: 0, edges: 0, regular: true) } == .masked)
        #expect(!looked, "10 pages: masked at any shape")
        #expect(m.choose(dirty: 1 << 18, pages: 1 << 18, words: 4096) { looked = true; return BitmapShape(nonZeroWords: 0, edges: 0, regular: true) } == .slotWalk)
        #expect(!looked, "every page: the walk")
    }

    @Test func inBetweenTheShapeDecides() {
        let m = model()
        // 4000 pages: clustered costs masked 1000 + 4000·5 = 21 µs; scattered 1000 + 4000·100 = 401 µs > the walk.
        var looked = 0
        let clustered = m.choose(dirty: 4000, pages: 1 << 18, words: 4096) { looked += 1; return BitmapShape(nonZeroWords: 63, edges: 2, regular: true) }
        let scattered = m.choose(dirty: 4000, pages: 1 << 18, words: 4096) { looked += 1; return BitmapShape(nonZeroWords: 3900, edges: 8000, regular: false) }
        #expect(looked == 2)
        #expect(clustered == .masked)
        #expect(scattered == .slotWalk)
    }

    @Test func uncalibratedItIsMasked() {
        #expect(CostModel().choose(dirty: 1 << 20, pages: 1 << 20, words: 1 << 14) { BitmapShape(nonZeroWords: 1, edges: 1, regular: true) } == .masked)
    }

    @Test func thePerPageCurveRunsGeometricallyByOctave() {
        let c = PerPageCurve(sparse: 64, dense: 1)
        #expect(c.cost(rho: 1) == 64)
        #expect(c.cost(rho: 8) == 8)
        #expect(c.cost(rho: 64) == 1)
        #expect(c.cost(rho: 1000) == 1)
    }

    func shape(_ pages: [Int], words: Int = 64) -> BitmapShape {
        var b = [UInt64](repeating: 0, count: words)
        for p in pages { b[p >> 6] |= 1 << UInt64(p & 63) }
        return b.withUnsafeBufferPointer { MMU.bitmapShape($0.baseAddress!, words: words) }
    }

    @Test func theBitmapsShapeCountsWordsEdgesAndRegularity() {
        let run = shape(Array(100..<200))
        #expect(run.nonZeroWords == 3 && run.edges == 2 && run.regular)
        let strided = shape(stride(from: 0, to: 4096, by: 8).map { $0 })
        #expect(strided.nonZeroWords == 64 && strided.edges == 2 * 512 && strided.regular)
        var rng = SeededGenerator(seed: 3)
        let random = shape(Array(Set((0..<300).map { _ in rng.below(4096) })))
        #expect(!random.regular)
        let farApart = shape(stride(from: 0, to: 4096 * 4, by: 1024).map { $0 }, words: 256)
        #expect(!farApart.regular, "evenly spaced, but a leaf table apart: the prefetchers do not follow")
        #expect(shape([4095]).edges == 2, "past either end the bitmap counts as clear")
    }
}
