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
