import DirtyLogCore
import Foundation
import FoundationXML
import Testing
@testable import BenchAnalysis

/// A model row as the analysis sees it.
func modelRow(_ key: SeriesKey, _ s: Strategy, dirty: Int, nUsed: Int, samples: [Double], chose: Strategy? = nil) -> PointRow {
    var r = PointRow(series: key, strategy: .model(s), nUsedMMUPages: nUsed, dirtyPages: dirty, samples: samples,
                     counters: ProtectCounters(), cache: .cold)
    if let c = chose { r.choices = [c: samples.count] }
    return r
}

@Suite struct SignificanceTests {
    @Test func mannWhitneySeesSeparationAndNotSameness() {
        let a = (0..<11).map { 100.0 + Double($0) }
        #expect(MannWhitney.pValue(a, a) > 0.9)
        let b = a.map { $0 + 50 }
        #expect(MannWhitney.pValue(a, b) < 0.001)
        let c = a.map { $0 + 0.5 }  // interleaved with a
        #expect(MannWhitney.pValue(a, c) > 0.5)
        #expect(MannWhitney.pValue([], a) == 1)
    }

    @Test func benjaminiHochbergKeepsOnlyWhatSurvivesTheCount() {
        let p = [0.001, 0.2, 0.012, 0.04, 0.9]
        #expect(FalseDiscovery.significant(p, q: 0.05) == [true, false, true, false, false])
        #expect(FalseDiscovery.significant([0.04] + Array(repeating: 0.5, count: 20), q: 0.05) == Array(repeating: false, count: 21))
    }

    @Test func noisyMeansAWideMedianAbsoluteDeviation() {
        #expect(!SampleSummary([100, 101, 99, 100, 102, 98, 100]).noisy)
        #expect(SampleSummary([100, 130, 70, 100, 140, 60, 100]).noisy)
    }
}

@Suite(.serialized) final class ComparisonTests {
    /// This test's own folder, removed when the test ends.
    let scratch = NSTemporaryDirectory() + "compare-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    /// Writes a run folder holding only a samples.csv.
    func run(_ name: String, _ rows: [(dirty: Int, strategy: String, ns: [Double])]) throws -> String {
        let dir = scratch + "/\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var t = CSVTable(columns: Reports.sampleColumns)
        for r in rows {
            for (i, v) in r.ns.enumerated() {
                t.append(["threshold", "model", "tdp", "1", "1024", "1024", "even", "\(r.dirty)", r.strategy, "\(i)", "\(v)", ""])
            }
        }
        try AtomicFile.write(t.text, to: dir + "/samples.csv")
        return dir
    }

