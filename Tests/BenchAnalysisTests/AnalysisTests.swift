import DirtyLogCore
import Foundation
import Testing
@testable import BenchAnalysis

@Suite struct StatisticsTests {
    @Test func quantilesInterpolateBetweenRanks() {
        let xs: [Double] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        #expect(Statistics.quantile(sorted: xs, 0.5) == 6)
        #expect(Statistics.quantile(sorted: xs, 0.1) == 2)
        #expect(Statistics.quantile(sorted: xs, 0.9) == 10)
        #expect(Statistics.quantile(sorted: [1, 2], 0.5) == 1.5)
        let s = SampleSummary([10, 12, 11, 13, 100])
        #expect(s.median == 12)
        #expect(s.mad == 1)
        #expect(s.cv > 1)
    }

    /// An even number of samples has two middle ones: the median is their
    /// mean, in `Statistics.median` and in a point's `SampleSummary` alike
    /// (not the upper one, which would bias every median of an even
    /// number of repetitions upwards).
    @Test func theMedianOfAnEvenSampleIsTheMeanOfItsMiddleTwo() {
        #expect(Statistics.median([40, 10, 30, 20]) == 25)
        #expect(Statistics.median([3, 1]) == 2)
        #expect(Statistics.median([5, 1, 9]) == 5)
        #expect(SampleSummary([40, 10, 30, 20]).median == 25)
        #expect(SampleSummary([100, 200]).median == 150)
        #expect(SampleSummary([7, 1, 4, 4, 9, 2]).median == 4)
        #expect(Statistics.mad([1, 2, 3, 4]) == 1, "deviations 1.5, 0.5, 0.5, 1.5: their median is 1")
    }

    @Test func theMediansIntervalIsTheOrderStatisticsThatHoldItOftenEnough() {
        // Five samples at 90%: the whole range (1 - 2/32 = 93.75%); four cannot reach 90%.
        let five: [Double] = [1, 2, 3, 4, 5]
        #expect(Statistics.medianInterval(sorted: five, confidence: 0.90)! == (1, 5))
        #expect(Statistics.medianInterval(sorted: [1, 2, 3, 4], confidence: 0.90) == nil)
        // Eleven at 90%: ranks 3 and 9 (1 - 2·P(B <= 2) = 93.5%; ranks 4 and 8 give 77.4%).
        let eleven = (1...11).map(Double.init)
        #expect(Statistics.medianInterval(sorted: eleven, confidence: 0.90)! == (3, 9))
        #expect(Statistics.medianInterval(sorted: [7, 8, 9], confidence: 0.75)! == (7, 9))
        #expect(SampleSummary(eleven).intervalRelativeWidth! == 1)
        // The 90% interval's lower rank moves only at 5, 8, 11 and 13
        // samples (where the default policy's caps sit).
        let ranks = (5...15).map { n in Int(Statistics.medianInterval(sorted: (1...n).map(Double.init), confidence: 0.90)!.low) }
        #expect(ranks == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4])
        // Too few for the confidence: the range, at its own level.
        let two = SampleSummary([10, 12])
        #expect(two.interval! == (10, 12) && two.intervalLevel == 0.5)
        #expect(SampleSummary([10, 11, 12]).intervalLevel == 0.75)
        #expect(SampleSummary([10]).interval == nil)
    }
}

/// The repetition rules: each stops where it says, and no row can claim
/// an interval narrower than its samples give.
@Suite struct RepetitionRuleTests {
    let policy = RepetitionPolicy(fixed: nil, minimum: 5, maximum: 7, decidingMaximum: 15, relativeWidth: 0.10, confidence: 0.90,
                                  longNs: 10e6, longMinimum: 2, longMaximum: 2, longDecidingMaximum: 5, warmup: 1, warmupBelowNs: 2e6)

