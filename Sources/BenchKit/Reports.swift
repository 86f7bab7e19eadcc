import Foundation
import ShadowMMU

/// points.csv and crossover.csv: their columns, in order, and their rows.
public enum Reports {
    public static let pointColumns = [
        "scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "n_used_mmu_pages",
        "pattern", "cache", "dirty_pages", "dirty_per_used", "strategy", "seed_choice", "chose",
        "rounds", "reps", "median_ns", "p10_ns", "p90_ns", "mad_ns", "cv", "noisy",
        "shadow_pages_visited", "sptes_scanned", "sptes_protected", "large_sptes_dropped",
        "rmap_entries_visited", "lock_acquisitions", "tlb_flushes",
        "bytes_touched", "gbps", "bandwidth_fraction", "ns_per_dirty_page", "miss_latencies_per_dirty_page",
        "allocs_in_timed_region", "verified", "violations",
        "guest_mode", "get_ns", "clear_ns", "ring_full_exits", "ring_harvests_during_writes", "ring_ns_during_writes",
        "kernel_sptes_4k", "kernel_emulated_insns_per_write",
    ]

    public static let crossoverColumns = [
        "scenario", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "n_used_mmu_pages",
        "crossover_dirty_pages", "crossover_per_used", "crossover_note", "min_dirty_pages", "max_dirty_pages",
        "rmap_speedup_at_min", "slot_walk_speedup_at_max",
        "seed_regret_max_pct", "seed_regret_max_at", "seed_regret_mean_pct",
        "best_by_range", "best_overall_by_range", "seed_regret_vs_best_max_pct", "seed_regret_vs_best_mean_pct",
        "adaptive_regret_max_pct", "adaptive_regret_max_at", "adaptive_regret_mean_pct", "adaptive_measured_regret_max_pct",
        "adaptive_measured_regret_mean_pct", "replicate_regret_max_pct", "replicate_regret_max_at", "replicate_regret_mean_pct",
        "kvm_guest_mode", "kvm_min_dirty_pages", "kvm_get_ns_at_min", "kvm_max_dirty_pages", "kvm_get_ns_at_max",
        "model_vs_kvm_strategy", "model_over_kvm_at_min", "model_over_kvm_at_max",
    ]