    func reps(_ base: Double, seed: UInt64) -> [Double] {
        // A linear congruential sequence: 11 values within 5% above `base`.
        var x = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<11).map { _ in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return base * (1 + Double((x >> 33) % 1000) / 20000)
        }
    }

    @Test func aSlowerStrategyStandsOutOfAMachineThatGotSlowerOverall() throws {
        var a: [(Int, String, [Double])] = [], b: [(Int, String, [Double])] = []
        for (i, d) in [1, 10, 100, 1000].enumerated() {
            for (j, s) in ["slot-walk", "rmap", "seed"].enumerated() {
                let seed = UInt64(i * 10 + j)
                a.append((d, s, reps(1000 * Double(j + 1), seed: seed)))
                // The whole machine 30% slower in the second run; rmap at 100 twice slower still.
                let extra = (d == 100 && s == "rmap") ? 2.0 : 1.0
                b.append((d, s, reps(1300 * Double(j + 1) * extra, seed: seed + 100)))
            }
        }
        let c = try RunComparison.load(try run("a", a), try run("b", b), q: 0.05)
        #expect(c.rows.count == 12)
        let flagged = c.rows.filter(\.significant)
        #expect(flagged.contains { $0.strategy == "rmap" && $0.key[7] == "100" && $0.relativeChangePct > 50 })
        #expect(c.regressions(strategies: ["rmap"], limitPct: 30).points.count == 1)
        #expect(c.regressions(strategies: ["slot-walk"], limitPct: 30).points.isEmpty, "a uniform slowdown is not a regression")
        #expect(c.regressions(strategies: ["slot-walk"], limitPct: 30).series.isEmpty)
        #expect(c.rows.filter { !($0.strategy == "rmap" && $0.key[7] == "100") }.allSatisfy { abs($0.changePct - 30) < 10 })
        // The per-strategy table: rmap's four points, one of them significantly slower.
        let rmap = c.strategyTable.first { $0[1] == "rmap" }
        #expect(rmap.map { [$0[0], $0[2], $0[5], $0[6]] } == ["threshold 4MiB tdp even", "4", "1", "0"])
        #expect(c.summary().contains("significant points, largest first"))
    }

    /// Series of `points` points, `strategies` strategies each, `reps`
    /// repetitions with noise of about ±`noise` around each strategy's own
    /// cost curve, the machine shifting every repetition by up to ±`drift`
    /// together: what samples.csv holds, keyed as compare reads it.
    static func synthetic(seed: UInt64, series: [String] = ["even", "random"], points: Int = 20, strategies: [String] = ["slot-walk", "rmap", "masked", "rmap-walk", "tdp-walk", "tdp-masked", "ring"],
                          reps: Int = 5, noise: Double = 0.08, drift: Double = 0.2) -> [[String]: [(rep: Int, ns: Double)]] {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func unit() -> Double {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return Double(x >> 11) / Double(1 << 53) * 2 - 1
        }
        var out: [[String]: [(rep: Int, ns: Double)]] = [:]
        for pattern in series {
            for p in 0..<points {
                let d = 1 << p
                let machine = (0..<reps).map { _ in 1 + drift * unit() }
                for (si, s) in strategies.enumerated() {
                    let base = 1000 * Double(si + 1) + Double(d) * Double(si % 3)
                    out[["threshold", "model", "tdp", "1", "1048576", "1048576", pattern, "\(d)", s]] =
                        (0..<reps).map { r in (r, base * machine[r] * (1 + noise * unit())) }
                }
            }
        }
        return out
    }

    /// One strategy's repetitions in one series, times `factor`.
    static func planted(_ run: [[String]: [(rep: Int, ns: Double)]], strategy: String, pattern: String, factor: Double) -> [[String]: [(rep: Int, ns: Double)]] {
        var out = run
        for (k, v) in run where k[8] == strategy && k[6] == pattern { out[k] = v.map { ($0.rep, $0.ns * factor) } }
        return out
    }

    /// The power test: changes planted into a copy of a run (one strategy,
    /// one series) are each flagged at the series level with the right
    /// sign, and nothing else is; an unchanged copy flags nothing, though
    /// per point, with five repetitions each, a 10% change is never
    /// significant.
    @Test(arguments: [1.10, 1.25, 2.0, 0.8])
    func aPlantedChangeIsSeenOverTheSeries(factor: Double) {
        let a = Self.synthetic(seed: 3)
        let c = RunComparison.compare(a, Self.planted(a, strategy: "rmap", pattern: "random", factor: factor), runA: "a", runB: "b", q: 0.05)
        let flagged = c.series.filter(\.significant)
        #expect(flagged.map { "\($0.series) \($0.strategy)" } == ["threshold 4GiB tdp random rmap"], "\(flagged.map { "\($0.series) \($0.strategy) \($0.medianChangePct)" })")
        let v = flagged.first
        #expect(v?.verdict == (factor > 1 ? "slower" : "faster"))
        #expect(abs((v?.medianChangePct ?? 0) - (factor - 1) * 100) < 3, "the median change is the planted one")
        if factor == 1.10 { #expect(c.rows.filter(\.significant).isEmpty, "no single point sees 10%") }
        // --check rmap --max-regression 15 sees 25% and 2x, not 10% or a speedup; in one series of
        // two it lists them without failing.
        #expect(c.regressions(strategies: ["rmap"], limitPct: 15).series.isEmpty == (factor <= 1.10))
        #expect(c.regressions(strategies: ["rmap"], limitPct: 15).failing.isEmpty)
        #expect(c.regressions(strategies: ["masked"], limitPct: 10).series.isEmpty)
    }

    /// A change of the code shows wherever its strategy runs; the machine's
    /// drift in the series measured while it lasted. 25% in both series of
    /// rmap fails the comparison; 25% in one of them is listed only; a
    /// strategy of one series fails on it.
    @Test func aRegressionFailsWhereverItsStrategyRuns() {
        let a = Self.synthetic(seed: 3)
        let both = Self.planted(Self.planted(a, strategy: "rmap", pattern: "random", factor: 1.25), strategy: "rmap", pattern: "even", factor: 1.25)
        let c = RunComparison.compare(a, both, runA: "a", runB: "b", q: 0.05)
        #expect(c.regressions(strategies: ["rmap"], limitPct: 15).failing.count == 2)
        let one = RunComparison.compare(a, Self.planted(a, strategy: "rmap", pattern: "random", factor: 1.25), runA: "a", runB: "b", q: 0.05)
        let r = one.regressions(strategies: ["rmap"], limitPct: 15)
        #expect(r.series.count == 1 && r.failing.isEmpty, "one series of two: listed, not failed")
        let only = Self.synthetic(seed: 3, series: ["even"])
        let single = RunComparison.compare(only, Self.planted(only, strategy: "rmap", pattern: "even", factor: 1.25), runA: "a", runB: "b", q: 0.05)
        #expect(single.regressions(strategies: ["rmap"], limitPct: 15).failing.count == 1, "its only series")
    }

    @Test func anUnchangedCopyAndARerunFlagNothing() {
        let a = Self.synthetic(seed: 3)
        #expect(RunComparison.compare(a, a, runA: "a", runB: "a", q: 0.05).series.allSatisfy { !$0.significant && $0.pValue == 1 })
        let rerun = RunComparison.compare(a, Self.synthetic(seed: 4), runA: "a", runB: "b", q: 0.05)
        #expect(rerun.series.filter(\.significant).isEmpty, "\(rerun.series.filter(\.significant).map { "\($0.series) \($0.strategy)" })")
    }

    @Test func theSignedRankTestIsExact() {
        // All of five differences positive: p = 2/32.
        #expect(abs(SignedRank.pValue([1, 2, 3, 4, 5]) - 0.0625) < 1e-12)
        #expect(SignedRank.pValue([1, -1, 2, -2]) == 1)
        #expect(SignedRank.pValue([0, 0]) == 1)
        // Ten positive of ten: 2/1024.
        #expect(abs(SignedRank.pValue((1...10).map(Double.init)) - 2.0 / 1024) < 1e-12)
    }

    @Test func aFolderWithoutSamplesIsAUsageError() {
        #expect(throws: BenchError.self) { _ = try RunComparison.load("/nonexistent-run", "/nonexistent-run", q: 0.05) }
    }
}