    @Test func eachRuleStopsWhereItSaysAndNamesItself() {
        let tight: [Double] = [100, 101, 99, 100, 102]
        #expect(policy.stop(after: Array(tight.prefix(4)), repetitionNs: 1e6) == nil, "four samples have no 90% interval")
        #expect(policy.stop(after: tight, repetitionNs: 1e6) == .interval(confidence: 0.90, width: 0.10))
        #expect(RepetitionStop.interval(confidence: 0.90, width: 0.10).name == "ci90<=10%")
        let loose: [Double] = [100, 130, 80, 120, 90, 140, 70]
        #expect(policy.stop(after: Array(loose.prefix(6)), repetitionNs: 1e6) == nil)
        #expect(policy.stop(after: loose, repetitionNs: 1e6) == .maxReps(7))
        #expect(policy.stop(after: loose, repetitionNs: 1e6, deciding: true) == nil, "a deciding point goes on")
        #expect(policy.stop(after: loose + [100, 110, 95, 105, 100, 98, 101, 99], repetitionNs: 1e6, deciding: true) == .maxReps(15))
        #expect(RepetitionStop.maxReps(15).name == "max-reps=15")
        // Far above the best other strategy: two suffice.
        #expect(policy.stop(after: [300, 310], repetitionNs: 1e6, bestOther: 100) == .separated(factor: 2))
        #expect(policy.stop(after: [300, 190], repetitionNs: 1e6, bestOther: 100) == nil, "one sample within 2x")
        #expect(RepetitionStop.separated(factor: 2).name == "separated>2x")
        // Long repetitions: their range, unless the point decides.
        #expect(policy.stop(after: [100, 105], repetitionNs: 20e6) == .range(width: 0.10))
        #expect(policy.stop(after: [100, 150], repetitionNs: 20e6) == .maxReps(2))
        #expect(policy.stop(after: [100, 150], repetitionNs: 20e6, deciding: true) == nil)
        #expect(policy.stop(after: [300], repetitionNs: 20e6, bestOther: 100) == .separated(factor: 2),
                "a long repetition twice the best: one")
        #expect(policy.stop(after: [300], repetitionNs: 20e6, deciding: true, bestOther: 100) == nil,
                "where the point decides, never separated: the report reads its median")
        #expect(policy.stop(after: [300], repetitionNs: 1e6, bestOther: 100) == nil, "a short one: two")
        #expect(policy.stop(after: [6e6, 9e6, 7e6, 8e6, 6.5e6], repetitionNs: 20e6, deciding: true) == .maxReps(5),
                "a deciding long repetition stops at longDecidingMaximum")
        #expect(policy.stop(after: [100, 101, 99, 100, 100], repetitionNs: 20e6, deciding: true) == .interval(confidence: 0.90, width: 0.10))
        #expect(RepetitionStop.range(width: 0.10).name == "range<=10%")
    }

    /// Whatever the samples, a rule that claims a width is borne out by
    /// them: a row whose interval is wider than its reps_stop says cannot
    /// be written (PointRecord.rows checks `holds` too).
    @Test func noStopClaimsAnIntervalItsSamplesDoNotGive() {
        var rng = SeededGenerator(seed: 0x5EED)
        for _ in 0..<2000 {
            let n = Int.random(in: 1...15, using: &rng)
            let spread = [0.01, 0.05, 0.2, 1.0].randomElement(using: &rng)!
            let xs = (0..<n).map { _ in 1000 * (1 + spread * Double.random(in: -1...1, using: &rng)) }
            let long = Bool.random(using: &rng), deciding = Bool.random(using: &rng)
            guard let stop = policy.stop(after: xs, repetitionNs: long ? 20e6 : 1e6, deciding: deciding,
                                         bestOther: Bool.random(using: &rng) ? 400 : nil) else { continue }
            #expect(stop.holds(for: xs), "\(stop.name) for \(xs)")
            let s = SampleSummary(xs, confidence: policy.confidence)
            if case .interval(_, let w) = stop { #expect(s.intervalLevel == 0.90 && s.intervalRelativeWidth! <= w + 1e-12) }
            if case .range(let w) = stop { #expect((xs.max()! - xs.min()!) / s.median <= w + 1e-12) }
        }
    }
}

@Suite struct CrossoverTests {
    func pairs(_ t: [(Int, Double, Double)]) -> [Crossover.Pair] {
        t.map { Crossover.Pair(dirtyPages: $0.0, rmap: $0.1, slotWalk: $0.2) }
    }

    @Test func crossingIsInterpolatedInLogLog() {
        // rmap/slot-walk: 0.5 at 100, 2 at 400: log-linear, so the ratio is 1 at 200.
        let (x, note) = Crossover.find(pairs([(10, 1, 100), (100, 50, 100), (400, 200, 100), (1000, 900, 100)]))
        #expect(abs(x! - 200) < 1e-6)
        #expect(note == "interpolated between 100 and 400")
        #expect(Crossover.bracket(pairs([(10, 1, 100), (100, 50, 100), (400, 200, 100)]))! == (100, 400))
    }

    @Test func noCrossingIsSaid() {
        #expect(Crossover.find(pairs([(1, 5, 1), (2, 6, 1)])).0 == nil)
        #expect(Crossover.find(pairs([(1, 5, 1)])).1.hasPrefix("slot-walk already as fast"))
        #expect(Crossover.find(pairs([(1, 1, 5), (2, 1, 5)])).1.hasPrefix("rmap faster at every point"))
    }

    @Test func regretOfTheSeedsRule() {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 1000, vmPages: 1000, pattern: .even)
        func row(_ d: Int, _ s: Strategy, _ ns: Double) -> PointRow {
            PointRow(series: key, strategy: .model(s), nUsedMMUPages: 100, dirtyPages: d, samples: [ns], counters: ProtectCounters(), cache: .cold)
        }
        // At 50 the rule picks rmap (fastest); at 200 slot-walk (3x slower than rmap).
        let rows = [row(50, .rmap, 10), row(50, .slotWalk, 100), row(200, .rmap, 50), row(200, .slotWalk, 150)]
        let c = Crossover.row(series: key, rows: rows)!
        #expect(c.seedRegretMaxPct == 200)
        #expect(c.seedRegretMaxAt == 200)
        #expect(c.seedRegretMeanPct == 100)
        #expect(c.rmapSpeedupAtMin == 10)
        #expect(c.crossoverDirtyPages == nil)
    }
}

