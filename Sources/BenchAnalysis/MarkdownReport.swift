import DirtyLogCore
import Foundation

/// report.md: the run explained for people.
public enum RunReport {
    /// The seed's two claims, answered from one series.
    public struct ClaimAnswers {
        public var lowRatioText: String
        public var nearCriterionText: String
    }

    /// "Write protection became some times faster than before when the ratio
    /// of dirty pages are low": over the points where dirty pages are at most
    /// an eighth of n_used_mmu_pages (or the fewest measured), is rmap at
    /// least twice as fast as slot-walk everywhere?
    ///
    /// "... and was not worse even when the ratio was near the criterion":
    /// over the points from half to twice n_used_mmu_pages, is the seed's
    /// rule (measured as `seed`) never slower than slot-walk, the only
    /// strategy before the patch, by more than 5% with a Mann-Whitney
    /// p-value below 0.01 on their repetitions? (A 5% difference the
    /// repetitions cannot tell from noise is not "worse".)
    public static func claims(series key: SeriesKey, rows: [PointRow]) -> ClaimAnswers? {
        let model = rows.filter { $0.series == key && $0.backend == .model }
        func medians(_ s: Strategy) -> [Int: Double] {
            Dictionary(model.filter { $0.strategy == .model(s) }.map { ($0.dirtyPages, $0.summary.median) }, uniquingKeysWith: { a, _ in a })
        }
        let rmap = medians(.rmap), walk = medians(.slotWalk), seed = medians(.seed)
        guard let nUsed = model.first?.nUsedMMUPages, !rmap.isEmpty, !walk.isEmpty else { return nil }
        let both = rmap.keys.filter { walk[$0] != nil }.sorted()
        guard let fewest = both.first else { return nil }
        var low = both.filter { Double($0) <= Double(nUsed) / 8 }
        if low.isEmpty { low = [fewest] }
        let speedups = low.map { walk[$0]! / rmap[$0]! }
        let minSpeedup = speedups.min()!, maxSpeedup = speedups.max()!
        let holds1 = minSpeedup >= 2
        let lowText = (holds1 ? "**Yes.** " : "**No.** ") + String(
            format: "Over %d points from %d to %d dirty pages (at most n_used_mmu_pages / 8 = %d), rmap is %.1fx to %.1fx as fast as slot-walk.",
            low.count, low.first!, low.last!, nUsed / 8, minSpeedup, maxSpeedup)

        let near = both.filter { Double($0) >= Double(nUsed) / 2 && Double($0) <= Double(nUsed) * 2 && seed[$0] != nil }
        var nearText = "No point was measured between n_used_mmu_pages / 2 and 2 x n_used_mmu_pages."
        if !near.isEmpty {
            func samples(_ s: Strategy, _ d: Int) -> [Double] {
                model.first { $0.strategy == .model(s) && $0.dirtyPages == d }?.samples ?? []
            }
            // A point counts only where its repetitions can reach p < 0.01:
            // with too few, "not worse" could never have come out No.
            let ratios = near.map { d in
                (d: d, r: seed[d]! / walk[d]!, p: MannWhitney.pValue(samples(.seed, d), samples(.slotWalk, d)),
                 testable: MannWhitney.smallestPValue(samples(.seed, d).count, samples(.slotWalk, d).count) < 0.01)
            }
            let tested = ratios.filter(\.testable)
            let worst = ratios.max { $0.r < $1.r }!
            let worse = tested.filter { $0.r > 1.05 && $0.p < 0.01 }
            let untested = ratios.count - tested.count
            let best = near.map { (d: $0, best: min(rmap[$0]!, walk[$0]!), chosen: Strategy.seedChoice(nrDirtyPages: $0, nUsedMMUPages: nUsed) == .rmap ? rmap[$0]! : walk[$0]!) }
            let regret = best.map { $0.chosen / $0.best }.max()!
            let answer = !worse.isEmpty ? "**No.** " : tested.isEmpty ? "**Not tested.** " : "**Yes.** "
            nearText = answer + String(
                format: "Over %d points from %d to %d dirty pages, the seed's rule takes at worst %.2fx slot-walk's time (at %d, Mann-Whitney p = %.3f); ",
                near.count, near.first!, near.last!, worst.r, worst.d, worst.p)
                + (tested.isEmpty ? "no point had the repetitions to reach p < 0.01, so none could show it worse. "
                    : worse.isEmpty ? "no point is slower by more than 5% beyond noise (\(tested.count) tested\(untested > 0 ? ", \(untested) with too few repetitions to test" : "")). "
                    : "\(worse.count) point(s) are slower by more than 5% beyond noise (p < 0.01). ")
                + String(format: "But the faster of the two would have been up to %.1fx quicker than the rule's choice there.", regret)
        }
        return ClaimAnswers(lowRatioText: lowText, nearCriterionText: nearText)
    }

