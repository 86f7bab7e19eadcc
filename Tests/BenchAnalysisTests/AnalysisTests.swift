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