@Suite struct CSVTests {
    @Test func quotingRoundTrips() {
        var t = CSVTable(columns: ["a", "b"])
        t.append(["plain", "with, comma"])
        t.append(["\"quoted\"", "line\nbreak"])
        #expect(t.text == "a,b\nplain,\"with, comma\"\n\"\"\"quoted\"\"\",\"line\nbreak\"\n")
        let back = CSVTable.parse(t.text)!
        #expect(back.columns == ["a", "b"])
        #expect(back.rows == t.rows)
    }

    /// A table rewritten with CRLF line ends (Python's csv module does so)
    /// reads the same: in Swift "\r\n" is one Character, not "\r" then "\n".
    @Test func crlfLineEndsReadTheSame() {
        let back = CSVTable.parse("a,b\r\n1,\"x\r\ny\"\r\n2,3\r\n")
        #expect(back?.columns == ["a", "b"])
        #expect(back?.rows == [["1", "x\r\ny"], ["2", "3"]])
    }
}

@Suite struct AtomicFileTests {
    @Test func aWriteLeavesTheOldFileOrTheNewOneNeverHalf() throws {
        let dir = NSTemporaryDirectory() + "atomic-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/f.csv"
        try AtomicFile.write("old\n", to: path)
        try AtomicFile.write("new\n", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["f.csv"])
        #expect(throws: BenchError.self) { try AtomicFile.write("x", to: dir + "/missing/f.csv") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["f.csv"], "no temporary file left")
        try FileManager.default.removeItem(atPath: dir)
    }
}

/// The crossover's bootstrap interval: around the crossing, as wide as the
/// repetitions' spread makes it and the drift between runs, the same for
/// the same rows.
@Suite struct CrossoverIntervalTests {
    func rows(spread: Double, reps: Int, slotWalk: Double = 10_000) -> [PointRow] {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 1 << 16, vmPages: 1 << 16, pattern: .even)
        var rng = SeededGenerator(seed: 42)
        var out: [PointRow] = []
        for d in [250, 500, 1000, 2000, 4000] {
            for (s, ns) in [(Strategy.rmap, 10.0 * Double(d)), (.slotWalk, slotWalk)] {
                let samples = (0..<reps).map { _ in ns * (1 + spread * (Double(rng.below(2001)) / 1000 - 1)) }
                out.append(PointRow(series: key, strategy: .model(s), nUsedMMUPages: 100, dirtyPages: d, samples: samples,
                                    counters: ProtectCounters(), cache: .cold))
            }
        }
        return out
    }

    @Test func theIntervalHoldsTheCrossingAndWidensWithTheNoise() throws {
        let tight = try #require(Crossover.interval(rows(spread: 0.02, reps: 9), drift: 0, pointDrift: 0))
        let loose = try #require(Crossover.interval(rows(spread: 0.30, reps: 9), drift: 0, pointDrift: 0))
        #expect(tight.low < 1000 && 1000 < tight.high, "\(tight)")
        #expect(loose.low < 1000 && 1000 < loose.high, "\(loose)")
        #expect(tight.high - tight.low < loose.high - loose.low)
        #expect(tight.high / tight.low < 1.2, "\(tight)")
        let again = try #require(Crossover.interval(rows(spread: 0.30, reps: 9), drift: 0, pointDrift: 0))
        #expect(again.low == loose.low && again.high == loose.high, "seeded: the same rows, the same interval")
        #expect(Crossover.interval(rows(spread: 0.30, reps: 1)) == nil, "one repetition a point: nothing to draw from")
    }

    /// Repetitions redrawn say how well a run knows its own crossing; the
    /// next run's slot-walk may be 8% slower against rmap (the machine's
    /// bandwidth moved), and its crossing with it. The interval holds the
    /// next run's crossing when it counts the drift, not when it does not.
    @Test func theIntervalHoldsTheNextRunsCrossing() throws {
        let own = try #require(Crossover.interval(rows(spread: 0.02, reps: 9), drift: 0, pointDrift: 0))
        let forNext = try #require(Crossover.interval(rows(spread: 0.02, reps: 9)))
        let next = try #require(Crossover.find(Crossover.pairs(rows(spread: 0.02, reps: 9, slotWalk: 10_800))).0)
        #expect(next > own.high, "the repetitions alone: \(own), the next run crosses at \(next)")
        #expect(forNext.low < 1000 / 1.08 && next < forNext.high, "with the drift: \(forNext), the next run crosses at \(next)")
    }

    /// Points measured at different moments move apart on their own too: a
    /// drift of each point alone widens the interval as well.
    @Test func eachPointsOwnDriftWidensTheInterval() throws {
        let none = try #require(Crossover.interval(rows(spread: 0.02, reps: 9), drift: 0, pointDrift: 0))
        let own = try #require(Crossover.interval(rows(spread: 0.02, reps: 9), drift: 0))
        #expect(own.low < none.low && own.high > none.high && own.high / own.low > 1.15, "\(own) against \(none)")
    }
}