@Suite struct ReportTests {
    func rows() -> [PointRow] {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 4096, vmPages: 4096, pattern: .even)
        var out: [PointRow] = []
        for d in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for (s, ns) in [(Strategy.rmap, 100.0 * Double(d)), (.slotWalk, 3000.0), (.seed, d < 11 ? 100.0 * Double(d) : 3000.0)] {
                var r = modelRow(key, s, dirty: d, nUsed: 11, samples: [ns, ns * 1.01, ns * 0.99], chose: s == .seed ? (d < 11 ? .rmap : .slotWalk) : nil)
                r.counters!.bytesTouched = 8 * d
                out.append(r)
            }
        }
        return out
    }

    @Test func theSVGIsWellFormedAndLabelsWhatItShows() throws {
        let r = rows()
        let svg = SVGPlot.render(series: r[0].series, rows: r, crossover: Crossover.rows(r).first)
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "well-formed XML")
        for text in ["threshold 16MiB tdp even", "rmap", "slot-walk", "seed", "n_used_mmu_pages = 11", "crossover", "dirty pages", "time per harvest", "µs"] {
            #expect(svg.contains(text), "plot lacks \(text)")
        }
    }

    @Test func aSeriesOfOnePointIsDrawnAsBarsFastestFirst() throws {
        let key = SeriesKey(scenario: .migration, paging: .tdp, sptesPerGFN: 1, slotPages: 4096, vmPages: 4096, pattern: .hotSet)
        let rows = [(Strategy.rmap, 3000.0), (.slotWalk, 1000.0), (.masked, 2000.0)].map { s, ns in
            var r = modelRow(key, s, dirty: 9000, nUsed: 11, samples: [ns, ns * 1.01, ns * 0.99])
            r.rounds = 10
            return r
        }
        let svg = SVGPlot.render(series: key, rows: rows, crossover: nil)
        #expect(XMLParser(data: Data(svg.utf8)).parse(), "well-formed XML")
        #expect(svg.contains("10 rounds, 9k dirty pages in all") && !svg.contains("<polyline"))
        let order = ["slot-walk", "masked", "rmap"].map { svg.range(of: ">\($0)</text>")!.lowerBound }
        #expect(order == order.sorted(), "fastest first")
    }

    @Test func aMarkerNearTheRightEdgeIsLabelledOnItsLeft() {
        // rmap at d ns against a 3000 ns walk: the crossover at 3000 of 4096 pages.
        let r = rows().map { row -> PointRow in
            var row = row
            if row.strategy == .model(.rmap) { row.samples = row.samples.map { $0 / 100 } }
            return row
        }
        let svg = SVGPlot.render(series: r[0].series, rows: r, crossover: Crossover.rows(r).first)
        #expect(svg.contains("text-anchor=\"end\">rmap = slot-walk at"))
        #expect(svg.contains("text-anchor=\"start\">n_used_mmu_pages = 11"))
    }

    @Test func theSeedsClaimsAreAnswered() throws {
        let r = rows()
        let c = RunReport.claims(series: r[0].series, rows: r)!
        #expect(c.lowRatioText.hasPrefix("**Yes.**"), "\(c.lowRatioText)")
        #expect(c.lowRatioText.contains("30.0x"))
        // Three repetitions a side can reach p = 0.1 at best: no answer.
        #expect(c.nearCriterionText.hasPrefix("**Not tested.**"), "\(c.nearCriterionText)")
    }

    /// Near n_used_mmu_pages, with repetitions enough to reject it, "not
    /// worse" holds for the seed's rule as timed, and turns to No when the
    /// rule is planted 10% slower than slot-walk there.
    @Test func notWorseNearTheCriterionCanComeOutNo() throws {
        func near(seedFactor: Double) -> [PointRow] {
            rows().map { row in
                var row = row
                let base = row.summary.median
                let factor = row.strategy == .model(.seed) && row.dirtyPages >= 8 && row.dirtyPages <= 16 ? seedFactor : 1
                row.samples = (0..<6).map { base * factor * (1 + 0.002 * Double($0)) }
                return row
            }
        }
        let fair = RunReport.claims(series: rows()[0].series, rows: near(seedFactor: 1))!
        #expect(fair.nearCriterionText.hasPrefix("**Yes.**"), "\(fair.nearCriterionText)")
        let slow = RunReport.claims(series: rows()[0].series, rows: near(seedFactor: 1.10))!
        #expect(slow.nearCriterionText.hasPrefix("**No.**"), "\(slow.nearCriterionText)")
    }

    @Test func theSmallestPValueOfASampleSizeIsExact() {
        #expect(abs(MannWhitney.smallestPValue(5, 5) - 2.0 / 252) < 1e-12)
        #expect(abs(MannWhitney.smallestPValue(2, 2) - 2.0 / 6) < 1e-12)
        #expect(MannWhitney.smallestPValue(1, 1) == 1)
        #expect(MannWhitney.smallestPValue(2, 5) > 0.01 && MannWhitney.smallestPValue(6, 6) < 0.01)
        // A sample against itself shifted by less than its spread: no difference.
        #expect(MannWhitney.pValue([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]) > 0.5)
    }

    @Test func pointsCarryEfficiencyAgainstTheCalibration() {
        let cal = MachineCalibration(readBandwidthGBps: 10, missLatencyNs: 100, timerOverheadNs: 20, bufferBytes: 1 << 20)
        let t = Reports.pointsTable(rows(), calibration: cal)
        let r = t.records.first { $0["strategy"] == "rmap" && $0["dirty_pages"] == "4096" }!
        #expect(r["ns_per_dirty_page"] == "100.00")
        #expect(r["miss_latencies_per_dirty_page"] == "1.000")
        #expect(r["gbps"] == "0.080")
        #expect(r["bandwidth_fraction"] == "0.008")
        #expect(r["noisy"] == "false")
    }
}

