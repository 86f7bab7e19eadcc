import CAtomics
import Foundation
import ShadowMMU

/// Measures the adaptive rule's constants on a series' own VM before its
/// sweep, after one untimed harvest by each. Each candidate is timed with
/// cold caches (median of seven, three for sets above 100k pages) at dirty
/// sets that separate the terms of `CandidateCost`:
///
/// - 1 page: the fixed cost;
/// - masked, tdp-masked, rmap: isolated pages, one per word, 64 apart
///   (regular) and in random words (scattered), up to 2048 of them; up to
///   256 random full words (pages among neighbours); a random quarter of
///   the slot (scattered pages at ρ near 16);
/// - the walks: a quarter of the slot evenly spaced (regular edges) and
///   at random (scattered edges).
struct AdaptiveCalibration {
    let vm: VirtualMachine
    let flusher: CacheFlusher?
    let seed: UInt64
    let sptesPerGFN: Int

    func fit() -> CostModel {
        // A VM just built is not yet in its steady state (pages still
        // settling, nothing in the TLBs): one untimed harvest per candidate,
        // touching all of it, before anything is timed.
        for strategy in Strategy.adaptiveCandidates where !strategy.needsTDP || vm.state.pointee.tdpRoot >= 0 {
            _ = time(strategy, [0], reps: 1)
        }
        let s = vm.slot(VMLayout.measuredSlotID)
        let words = s.bitmapWords, pages = s.npages
        var rng = SeededGenerator(seed: seed ^ 0xADA)
        let one: [UInt32] = [UInt32(rng.below(pages))]
        let isolated = min(words, 2048, pages)
        // One page per word, every word from the first: evenly spaced, 64 apart.
        let regularSparse = DirtySet(bitmap: (0..<words).map { $0 < isolated ? 1 : 0 })
        let scatteredSparse = DirtyPattern.distinct(isolated, of: words, &rng)
            .map { UInt32(min(pages - 1, $0 * 64 + rng.below(64))) }.sorted()
        let fullWords = DirtyPattern.distinct(max(1, min(words - 1, 256)), of: max(1, words - 1), &rng)  // the last word may be short
        let clustered = fullWords.flatMap { w in (0..<64).map { UInt32(w * 64 + $0) } }.filter { Int($0) < pages }.sorted()
        let quarter = max(1, pages / 4)
        let evenQuarter = DirtyPattern.even.dirtySet(count: quarter, slotPages: pages, seed: seed)
        let scatteredQuarter = DirtyPattern.random.dirtySet(count: quarter, slotPages: pages, seed: seed ^ 0xED6E)
        func shape(_ set: DirtySet) -> BitmapShape { set.bitmap.withUnsafeBufferPointer { MMU.bitmapShape($0.baseAddress!, words: words) } }
        let scatteredShape = shape(scatteredQuarter)

        var m = CostModel()
        m.hasTDP = vm.state.pointee.tdpRoot >= 0
        func fitPerPage(_ strategy: Strategy) -> CandidateCost {
            let t1 = time(strategy, one)
            func per(_ t: Double, _ n: Int) -> Double { max(0, (t - t1) / Double(max(1, n - 1))) }
            var c = CandidateCost()
            c.fixed = t1
            let regIsolated = per(time(strategy, regularSparse.pages), regularSparse.count)
            let scatIsolated = per(time(strategy, scatteredSparse), scatteredSparse.count)
            let neighbours = per(time(strategy, clustered), clustered.count)
            let scatQuarter = per(time(strategy, scatteredQuarter.pages), scatteredQuarter.count)
            c.perPage = .init(regular: PerPageCurve(sparse: regIsolated, dense: neighbours),
                              scattered: PerPageCurve(sparse: scatIsolated, dense: scatQuarter,
                                                      denseRho: Double(scatteredQuarter.count) / Double(max(1, scatteredShape.nonZeroWords))))
            return c
        }
        func fitPerEdge(_ strategy: Strategy) -> CandidateCost {
            let t1 = time(strategy, one)
            var c = CandidateCost()
            c.fixed = t1
            c.perEdge = .init(regular: max(0, (time(strategy, evenQuarter.pages) - t1) / Double(max(1, shape(evenQuarter).edges))),
                              scattered: max(0, (time(strategy, scatteredQuarter.pages) - t1) / Double(max(1, scatteredShape.edges))))
            return c
        }
        m.masked = fitPerPage(.masked)
        m.rmap = fitPerPage(.rmap)
        m.slotWalk = fitPerEdge(.slotWalk)
        m.rmapWalk = fitPerEdge(.rmapWalk)
        if m.hasTDP {
            m.tdpMasked = fitPerPage(.tdpMasked)
            m.tdpWalk = fitPerEdge(.tdpWalk)
        }
        m.lockRoundTripNs = lockRoundTrip()
        m.calibrated = true
        return m
    }

    /// Median of `reps` cold harvests of `pages` by `strategy` (seven, or
    /// three above 100k pages), the pages written as the sweep writes them.
    func time(_ strategy: Strategy, _ pages: [UInt32], reps: Int? = nil) -> Double {
        let writes = ModelSeries.guestTranslations(vm: vm, pages: pages, sptesPerGFN: sptesPerGFN, seed: seed)
        var samples: [Double] = []
        for _ in 0..<(reps ?? (pages.count > 100_000 ? 3 : 7)) {
            vm.beginRound(slotID: VMLayout.measuredSlotID, for: strategy)
            let ns: UInt64 = vm.withMMU { mmu in
                let s = mmu.slot(id: VMLayout.measuredSlotID)
                for i in writes.gfns.indices { mmu.guestWrite(slot: s, gfn: writes.gfns[i], sptep: writes.sptes[i]) }
                flusher?.flush()
                ca_compiler_barrier()
                let t0 = MonotonicClock.now()
                _ = mmu.harvest(slot: s, strategy: strategy)
                let t1 = MonotonicClock.now()
                ca_compiler_barrier()
                return t1 &- t0
            }
            samples.append(Double(ns))
        }
        return Statistics.median(samples)
    }

    func lockRoundTrip() -> Double {
        vm.withMMU { mmu in
            let n = 100_000
            let t0 = MonotonicClock.now()
            for _ in 0..<n { mmu.spinLock(); mmu.spinUnlock() }
            return Double(MonotonicClock.now() - t0) / Double(n)
        }
    }
}