/// A rule's mean regret with its bootstrap interval.
@Suite struct RegretIntervalTests {
    @Test func theMeanRegretHasAnIntervalAroundIt() throws {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 4096, vmPages: 4096, pattern: .even)
        var rng = SeededGenerator(seed: 9)
        var rows: [PointRow] = []
        for d in [1, 16, 256, 4096] {
            // masked the best; adaptive chose slot-walk, 50% dearer.
            for (s, ns) in [(Strategy.masked, 1000.0), (.slotWalk, 1500.0), (.adaptive, 1500.0)] {
                let samples = (0..<9).map { _ in ns * (0.9 + Double(rng.below(201)) / 1000) }
                var r = PointRow(series: key, strategy: .model(s), nUsedMMUPages: 11, dirtyPages: d, samples: samples,
                                 counters: ProtectCounters(), cache: .cold)
                if s == .adaptive { r.choices = [.slotWalk: 9] }
                rows.append(r)
            }
        }
        let a = try #require(Crossover.successors(rows)?.adaptive)
        let lo = try #require(a.meanPctLow), hi = try #require(a.meanPctHigh)
        #expect(lo < a.meanPct && a.meanPct < hi, "\(lo) < \(a.meanPct) < \(hi)")
        #expect(lo > 30 && hi < 70, "around the 50% built in: \(lo)-\(hi)")
    }

    /// A rule that chooses one of six strategies equal but for noise: the
    /// least of six redrawn medians is below each one's own, so judged
    /// against it every draw's regret lies above the estimate. Judged
    /// against the strategy best by the medians, the interval holds it.
    @Test func aChoiceAmongEqualsHasItsEstimateInsideTheInterval() throws {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 4096, vmPages: 4096, pattern: .even)
        var rng = SeededGenerator(seed: 3)
        var rows: [PointRow] = []
        for d in (0..<24).map({ 1 << $0 }) {
            var adaptive: [Double] = []
            for s in [Strategy.masked, .slotWalk, .rmap, .tdpWalk, .tdpMasked, .rmapWalk] {
                let samples = (0..<5).map { _ in 1000 * (0.7 + Double(rng.below(601)) / 1000) }
                if s == .slotWalk { adaptive = samples }
                rows.append(PointRow(series: key, strategy: .model(s), nUsedMMUPages: 11, dirtyPages: d, samples: samples,
                                     counters: ProtectCounters(), cache: .cold))
            }
            var r = PointRow(series: key, strategy: .model(.adaptive), nUsedMMUPages: 11, dirtyPages: d, samples: adaptive,
                             counters: ProtectCounters(), cache: .cold)
            r.choices = [.slotWalk: 5]
            rows.append(r)
        }
        let a = try #require(Crossover.successors(rows)?.adaptive)
        let lo = try #require(a.meanPctLow), hi = try #require(a.meanPctHigh)
        #expect(lo <= a.meanPct && a.meanPct <= hi, "\(lo) <= \(a.meanPct) <= \(hi)")
    }
}