@Suite struct SuccessorReportTests {
    func row(_ d: Int, _ s: Strategy, _ ns: Double, chose: Strategy? = nil) -> PointRow {
        let key = SeriesKey(scenario: .threshold, paging: .tdp, sptesPerGFN: 1, slotPages: 1 << 16, vmPages: 1 << 16, pattern: .even)
        return modelRow(key, s, dirty: d, nUsed: 100, samples: [ns], chose: chose)
    }

    @Test func bestByRangeIgnoresNearTiesAndRulesPayTheirRegret() {
        var rows: [PointRow] = []
        // masked best at 1-100 (rmap within 3% at 10 must not split the range), slot-walk best at 10000.
        for (d, masked, rmap, walk) in [(1, 10.0, 12.0, 1000.0), (10, 100.0, 97.0, 1000.0), (100, 300.0, 600.0, 1000.0), (10000, 5000.0, 9000.0, 1000.0)] {
            rows += [row(d, .masked, masked), row(d, .rmap, rmap), row(d, .slotWalk, walk),
                     row(d, .seed, 0, chose: d < 100 ? .rmap : .slotWalk),
                     row(d, .adaptive, 0, chose: d < 10000 ? .masked : .rmap)]
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
        func row(_ s: Strategy, _ ns: [Double]) -> PointRow {
            var r = self.row(100, s, 0)
            r.samples = ns
            return r
        }
        // Even repetitions say masked, odd ones rmap: each half's choice is
        // 25% behind the other half's best.
        let split = Crossover.successors([row(.masked, [100, 125, 100, 125]), row(.rmap, [125, 100, 125, 100])])!
        #expect(split.replicate!.maxPct == 25 && split.replicate!.maxAt == 100)
        // Halves that agree cost nothing.
        let clear = Crossover.successors([row(.masked, [100, 101, 99, 100]), row(.rmap, [200, 201, 199, 200])])!
        #expect(clear.replicate!.maxPct == 0)
    }

    @Test func aRingPaysForTheHarvestsItsFullRingsForced() {
        // ring's final harvest is cheapest, but the harvests its full rings
        // forced during the writes make its round the dearest.
        var ring = row(100_000, .ring, 10)
        ring.phases = PhaseExtras()
        ring.phases!.ringNsDuringWrites = [5000]
        #expect(ring.roundSummary.median == 5010 && ring.summary.median == 10)
        let rows = [row(100_000, .masked, 3000), row(100_000, .slotWalk, 1000), ring]
        #expect(Crossover.successors(rows)!.bestOverallByRange == "100000 slot-walk")
        let svg = SVGPlot.render(series: ring.series, rows: rows, crossover: nil)
        #expect(svg.contains(">\(Reports.duration(5010))</text>") && !svg.contains(">\(Reports.duration(10))</text>"))
    }
}

/// The concurrent scenario's plot and report section.
@Suite struct GuestReportTests {
    /// One shadow layout: locked faults for the seed's three and masked,
    /// fast faults for masked only (the seed's era had none), at two
    /// counts; rmap raced twice at the fewest pages.
    func rows() -> [PointRow] {
        var out: [PointRow] = []
        for path in FaultPath.allCases {
            let key = SeriesKey(scenario: .concurrent, paging: .tdp, sptesPerGFN: 1, slotPages: 1 << 18, vmPages: 1 << 18,
                                pattern: .even, faultPath: path)
            let strategies: [(Strategy, Double, Double)] = path == .fast ? [(.masked, 20_000, 15_000)]
                : [(.slotWalk, 600_000, 598_000), (.rmap, 50, 120), (.rmapFixed, 30, 29), (.masked, 20_000, 15_000)]
            for d in [16, 8192] {
                for (s, unit, hold) in strategies {
                    let harvest = s == .rmap || s == .rmapFixed ? unit * Double(d) : unit
                    var r = PointRow(series: key, strategy: .model(s), nUsedMMUPages: 515, dirtyPages: d, samples: [harvest, harvest * 1.01, harvest * 0.99],
                                     cache: .warm)
                    var g = GuestExtras(vcpus: 1, pinned: true)
                    let holdNs = s == .rmapFixed ? hold * Double(d) : hold
                    g.exclusiveHolds.count = 3 * (s == .rmap ? d : 1)
                    g.exclusiveHolds.maxNs = holdNs
                    g.exclusiveHolds.totalNs = holdNs * Double(g.exclusiveHolds.count)
                    g.instrumentedReps = 3
                    g.instrumentedHarvestNs = harvest * (s == .rmap ? 1.8 : 1.05)
                    g.faultCount = 10
                    g.fastFaults = path == .fast ? 10 : 0
                    g.faultP50Ns = path == .fast ? 640 : holdNs / 2
                    g.faultP99Ns = path == .fast ? 900 : holdNs
                    g.faultMaxNs = path == .fast ? 2000 : holdNs * 1.1
                    g.relogNs = path == .fast ? 50_000 : 400_000
                    g.raceViolations = s == .rmap && d == 16 ? 2 : 0
                    r.guest = g
                    out.append(r)
                }
            }
        }
        return out
    }