    public static func markdown(results outcome: RunResults, meta: RunMeta, plots: [SeriesKey: String],
                                lifecyclePlots: [LifecycleKey: String] = [:]) -> String {
        let env = meta.environment
        let cal = meta.calibration
        var md = "# Dirty-log write protection: run \(meta.runID)\n\n"
        md += "`\(env.commandLine.joined(separator: " "))` · \(String(format: "%.0f", meta.wallSeconds)) s · "
        if let i = meta.interrupted { md += "**interrupted by \(i.signal) during \(i.during)**: the finished points so far · " }
        md += "\(meta.rowsVerified) of \(meta.rows) rows verified"
        md += meta.violations > 0 ? " (**\(meta.violations) violations**)" : ""
        md += " · \(meta.rowsNoisy) noisy "
        md += "(median absolute deviation above \(Int(meta.noisyMADFraction * 100))% of the median)\n\n"
        md += "## Environment\n\n| | |\n|---|---|\n"
        md += "| CPU | \(env.cpuModel), \(env.cores) cores, last-level cache \(Bytes.format(env.lastLevelCacheBytes)) |\n"
        md += "| memory | \(Bytes.format(env.memoryBytes)) |\n| kernel | \(env.kernel) |\n| Swift | \(env.swiftVersion) |\n"
        md += "| jemalloc | \(env.jemallocVersion), transparent huge pages: \(env.transparentHugePages) |\n"
        md += "| harness | \(env.gitCommit)\(env.gitDirty ? " (with uncommitted changes)" : "") |\n"
        md += "| /dev/kvm | \(env.kvm) |\n"
        md += "| settings | \(meta.repetitions.description), caches \(meta.cache.rawValue), seed \(meta.seed); kernel: \(meta.kvmReps) repetitions, \(Int(meta.kvmBudgetSeconds)) s per series |\n"
        md += "| time | " + RunPhase.allCases.filter { meta.phases[$0] >= 0.05 }.map { String(format: "%@ %.1f s", $0.rawValue, meta.phases[$0]) }.joined(separator: ", ") + " |\n\n"
        md += "## Calibration\n\n"
        md += String(format: "- Sequential read over %@: **%.1f GB/s**\n", Bytes.format(cal.bufferBytes) as NSString, cal.readBandwidthGBps)
        md += String(format: "- A dependent load that misses every cache (pointer chase over a random cycle): **%.0f ns**\n", cal.missLatencyNs)
        md += String(format: "- Two clock reads, inside every measurement: %.0f ns\n\n", cal.timerOverheadNs)
        md += "`gbps` and `bandwidth_fraction` in points.csv set each harvest's bytes against the first; "
        md += "`ns_per_dirty_page` and `miss_latencies_per_dirty_page` set its time per dirty page against the second.\n\n"

        if !outcome.crossover.isEmpty {
            md += "## Crossover\n\nWhere rmap stops beating slot-walk, and what the seed's rule costs against the faster of the two.\n\n"
            md += "The crossover's 90% interval is the bootstrap's: each point's repetitions drawn again 400 times, the crossing found in each.\n\n"
            md += "| series | n_used | crossover (dirty pages) | 90% interval | × n_used | rmap speedup at fewest | slot-walk speedup at most | seed regret max | seed regret mean |\n"
            md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            for r in outcome.crossover {
                md += "| \(r.series.label) | \(r.nUsedMMUPages) | \(r.crossoverDirtyPages.map { String(format: "%.0f", $0) } ?? "none") | "
                md += (r.crossoverLow.flatMap { lo in r.crossoverHigh.map { String(format: "%.0f-%.0f", lo, $0) } } ?? "-") + " | "
                md += "\(r.crossoverPerUsed.map { String(format: "%.1f", $0) } ?? "-") | "
                md += String(format: "%.1fx at %d | %.1fx at %d | %.0f%% at %d | %.0f%% |\n", r.rmapSpeedupAtMin, r.minDirtyPages,
                             r.slotWalkSpeedupAtMax, r.maxDirtyPages, r.seedRegretMaxPct, r.seedRegretMaxAt, r.seedRegretMeanPct)
            }
        }
        let successors = outcome.crossover.filter { $0.successors != nil }
        if !successors.isEmpty {
            md += "\n### The successors and the rules\n\n"
            md += "The best of the KVM_GET_DIRTY_LOG family (slot-walk, rmap, masked, rmap-walk, tdp-walk, tdp-masked) by range of "
            md += "dirty pages, and each rule's regret: its choice's median against the best median at each point (migration: "
            md += "totals). The noise floor is the regret of a rule that knew every point's measurements but from half the "
            md += "repetitions, judged by the other half: what the noise of these medians alone costs, which no rule can be "
            md += "expected to beat. A mean's 90% interval, in brackets, is the bootstrap's: every point's repetitions drawn again 200 "
            md += "times, the medians and the regret found again each time against the strategy best by the point's medians (so it "
            md += "can reach below 0).\n\n"
            md += "| series | best by dirty pages | seed regret max | mean | adaptive regret max | mean | noise floor max | mean |\n"
            md += "|---|---|---:|---:|---:|---:|---:|---:|\n"
            for r in successors {
                let s = r.successors!
                func cells(_ x: RegretStats?) -> String {
                    x.map { s in
                        Reports.regretAt(s) + String(format: " | %.1f%%", s.meanPct)
                            + (s.meanPctLow.flatMap { lo in s.meanPctHigh.map { String(format: " [%.1f-%.1f]", lo, $0) } } ?? "")
                    } ?? "- | -"
                }
                md += "| \(r.series.label) | \(s.bestByRange) | \(cells(s.seed)) | \(cells(s.adaptive)) | \(cells(s.replicate)) |\n"
            }
        }
        let kernel = outcome.crossover.filter { $0.kernel != nil }
        if !kernel.isEmpty {
            md += "\n### The kernel beside the model\n\n"
            md += "| series | guest | kvm-get at fewest | kvm-get at most | \(Strategy.counterpartOfKernelGet.rawValue) / kvm-get at fewest | at most |\n|---|---|---:|---:|---:|---:|\n"
            for r in kernel {
                let k = r.kernel!
                md += "| \(r.series.label) | \(k.guestMode) | \(Reports.duration(k.kvmGetAtMin)) at \(k.minDirtyPages) | "
                md += "\(Reports.duration(k.kvmGetAtMax)) at \(k.maxDirtyPages) | "
                md += "\(k.modelOverKernelAtMin.map { String(format: "%.2fx", $0) } ?? "-") | \(k.modelOverKernelAtMax.map { String(format: "%.2fx", $0) } ?? "-") |\n"
            }
        }
        if !outcome.notes.isEmpty {
            md += "\n" + outcome.notes.map { "- " + $0 }.joined(separator: "\n") + "\n"
        }
        if !outcome.skipped.isEmpty {
            md += "\n### Skipped\n\n" + outcome.skipped.map {
                "- \($0.backend.rawValue) \($0.series)\($0.strategy.isEmpty ? "" : " " + $0.strategy)\($0.dirtyPages.isEmpty ? "" : ", dirty pages " + $0.dirtyPages): \($0.reason)"
            }.joined(separator: "\n") + "\n"
        }

        md += SeriesPrecision.section(SeriesPrecision.of(outcome), policy: meta.repetitions)

        if !outcome.adaptiveFits.isEmpty {
            md += "\n## The adaptive rule\n\n"
            md += "Per harvest, adaptive predicts each candidate's time as `fixed + pages · perPage(ρ)` and takes the cheapest. "
            md += "`pages` is nr_dirty_pages; ρ is the dirty pages per 512-page span (a leaf table's), pages over the bitmap's "
            md += "non-zero 64-byte lines, which mark_page_dirty counts when a span gets its first page: deciding reads no bitmap. "
            md += "`fixed` is what the candidate costs whatever is dirty (scanning the bitmap; walking the list, the rmaps or the "
            md += "tree); `perPage(ρ)` what a dirty page adds, from ρ = 1 (every page its own misses) to 512 (neighbours share "
            md += "lines). Each candidate has these for two kinds of dirty set: regular (evenly spaced, runs: what prefetchers "
            md += "and branch predictors follow) and scattered. When the kinds disagree on the cheapest by more than a look at "
            md += "the bitmap costs, the rule looks (the gaps between dirty pages in four 64-word windows); otherwise it takes "
            md += "the candidate whose worst excess over either kind's best is least. The constants are measured on the series' "
            md += "own VM before its sweep (cold, median of seven or three): one page; a run, pages evenly spaced about 512/ρ "
            md += "apart for ρ at four steps an octave, and the whole slot (regular); half the slot, 1/3 to 1/1024 of it at "
            md += "random by half octaves and 64 pages over it (scattered), since the cost per page has cliffs where the "
            md += "prefetchers stop following; per-page costs are kept at those steps of ρ and read linearly between them. "
            md += "For the walks, whose fixed cost dwarfs what a page adds but in the largest sets, one per-page cost per kind, "
            md += "from the sets an octave apart.\n"
            for fit in outcome.adaptiveFits {
                md += "\n### \(fit.series.label)\n\n"
                md += String(format: "%d sets in %.1f s; a look at the bitmap costs %.0f ns. Per-page costs in ns at ρ dirty pages per span.\n\n",
                             fit.sets, fit.seconds, fit.lookNs)
                md += "| candidate | kind | fixed (ns) | " + fit.shownRho.map { "ρ = \(Int($0))" }.joined(separator: " | ") + " | fit error |\n"
                md += "|---|---|---:|" + fit.shownRho.map { _ in "---:" }.joined(separator: "|") + "|---:|\n"
                for r in fit.rows {
                    md += "| \(r.strategy.rawValue) | \(r.kind) | " + String(format: "%.0f", r.fixedNs) + " | "
                    md += r.perPageNs.map { String(format: "%.1f", $0) }.joined(separator: " | ")
                    md += String(format: " | %.0f%% |\n", r.errorPct)
                }
            }
        }

        md += GuestReport.section(outcome)
        md += LifecycleReport.section(outcome, plots: lifecyclePlots)

        md += "\n## Series\n"
        for key in outcome.seriesKeys {
            md += "\n### \(key.label)\n\n"
            if let file = plots[key] { md += "![\(key.label)](\(file))\n\n" }
            if let c = claims(series: key, rows: outcome.rows) {
                md += "- *Was rmap \"some times faster\" at low dirty ratios?* \(c.lowRatioText)\n"
                md += "- *Was it \"not worse\" near the criterion?* \(c.nearCriterionText)\n"
            }
            md += efficiencyLines(key: key, rows: outcome.rows, calibration: cal)
            let these = outcome.rows.filter { $0.series == key }
            let noisy = these.filter { $0.summary.noisy }.count
            md += "- \(these.count) rows, \(these.filter(\.verified).count) verified, \(noisy) noisy.\n"
            for r in these where !r.verified {
                md += "- **\(r.strategy.name) at \(r.dirtyPages) dirty pages: \(r.violationCount) violation(s)**: \(r.violations.joined(separator: "; "))\n"
            }
        }
        md += "\n## Files\n\n"
        md += "`points.csv` (a row per point and strategy), `samples.csv` (every timed repetition), `crossover.csv` (a row per series), "
        md += "`skipped.csv` (what did not run, and why), `plot-*.svg`, `meta.json`. Every column is described in the repository's results/README.md.\n"
        return md
    }

