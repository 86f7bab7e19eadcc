import Testing
import Foundation
import ShadowMMU
@testable import BenchKit

@Suite struct SweepTests {
    @Test func thresholdSweepSpansTheSlotAndIsDenseAroundNUsed() {
        let c = SweepPlan.thresholdSweep(slotPages: 262_144, nUsedMMUPages: 515)
        #expect(c.first == 1 && c.last == 262_144)
        #expect(c == c.sorted() && Set(c).count == c.count)
        #expect(c.contains(514) && c.contains(515))
        let near = c.filter { $0 >= 515 / 4 && $0 <= 515 * 4 }
        #expect(near.count >= 16, "4 points per octave over 4 octaves")
        let far = c.filter { $0 > 515 * 4 }
        #expect(far.count <= 8)
    }

    @Test func refinementBisectsInLogSpaceUntilAQuarterOctave() {
        #expect(SweepPlan.refinement(between: 1000, and: 4000) == 2000)
        #expect(SweepPlan.refinement(between: 1000, and: 1150) == nil)
        #expect(SweepPlan.refinement(between: 1, and: 2) == nil)
    }

    @Test func evenPatternIsDirtyLogPerfs() {
        let s = DirtyPattern.even.dirtySet(count: 4, slotPages: 1000, seed: 1)
        #expect(s.pages == [0, 250, 500, 750])
        #expect(DirtyPattern.even.dirtySet(count: 1000, slotPages: 1000, seed: 1).pages == (0..<1000).map(UInt32.init))
    }

    @Test(arguments: [1, 10, 499, 500, 501, 999, 1000])
    func randomPatternDrawsDistinctPagesReproducibly(count: Int) {
        let a = DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 5)
        let b = DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 5)
        #expect(a.pages == b.pages)
        #expect(a.pages.count == count && Set(a.pages).count == count)
        #expect(a.pages == a.pages.sorted() && a.pages.allSatisfy { $0 < 1000 })
        let bits = a.bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
        #expect(bits == count)
        if count == 10 {
            #expect(DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 6).pages != a.pages)
        }
    }
}

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

    @Test func theCurveIsReadBetweenMeasurementsAlongTheSteps() {
        let c = AdaptiveCalibration.curve([(rho: 1, pages: 10, added: 1000), (rho: 4, pages: 10, added: 400),
                                           (rho: 4, pages: 30, added: 2000), (rho: 64, pages: 100, added: 1000)])
        #expect(c.count == SpanDensity.steps)
        #expect(c[0] == 100 && c[8] == 60, "two at ρ = 4 pooled: 2400 ns over 40 pages")
        #expect(c[4] == 80, "ρ = 2: four steps of eight from ρ = 1")
        #expect(c[16] == 35 && c[24] == 10 && c[36] == 10, "held past the last")
    }

    @Test func regularSetsSampleEveryStepAndDodgeAliasingStrides() {
        let s = AdaptiveCalibration.strides.map(\.stride)
        #expect(s.contains(16) && s.contains(13) && s.contains(31) && !s.contains(32) && !s.contains(64))
        #expect(Set(s).count == s.count && s.allSatisfy { $0 > 1 })
        #expect(AdaptiveCalibration.strides.filter(\.octave).map(\.stride) == [4, 8, 16, 31, 63, 127, 255, 511])
    }

    @Test func aWalksPerPageCostIsDecidedByItsLargestSets() {
        // 200 µs fixed, ±20 µs of noise on the small sets, 0.1 ns a page.
        let p = AdaptiveCalibration.flat([(rho: 8, pages: 1000, added: 20_000), (rho: 64, pages: 30_000, added: -20_000),
                                          (rho: 512, pages: 262_144, added: 26_214)])
        #expect(abs(p - 0.1) < 0.02)
    }

    @Test func calibrationSetsSpanTheDensities() {
        let sets = AdaptiveCalibration.sets(pages: 1 << 18, seed: 1)
        #expect(sets.filter { $0.pages.count > AdaptiveCalibration.maxPages }.map(\.pages.count) == [1 << 18, 1 << 17],
                "only the whole slot and its random half are larger")
        #expect(sets.first?.kinds == [.regular, .scattered] && sets.first?.pages.count == 1)
        let regular = sets.filter { $0.kinds == [.regular] }, scattered = sets.filter { $0.kinds == [.scattered] }
        #expect(regular.count == 32 && scattered.count == 17)
        // The walks only on those an octave apart, the largest and the single page.
        #expect(sets.filter(\.forWalks).count == 1 + 10 + 10)
        // Both kinds reach from about one page per span to hundreds.
        for kind in [regular, scattered] {
            let rhos = kind.map(\.rho)
            #expect(rhos.min()! < 1.5 && rhos.max()! >= 256)
            #expect(Set(rhos.map { Int(log2($0)) }).count >= 8, "every octave or so")
        }
        // Each set is what the look calls it.
        for s in regular + scattered {
            let l = s.pages.bitmap.withUnsafeBufferPointer { MMU.lookAtBitmap($0.baseAddress!, words: $0.count) }
            #expect(l.regular == (s.kinds == [.regular]), "a \(s.kinds) set of \(s.pages.count) pages")
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
        let key = SeriesKey(scenario: "t", paging: "tdp", sptesPerGFN: 1, slotPages: 1000, vmPages: 1000, pattern: "even")
        func row(_ d: Int, _ s: String, _ ns: Double) -> PointRow {
            PointRow(series: key, backend: "model", nUsedMMUPages: 100, dirtyPages: d, strategy: s, seedChoice: "", chose: "",
                     samples: [ns], counters: ProtectCounters(), allocatedBytesInTimedRegion: 0, verified: true, violations: "", cache: "cold")
        }
        // At 50 the rule picks rmap (fastest); at 200 slot-walk (3x slower than rmap).
        let rows = [row(50, "rmap", 10), row(50, "slot-walk", 100), row(200, "rmap", 50), row(200, "slot-walk", 150)]
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
}