    public static func pointsTable(_ rows: [PointRow], calibration: Calibration?) -> CSVTable {
        var t = CSVTable(columns: pointColumns)
        for r in rows {
            let s = r.summary
            let c = r.counters
            let k = r.kernel
            let ph = r.phases
            func count(_ f: (ProtectCounters) -> Int) -> String { c.map { "\(f($0))" } ?? "" }
            t.append([
                r.series.scenario, r.backend, r.series.paging, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)",
                "\(r.series.vmPages)", "\(r.nUsedMMUPages)", r.series.pattern, r.cache, "\(r.dirtyPages)",
                fmt(r.dirtyPerUsed, 6), r.strategy, r.seedChoice, r.chose,
                "\(r.rounds)", "\(s.count)", fmt(s.median, 1), fmt(s.p10, 1), fmt(s.p90, 1), fmt(s.mad, 1), fmt(s.cv, 4),
                s.noisy ? "true" : "false",
                count(\.shadowPagesVisited), count(\.sptesScanned), count(\.sptesProtected), count(\.largeSptesDropped),
                count(\.rmapEntriesVisited), count(\.lockAcquisitions), count(\.tlbFlushes),
                count(\.bytesTouched),
                c.map { fmt(Double($0.bytesTouched) / s.median, 3) } ?? "",
                c.flatMap { c in calibration.map { fmt(Double(c.bytesTouched) / s.median / $0.readBandwidthGBps, 3) } } ?? "",
                fmt(s.median / Double(max(1, r.dirtyPages)), 2),
                calibration.map { fmt(s.median / Double(max(1, r.dirtyPages)) / $0.missLatencyNs, 3) } ?? "",
                "\(r.allocatedBytesInTimedRegion)", r.verified ? "true" : "false", r.violations,
                k?.guestMode ?? "",
                ph.flatMap { $0.getNs.isEmpty ? nil : fmt(Statistics.median($0.getNs), 1) } ?? "",
                ph.flatMap { $0.clearNs.isEmpty ? nil : fmt(Statistics.median($0.clearNs), 1) } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : "\($0.ringFullExits)" } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : "\($0.ringHarvestsDuringWrites)" } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : fmt(Statistics.median($0.ringNsDuringWrites), 1) } ?? "",
                k.map { "\($0.sptes4k)" } ?? "", k.map { fmt($0.emulatedInstructionsPerWrite, 2) } ?? "",
            ])
        }
        return t
    }

    public static let sampleColumns = [
        "scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "dirty_pages",
        "strategy", "rep", "ns",
    ]

    /// Every timed repetition, in run order per point and strategy.
    public static func samplesTable(_ rows: [PointRow]) -> CSVTable {
        var t = CSVTable(columns: sampleColumns)
        for r in rows {
            let k = r.series
            for (i, ns) in r.samples.enumerated() {
                t.append([k.scenario, r.backend, k.paging, "\(k.sptesPerGFN)", "\(k.slotPages)", "\(k.vmPages)", k.pattern,
                          "\(r.dirtyPages)", r.strategy, "\(i)", fmt(ns, 0)])
            }
        }
        return t
    }

    public static let skippedColumns = ["series", "backend", "strategy", "dirty_pages", "reason"]

    public static func skippedTable(_ notes: [SkipNote]) -> CSVTable {
        var t = CSVTable(columns: skippedColumns)
        for n in notes { t.append([n.series, n.backend, n.strategy, n.dirtyPages, n.reason]) }
        return t
    }

    public static func crossoverTable(_ rows: [CrossoverRow]) -> CSVTable {
        var t = CSVTable(columns: crossoverColumns)
        for r in rows {
            t.append([
                r.series.scenario, r.series.paging, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)",
                "\(r.series.vmPages)", r.series.pattern, "\(r.nUsedMMUPages)",
                r.crossoverDirtyPages.map { fmt($0, 1) } ?? "", r.crossoverPerUsed.map { fmt($0, 3) } ?? "", r.note,
                "\(r.minDirtyPages)", "\(r.maxDirtyPages)",
                fmt(r.rmapSpeedupAtMin, 3), fmt(r.slotWalkSpeedupAtMax, 3),
                fmt(r.seedRegretMaxPct, 1), "\(r.seedRegretMaxAt)", fmt(r.seedRegretMeanPct, 1),
                r.successors?.bestByRange ?? "", r.successors?.bestOverallByRange ?? "",
                r.successors?.seed.map { fmt($0.maxPct, 1) } ?? "", r.successors?.seed.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.adaptive.map { fmt($0.maxPct, 1) } ?? "", r.successors?.adaptive.map { "\($0.maxAt)" } ?? "",
                r.successors?.adaptive.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.adaptiveMeasured.map { fmt($0.maxPct, 1) } ?? "", r.successors?.adaptiveMeasured.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.replicate.map { fmt($0.maxPct, 1) } ?? "", r.successors?.replicate.map { "\($0.maxAt)" } ?? "",
                r.successors?.replicate.map { fmt($0.meanPct, 1) } ?? "",
                r.kernel?.guestMode ?? "", r.kernel.map { "\($0.minDirtyPages)" } ?? "",
                r.kernel.map { fmt($0.kvmGetAtMin, 1) } ?? "", r.kernel.map { "\($0.maxDirtyPages)" } ?? "",
                r.kernel.map { fmt($0.kvmGetAtMax, 1) } ?? "", r.kernel?.modelStrategy ?? "",
                r.kernel?.modelOverKernelAtMin.map { fmt($0, 3) } ?? "", r.kernel?.modelOverKernelAtMax.map { fmt($0, 3) } ?? "",
            ])
        }
        return t
    }

    /// The terminal summary: one line per series (empty without model series).
    public static func summary(_ rows: [CrossoverRow]) -> String {
        guard !rows.isEmpty else { return "" }
        let header = ["series", "n_used", "crossover", "×n_used", "rmap speedup@min", "slot-walk speedup@max", "seed regret max"]
        var table: [[String]] = [header]
        for r in rows {
            table.append([
                r.series.label, "\(r.nUsedMMUPages)",
                r.crossoverDirtyPages.map { String(format: "%.0f", $0) } ?? "none",
                r.crossoverPerUsed.map { String(format: "%.1f", $0) } ?? "-",
                String(format: "%.1fx at %d", r.rmapSpeedupAtMin, r.minDirtyPages),
                String(format: "%.1fx at %d", r.slotWalkSpeedupAtMax, r.maxDirtyPages),
                String(format: "%.0f%% at %d", r.seedRegretMaxPct, r.seedRegretMaxAt),
            ])
        }
        return layout(table)
    }

    /// The successors, one line per series: the best of the KVM_GET_DIRTY_LOG
    /// family by range, and what the seed's rule and adaptive cost against it.
    public static func successorSummary(_ rows: [CrossoverRow]) -> String {
        let with = rows.filter { $0.successors != nil }
        guard !with.isEmpty else { return "" }
        var table = [["series", "best (KVM_GET_DIRTY_LOG family) by dirty pages", "seed regret max", "adaptive regret max", "mean",
                      "noise floor max", "mean"]]
        for r in with {
            let s = r.successors!
            table.append([r.series.label, s.bestByRange, s.seed.map(regretAt) ?? "-", s.adaptive.map(regretAt) ?? "-",
                          s.adaptive.map { String(format: "%.1f%%", $0.meanPct) } ?? "-",
                          s.replicate.map(regretAt) ?? "-", s.replicate.map { String(format: "%.1f%%", $0.meanPct) } ?? "-"])
        }
        return layout(table)
    }

    /// "94% at 16384"
    static func regretAt(_ r: RegretStats) -> String { String(format: "%.0f%% at %d", r.maxPct, r.maxAt) }

    /// The kernel next to the model, one line per kernel series: kvm-get at
    /// the fewest and most dirty pages it measured, and the model's
    /// counterpart over it there.
    public static func kernelSummary(_ rows: [CrossoverRow]) -> String {
        let withKernel = rows.filter { $0.kernel != nil }
        guard !withKernel.isEmpty else { return "" }
        var table = [["series (kernel beside model)", "guest", "kvm-get@min", "kvm-get@max",
                      "\(Crossover.modelCounterpartOfKernel.rawValue)/kvm-get@min", "@max"]]
        for r in withKernel {
            let k = r.kernel!
            table.append([r.series.label, k.guestMode,
                          "\(duration(k.kvmGetAtMin)) at \(k.minDirtyPages)", "\(duration(k.kvmGetAtMax)) at \(k.maxDirtyPages)",
                          k.modelOverKernelAtMin.map { String(format: "%.2fx", $0) } ?? "-",
                          k.modelOverKernelAtMax.map { String(format: "%.2fx", $0) } ?? "-"])
        }
        return layout(table)
    }

    /// dirty-log-perf's question, per dirty count: the kernel's harvest times
    /// and the model's, side by side, for every series of `scenario`.
    public static func sideBySide(_ rows: [PointRow], scenario: String) -> String {
        var out: [String] = []
        let keys = Set(rows.filter { $0.series.scenario == scenario }.map(\.series)).sorted()
        for key in keys {
            let these = rows.filter { $0.series == key }
            var byCount: [Int: [String: Double]] = [:]
            for r in these { byCount[r.dirtyPages, default: [:]][r.backend + ":" + r.strategy] = r.roundSummary.median }
            let columns = ["kvm:kvm-get", "kvm:kvm-get+clear", "kvm:kvm-ring"]
                + Strategy.allCases.map { "model:" + $0.rawValue }
            let present = columns.filter { c in these.contains { $0.backend + ":" + $0.strategy == c } }
            var table = [["dirty pages"] + present.map { String($0.split(separator: ":")[1]) }
                + ["\(Crossover.modelCounterpartOfKernel.rawValue)/kvm-get"]]
            for d in byCount.keys.sorted() {
                let m = byCount[d]!
                let ratio = m["model:" + Crossover.modelCounterpartOfKernel.rawValue].flatMap { a in m["kvm:kvm-get"].map { a / $0 } }
                table.append(["\(d)"] + present.map { m[$0].map(duration) ?? "-" } + [ratio.map { String(format: "%.2fx", $0) } ?? "-"])
            }
            out.append("\(key.label): median per harvest (kvm = the real kernel, model = this model; rings with the harvests full rings forced)\n" + layout(table))
        }
        return out.joined(separator: "\n\n")
    }

    /// "812ns", "12.3us", "4.56ms", "1.23s".
    public static func duration(_ ns: Double) -> String {
        ns < 1e3 ? String(format: "%.0fns", ns) : ns < 1e6 ? String(format: "%.1fus", ns / 1e3)
            : ns < 1e9 ? String(format: "%.2fms", ns / 1e6) : String(format: "%.2fs", ns / 1e9)
    }

    /// Columns padded to their widest cell, the first left-aligned, a rule under the header.
    static func layout(_ table: [[String]]) -> String {
        let widths = table[0].indices.map { c in table.map { $0[c].count }.max() ?? 0 }
        var lines: [String] = []
        for (i, row) in table.enumerated() {
            lines.append(row.enumerated().map { c, v in
                c == 0 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - v.count) + v
            }.joined(separator: "  "))
            if i == 0 { lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        return lines.joined(separator: "\n")
    }

    static func fmt(_ v: Double, _ decimals: Int) -> String {
        v.isFinite ? String(format: "%.\(decimals)f", v) : ""
    }
}