    func results(_ rows: [PointRow], pollution: [PollutionRow] = []) -> RunResults {
        var r = RunResults(calibration: MachineCalibration(readBandwidthGBps: 10, missLatencyNs: 100, timerOverheadNs: 20, bufferBytes: 1 << 27))
        r.add(rows: rows, pollution: pollution)
        r.exitCosts = ExitCosts(exitNs: 555, ipiNs: 1140, exitSource: "a published exit", ipiSource: "a published IPI",
                                hostExitNs: 2500, hostExitNote: "a cpuid loop")
        return r
    }

    /// Twelve pairs from 7 to 11 us: the 95% interval (3rd to 10th) wholly above zero.
    static let clearExcess: [Double] = (0..<12).map { 7_000 + Double($0) * 4_000 / 11 }

    func pollution(over: [Double], verdicts: Int = 1) -> [PollutionRow] {
        let key = SeriesKey(scenario: .concurrent, paging: .tdp, sptesPerGFN: 1, slotPages: 1 << 18, vmPages: 1 << 18, pattern: .even, faultPath: .locked)
        var walk = PollutionRow(series: key, strategy: .slotWalk, guestCPU: .same, workingSetBytes: 512 << 10, dirtyPages: 16, pairs: 9,
                                harvestNs: 500_000, rereadAfterHarvestNs: 90_000, rereadAfterIdleNs: 80_000,
                                excess: MedianInterval(median: 10_000, low: 8_000, high: 12_000), nsPerLine: 50)
        walk.overRmapSamples = over
        walk.stop = .target
        let rmap = PollutionRow(series: key, strategy: .rmap, guestCPU: .same, workingSetBytes: 512 << 10, dirtyPages: 16, pairs: 9,
                                harvestNs: 5_000, rereadAfterHarvestNs: 81_000, rereadAfterIdleNs: 80_000,
                                excess: MedianInterval(median: 1_000, low: -500, high: 2_000), nsPerLine: 50)
        // The rest of the run's verdicts: other working sets, each a slot-walk row of its own.
        let others = (1..<verdicts).map { i in
            var r = walk
            r.workingSetBytes = (512 << 10) * (i + 1)
            r.overRmapSamples = (0..<12).map { Double($0 - 6) }
            return r
        }
        return [walk, rmap] + others
    }