    /// How close slot-walk and rmap run to the machine's limits in a series:
    /// slot-walk's bandwidth at the most dirty pages, rmap's time per dirty
    /// page at the largest count below the crossover region.
    static func efficiencyLines(key: SeriesKey, rows: [PointRow], calibration cal: MachineCalibration) -> String {
        let model = rows.filter { $0.series == key && $0.backend == .model }
        var out = ""
        if let w = model.filter({ $0.strategy == .model(.slotWalk) }).max(by: { $0.dirtyPages < $1.dirtyPages }),
           let bytes = w.counters?.bytesTouched {
            let gbps = Double(bytes) / w.summary.median
            out += String(format: "- slot-walk at %d dirty pages streams %@ in %@: %.2f GB/s, %.0f%% of the measured sequential bandwidth.\n",
                          w.dirtyPages, Bytes.format(bytes) as NSString, Reports.duration(w.summary.median) as NSString,
                          gbps, 100 * gbps / cal.readBandwidthGBps)
        }
        let rm = model.filter { $0.strategy == .model(.rmap) }
        if let r = rm.filter({ $0.dirtyPages <= max(1, $0.nUsedMMUPages) * 8 }).max(by: { $0.dirtyPages < $1.dirtyPages }) ?? rm.first {
            let per = r.summary.median / Double(r.dirtyPages)
            out += String(format: "- rmap at %d dirty pages takes %.0f ns per dirty page: %.2f times the measured miss latency.\n",
                          r.dirtyPages, per, per / cal.missLatencyNs)
        }
        return out
    }
}
