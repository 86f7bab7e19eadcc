import Testing
import ShadowMMU
@testable import BenchKit

@Suite struct WorkloadTests {
    @Test(arguments: [1, 15, 16, 17, 1000, 8192])
    func clusteredPagesComeInAlignedRuns(count: Int) {
        let s = DirtyPattern.clustered.dirtySet(count: count, slotPages: 8192, seed: 2, parameters: PatternParameters(clusterPages: 16))
        #expect(s.count == count)
        var runs: [[UInt32]] = []
        for p in s.pages {
            if let last = runs.last?.last, p == last + 1, p % 16 != 0 { runs[runs.count - 1].append(p) } else { runs.append([p]) }
        }
        #expect(runs.allSatisfy { $0.first! % 16 == 0 }, "runs start on their alignment")
        #expect(runs.filter { $0.count < 16 }.count <= 1, "at most one short run")
    }

    @Test func hotSetFavoursTheSamePagesAtEveryCount() {
        let small = DirtyPattern.hotSet.dirtySet(count: 50, slotPages: 1 << 16, seed: 9)
        let large = DirtyPattern.hotSet.dirtySet(count: 2000, slotPages: 1 << 16, seed: 9)
        #expect(small.count == 50 && large.count == 2000)
        let overlap = Set(small.pages).intersection(large.pages).count
        #expect(overlap >= 40, "the hottest pages are dirty at both counts (\(overlap) of 50)")
        // The working set is scattered 64-page blocks, a sixteenth of the slot at least.
        let blocks = Set(large.pages.map { $0 / 64 })
        #expect(blocks.count <= (1 << 16) / 16 / 64 + 1)
        #expect(DirtyPattern.hotSet.dirtySet(count: 50, slotPages: 1 << 16, seed: 9).pages == small.pages)
        #expect(DirtyPattern.hotSet.dirtySet(count: 1 << 16, slotPages: 1 << 16, seed: 9).count == 1 << 16)
    }

    @Test func onePerTablePutsOnePageInEachTableAtMost() {
        #expect(DirtyPattern.onePerTable.maxCount(slotPages: 8192) == 16)
        let s = DirtyPattern.onePerTable.dirtySet(count: 16, slotPages: 8192, seed: 4)
        #expect(Set(s.pages.map { $0 / 512 }).count == 16)
        let t = DirtyPattern.onePerTable.dirtySet(count: 5, slotPages: 8192, seed: 4)
        #expect(t.count == 5 && Set(t.pages.map { $0 / 512 }).count == 5)
    }

    @Test func migrationRoundsHalveDownToTheWorkingSet() {
        #expect(MigrationPlan(slotPages: 1024, rounds: 6).counts == [1024, 512, 256, 128, 64, 64])
    }

    @Test func theSweepStopsAtWhatThePatternCanDirty() {
        let spec = ModelSeriesSpec(scenario: "t", layout: VMLayout(paging: .tdp, slotPages: 1 << 15), pattern: .onePerTable,
                                   counts: .thresholdSweep(.full), strategies: Strategy.allCases)
        let counts = spec.plannedCounts(nUsed: 67)
        #expect(counts.last == 64 && counts.allSatisfy { $0 <= 64 })
    }
}

@Suite struct SuccessorReportTests {
    func row(_ d: Int, _ s: String, _ ns: Double, chose: String = "") -> PointRow {
        let key = SeriesKey(scenario: "t", paging: "tdp", sptesPerGFN: 1, slotPages: 1 << 16, vmPages: 1 << 16, pattern: "even")
        return PointRow(series: key, backend: "model", nUsedMMUPages: 100, dirtyPages: d, strategy: s, seedChoice: "", chose: chose,
                        samples: [ns], counters: ProtectCounters(), allocatedBytesInTimedRegion: 0, verified: true, violations: "", cache: "cold")
    }

    @Test func bestByRangeIgnoresNearTiesAndRulesPayTheirRegret() {
        var rows: [PointRow] = []
        // masked best at 1-100 (rmap within 3% at 10 must not split the range), slot-walk best at 10000.
        for (d, masked, rmap, walk) in [(1, 10.0, 12.0, 1000.0), (10, 100.0, 97.0, 1000.0), (100, 300.0, 600.0, 1000.0), (10000, 5000.0, 9000.0, 1000.0)] {
            rows += [row(d, "masked", masked), row(d, "rmap", rmap), row(d, "slot-walk", walk),
                     row(d, "seed", 0, chose: d < 100 ? "rmap" : "slot-walk"),
                     row(d, "adaptive", 0, chose: d < 10000 ? "masked" : "rmap")]
        }
        let s = Crossover.successors(rows)!
        #expect(s.bestByRange == "1-100 masked; 10000 slot-walk")
        // adaptive: masked at 10 is 3% behind rmap; at 10000 rmap is 9x the walk.
        #expect(s.adaptive!.maxPct == 800 && s.adaptive!.maxAt == 10000)
        #expect(abs(s.adaptive!.meanPct - (800 + (100.0 / 97 - 1) * 100) / 4) < 1e-9)
        // seed: rmap at 1 (20%), rmap at 10 (0% vs 97), walk at 100 (233%), walk at 10000 (0).
        #expect(abs(s.seed!.maxPct - (1000.0 / 300 - 1) * 100) < 1e-9 && s.seed!.maxAt == 100)
    }

    @Test func theNoiseFloorIsWhatChoosingByHalfTheRepetitionsCosts() {
        func row(_ s: String, _ ns: [Double]) -> PointRow {
            var r = self.row(100, s, 0)
            r.samples = ns
            return r
        }
        // Even repetitions say masked, odd ones rmap: each half's choice is
        // 25% behind the other half's best.
        let split = Crossover.successors([row("masked", [100, 125, 100, 125]), row("rmap", [125, 100, 125, 100])])!
        #expect(split.replicate!.maxPct == 25 && split.replicate!.maxAt == 100)
        // Halves that agree cost nothing.
        let clear = Crossover.successors([row("masked", [100, 101, 99, 100]), row("rmap", [200, 201, 199, 200])])!
        #expect(clear.replicate!.maxPct == 0)
    }

    @Test func aRingPaysForTheHarvestsItsFullRingsForced() {
        // ring's final harvest is cheapest, but the harvests its full rings
        // forced during the writes make its round the dearest.
        var ring = row(100_000, "ring", 10)
        ring.phases = PhaseExtras()
        ring.phases!.ringNsDuringWrites = [5000]
        #expect(ring.roundSummary.median == 5010 && ring.summary.median == 10)
        let rows = [row(100_000, "masked", 3000), row(100_000, "slot-walk", 1000), ring]
        #expect(Crossover.successors(rows)!.bestOverallByRange == "100000 slot-walk")
        let svg = SVGPlot.render(series: ring.series, rows: rows, crossover: nil)
        #expect(svg.contains(">\(Reports.duration(5010))</text>") && !svg.contains(">\(Reports.duration(10))</text>"))
    }
}
