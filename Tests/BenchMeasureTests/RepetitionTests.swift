import BenchAnalysis
@testable import BenchMeasure
import DirtyLogCore
import Testing

/// A point's repetitions as `PointRecord.judge` stops them and
/// `PointRecord.bearsOut` checks them: the rule a row names is the one
/// that held, at the count the row shows.
@Suite struct RepetitionTests {
    /// `count` samples spread ±50% around `center` (seeded), and `far`
    /// samples of another strategy ten times dearer.
    func record(count: Int, center: Double = 1000) -> PointRecord {
        var r = PointRecord([.model(.masked), .model(.rmapWalk)])
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<count {
            var m = Measurement()
            m.ns = UInt64(center * (0.5 + Double(rng.below(1000)) / 1000))
            r.add(0, m, timed: true)
        }
        for _ in 0..<3 {
            var m = Measurement()
            m.ns = UInt64(center * 10)
            r.add(1, m, timed: true)
        }
        return r
    }

    @Test func aCapNeverFallsBackBelowTheCountARowShows() {
        var r = record(count: 13)
        // It decided at an earlier repetition (its interval overlapped the
        // best's then); now nothing is near it.
        r.decided[0] = true
        let stop = r.judge(0, policy: .standard, repetitionNs: 1e6, nearThreshold: false)
        #expect(stop == .maxReps(13), "the deciding cap, which the row's 13 samples reached")
        #expect(r.bearsOut(stop!, 0))
        #expect(!r.bearsOut(.maxReps(5), 0), "a cap of 5 does not describe 13 samples")
    }

    @Test func noSeparationWhereThePointDecides() {
        var r = record(count: 2, center: 1000)
        // rmap-walk, ten times masked's: separated where nothing is decided...
        #expect(r.judge(1, policy: .standard, repetitionNs: 1e6, nearThreshold: false) == .separated(factor: 2))
        // ...not near n_used_mmu_pages, where the report reads every median.
        var near = record(count: 2, center: 1000)
        #expect(near.judge(1, policy: .standard, repetitionNs: 1e6, nearThreshold: true) == nil)
        _ = r
    }

    /// masked stopped by separation after one long sample, measured before
    /// rmap and slot-walk in the point's first repetition; they end within
    /// 2x of each other (the crossover's octave, where the report reads
    /// every median), so masked goes on. Reopen only the separations that no
    /// longer hold, and it stays stopped at one sample: this fails.
    @Test func aSeparationReopensWhereThePointTurnsOutToDecide() {
        var r = PointRecord([.model(.masked), .model(.rmap), .model(.slotWalk)])
        func add(_ si: Int, _ ns: UInt64) {
            var m = Measurement()
            m.ns = ns
            r.add(si, m, timed: true)
        }
        add(0, 40_000_000)
        for ns: UInt64 in [9_000_000, 9_500_000, 10_000_000] { add(1, ns) }
        for ns: UInt64 in [12_000_000, 12_500_000, 13_000_000] { add(2, ns) }
        r.stops = [.separated(factor: 2), .maxReps(3), .maxReps(3)]
        #expect(r.bearsOut(.separated(factor: 2), 0), "40 ms against 9.5: still separated")
        r.reopenSeparations(confidence: 0.9)
        #expect(r.stops[0] == nil, "rmap and slot-walk within 2x: masked's median is read, so it repeats")
        #expect(r.stops[1] == .maxReps(3) && r.stops[2] == .maxReps(3))
    }

    @Test func aSeparationIsCheckedAgainstTheMediansAsTheyEnd() {
        var r = record(count: 5, center: 1000)
        #expect(r.bearsOut(.separated(factor: 2), 1))
        // The best other's median rises past half of rmap-walk's least sample.
        for _ in 0..<10 {
            var m = Measurement()
            m.ns = 6000
            r.add(0, m, timed: true)
        }
        #expect(!r.bearsOut(.separated(factor: 2), 1))
    }
}