    @Test func thePlotHasAPanelPerQuestionAndALinePerStrategyInEach() {
        let r = rows()
        let svg = SVGPlot.render(series: r[0].series, rows: r.filter { $0.series == r[0].series }, crossover: nil)
        for title in ["harvest time, vCPUs running", "longest mmu_lock hold", "vCPU write-fault p99"] { #expect(svg.contains(title)) }
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4 * 3, "four strategies in three panels")
        #expect(svg.contains(">rmap-fixed</text>"))
    }

    @Test func theSectionAnswersWithTheRunsNumbers() {
        let md = GuestReport.section(results(rows(), pollution: pollution(over: Self.clearExcess)))
        #expect(md.contains("## What the guest pays"))
        #expect(md.contains("555ns for the exit and entry together (a published exit)"))
        #expect(md.contains("This host's KVM, measured: 2.5us per exit (a cpuid loop)"))
        #expect(md.contains("| rmap | 3.3-3.5 | 16 | 3 | 800ns | 1.4us | 48 | 120ns |"), "rmap's row at 16 pages: era, reps, harvest, instrumented, holds, longest")
        #expect(md.contains("rmap held mmu_lock 16 times a harvest, the longest 120ns, against slot-walk's one hold of 598.0us"))
        #expect(md.contains("rmap: 2 such writes at 1 point(s)") == false, "tdp: no shadowing, no race paragraph")
        #expect(md.contains("rmap at 8192 dirty pages: 409.6us plain, 737.3us with its 8192 holds recorded (1.80x)"))
        #expect(md.contains("masked at 8192 dirty pages: fault p50 7.5us locked, 640ns fast (10 of 10 faults fixed without the lock)"))
        #expect(!md.contains("slot-walk at 8192 dirty pages: fault p50"), "no fast path at 3.3")
        #expect(md.contains("| same | 512KiB | 10.0us [8.0us, 12.0us] (200 lines [160, 240]) |"))
        #expect(md.contains("**more, beyond the interval**"))
        #expect(GuestReport.section(results(rows().map { var r = $0; r.guest = nil; return r })).isEmpty)
    }

    /// slot-walk's excess over rmap whose interval holds zero is no
    /// difference, however large its median.
    @Test func anIntervalThatHoldsZeroIsNoDifference() {
        let md = GuestReport.section(results(rows(), pollution: pollution(over: [-20_000, -15_000, -10_000, -5_000, -1_000,
                                                                                          8_000, 9_000, 10_000, 11_000, 12_000, 15_000, 20_000])))
        #expect(md.contains("no difference beyond the interval"))
        #expect(!md.contains("**more, beyond the interval**"))
    }

    @Test func pollutionCSVHasTheIntervalsAndTheVerdict() {
        let t = Reports.pollutionTable(pollution(over: Self.clearExcess))
        let r = t.records
        #expect(r.count == 2 && r[0]["guest_cpu"] == "same" && r[0]["over_rmap_verdict"] == "more")
        #expect(r[0]["excess_ci_low_ns"] == "8000.0" && r[0]["excess_lines"] == "200.0" && r[1]["over_rmap_ns"] == "")
        #expect(r[0]["pairs_stop"] == "ci95<=3us" && r[0]["verdict_confidence"] == "0.9500")
    }

    /// Sixteen verdicts read at 95% each would give one "more" or "less"
    /// by chance in most runs: each is read at 1 - 0.05/16. A difference
    /// of 12 pairs whose 95% interval (the 3rd to the 10th) is above zero
    /// but whose 99.69% interval (the 1st to the 12th) holds it is "more"
    /// alone and "within noise" among sixteen.
    @Test func verdictsAreCorrectedForTheirNumber() throws {
        let justAbove: [Double] = [-4_000, 100, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000, 11_000, 12_000, 13_000, 14_000]
        let alone = pollution(over: justAbove)
        #expect(try #require(alone[0].overRmap).sign == 1, "the 95% interval is above zero")
        #expect(Reports.pollutionTable(alone).records[0]["over_rmap_verdict"] == "more")
        let among = pollution(over: justAbove, verdicts: 16)
        let csv = Reports.pollutionTable(among).records
        #expect(csv[0]["over_rmap_verdict"] == "within noise" && csv[0]["verdict_confidence"] == "0.9969")
        #expect(GuestReport.pollution(among).contains("99.69% interval, so that its 16 verdicts together"))
        #expect(!GuestReport.pollution(among).contains("**more, beyond the interval**"))
    }
}

/// A migration total adds rounds whose choices differ: the rule's own total is its cost.
@Suite struct MigrationRegretTests {
    @Test func aRulesMigrationTotalIsJudgedByItselfNotByItsMostFrequentChoice() throws {
        let key = SeriesKey(scenario: .migration, paging: .shadow, sptesPerGFN: 2, slotPages: 1 << 18, vmPages: 1 << 18, pattern: .hotSet)
        func row(_ s: Strategy, _ ms: Double, choices: [Strategy: Int] = [:]) -> PointRow {
            var r = PointRow(series: key, strategy: .model(s), nUsedMMUPages: 1030, dirtyPages: 500_000, samples: [ms * 1e6, ms * 1e6], cache: .cold)
            r.rounds = 10
            r.choices = choices
            return r
        }
        let rows = [row(.slotWalk, 13.8), row(.masked, 27.7), row(.rmap, 71), row(.adaptive, 12.6, choices: [.masked: 12, .slotWalk: 8])]
        let s = try #require(Crossover.rows(rows).first?.successors)
        #expect(try #require(s.adaptive).maxPct < 0, "adaptive's total beat the best single strategy's")
    }
}

/// The terminal summary's notes: whole items only.
@Suite struct TerminalNoteTests {
    @Test func aLongNoteKeepsWholeItemsAndSaysSo() {
        let note = "kvm-get 18.6us-166.9us, model 0.41-0.93x, fault p99 tdp-walk 97.1us"
        #expect(Reports.fitNote(note, width: 200) == note)
        let cut = Reports.fitNote(note, width: 40)
        #expect(cut == "kvm-get 18.6us-166.9us, model 0.41-0.93x …" || cut == "kvm-get 18.6us-166.9us …", "\(cut)")
        #expect(cut.count <= 40)
        #expect(Reports.fitNote(note, width: 10) == "…", "not even the first item fits")
        for w in stride(from: 1, through: 80, by: 3) {
            let f = Reports.fitNote(note, width: w)
            let items = f.replacingOccurrences(of: " …", with: "").components(separatedBy: ", ").filter { $0 != "…" && !$0.isEmpty }
            #expect(items.allSatisfy { note.components(separatedBy: ", ").contains($0) }, "\(w): \(f)")
        }
    }
}

/// A concurrent row's era says when no kernel of it ran what was measured.
@Suite struct EraLabelTests {
    @Test func lockedFaultsUnderAnEraWithTheFastPathAreAnAblation() {
        func label(_ s: Strategy, _ paging: PagingMode, _ path: FaultPath) -> String {
            let key = SeriesKey(scenario: .concurrent, paging: paging, sptesPerGFN: paging == .tdp ? 1 : 2, slotPages: 1 << 18,
                                vmPages: 1 << 18, pattern: .even, faultPath: path)
            return modelRow(key, s, dirty: 16, nUsed: 515, samples: [1]).eraLabel
        }
        #expect(label(.masked, .tdp, .locked) == "4.2-5.11 ablation: fast path off")
        #expect(label(.tdpMasked, .tdp, .locked) == "5.14+ ablation: fast path off")
        #expect(label(.masked, .tdp, .fast) == "4.2-5.11")
        #expect(label(.rmap, .tdp, .locked) == "3.3-3.5", "3.3 had no fast path: locked faults are its own")
        #expect(label(.masked, .shadow, .locked) == "4.2-5.11", "indirect sptes never take the fast path")
    }
}

/// kernel-lab.md: a section per lifecycle, each holding that lifecycle's
/// rows alone, in the order the rows came.
@Suite struct KernelLabDocumentTests {
    static func row(_ mode: String, _ phase: LifecyclePhase, _ iteration: Int? = nil) -> KernelLabRow {
        KernelLabRow(paging: "tdp", slotPages: 16384, backing: .page2M, mode: mode, phase: phase, iteration: iteration,
                     enablePolicy: .splitOnClear, disablePolicy: .zap, era: .linux5_14on, kernelLeaves: [0, 32, 0], modelLeaves: [0, 32, 0],
                     kernelFlushes: 0, modelFlushes: 0, kernelZapped: nil, modelFreed: 0)
    }

    @Test func eachLifecycleHasItsOwnSectionWithItsRowsAlone() {
        // Two lifecycles that differ only in their mode, their rows interleaved.
        let rows = [Self.row("kvm-get", .populate), Self.row("kvm-get+clear", .populate), Self.row("kvm-get+clear", .clear, 1),
                    Self.row("kvm-get", .get, 1)]
        let md = Reports.kernelLabDocument(rows: rows, kernelPoints: 2, kernelPointsVerified: 2, fewestKernelSptes: 1026, sideBySide: [])
        let sections = md.components(separatedBy: "\n## ").dropFirst()
        #expect(sections.map { String($0.prefix { $0 != "\n" }) } == ["tdp 64MiB 2m kvm-get", "tdp 64MiB 2m kvm-get+clear"])
        let tableRows = sections.map { $0.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| phase") }.map { String($0.prefix(9)) } }
        #expect(tableRows == [["| populat", "| get 1 |"], ["| populat", "| clear 1"]])
        #expect(md.contains("Kernel threshold points: 2 of 2 verified"))
        #expect(md.contains("at least 1026 4 KiB sptes"))
    }
}
