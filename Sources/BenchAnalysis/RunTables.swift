import DirtyLogCore
import Foundation

/// The CSV files of a run: points.csv, samples.csv, skipped.csv and
/// crossover.csv, their columns in order and their rows; and the formats
/// every report shares.
public enum Reports {
    public static let pointColumns = [
        "scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "n_used_mmu_pages",
        "pattern", "cache", "dirty_pages", "dirty_per_used", "strategy", "seed_choice", "chose",
        "rounds", "reps", "reps_stop", "median_ns", "median_ci_low_ns", "median_ci_high_ns", "median_ci_level", "p10_ns", "p90_ns", "mad_ns", "cv", "noisy",
        "shadow_pages_visited", "sptes_scanned", "sptes_protected", "large_sptes_dropped",
        "rmap_entries_visited", "lock_acquisitions", "tlb_flushes",
        "bytes_touched", "gbps", "bandwidth_fraction", "ns_per_dirty_page", "miss_latencies_per_dirty_page",
        "allocs_in_timed_region", "verified", "violation_count", "violations",
        "guest_mode", "get_ns", "clear_ns", "ring_full_exits", "ring_harvests_during_writes", "ring_ns_during_writes",
        "kernel_sptes_4k", "kernel_emulated_insns_per_write", "kernel_clock",
        "fault_path", "era", "vcpus", "vcpus_pinned", "vcpu_writes", "fault_count", "fault_p50_ns", "fault_p99_ns", "fault_p999_ns",
        "fault_max_ns", "fast_faults", "emulated_writes", "shadowing_faults", "ipi_exits", "relog_since_harvest_start_ns",
        "instrumented_reps", "instrumented_harvest_ns",
        "lock_holds", "lock_hold_p50_ns", "lock_hold_p99_ns", "lock_hold_max_ns", "lock_hold_total_ns",
        "read_lock_holds", "read_lock_hold_p50_ns", "read_lock_hold_p99_ns", "read_lock_hold_max_ns", "read_lock_hold_total_ns",
        "lock_wait_faults", "lock_wait_total_ns", "lock_wait_p50_ns", "lock_wait_p99_ns", "lock_wait_max_ns",
        "race_violations", "shadowings", "shadow_flushes",
    ]

    public static let crossoverColumns = [
        "scenario", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "n_used_mmu_pages",
        "crossover_dirty_pages", "crossover_ci90_low", "crossover_ci90_high", "crossover_per_used", "crossover_note", "min_dirty_pages", "max_dirty_pages",
        "rmap_speedup_at_min", "slot_walk_speedup_at_max",
        "seed_regret_max_pct", "seed_regret_max_at", "seed_regret_mean_pct",
        "best_by_range", "best_overall_by_range", "seed_regret_vs_best_max_pct", "seed_regret_vs_best_mean_pct",
        "adaptive_regret_max_pct", "adaptive_regret_max_at", "adaptive_regret_mean_pct", "adaptive_regret_mean_ci90_low_pct",
        "adaptive_regret_mean_ci90_high_pct", "adaptive_measured_regret_max_pct",
        "adaptive_measured_regret_mean_pct", "replicate_regret_max_pct", "replicate_regret_max_at", "replicate_regret_mean_pct",
        "kvm_guest_mode", "kvm_min_dirty_pages", "kvm_get_ns_at_min", "kvm_max_dirty_pages", "kvm_get_ns_at_max",
        "model_vs_kvm_strategy", "model_over_kvm_at_min", "model_over_kvm_at_max",
    ]

    public static func pointsTable(_ rows: [PointRow], calibration: MachineCalibration?) -> CSVTable {
        var t = CSVTable(columns: pointColumns)
        for r in rows {
            let s = r.summary
            let c = r.counters
            let k = r.kernel
            let ph = r.phases
            func count(_ f: (ProtectCounters) -> Int) -> String { c.map { "\(f($0))" } ?? "" }
            t.append([
                r.series.scenario.rawValue, r.backend.rawValue, r.series.paging.rawValue, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)",
                "\(r.series.vmPages)", "\(r.nUsedMMUPages)", r.series.pattern.rawValue, r.cache.rawValue, "\(r.dirtyPages)",
                fmt(r.dirtyPerUsed, 6), r.strategy.name, r.backend == .model ? r.seedChoice.rawValue : "", choices(r.choices),
                "\(r.rounds)", "\(s.count)", r.stop.name, fmt(s.median, 1),
                s.interval.map { fmt($0.low, 1) } ?? "", s.interval.map { fmt($0.high, 1) } ?? "", s.interval == nil ? "" : fmt(s.intervalLevel, 4),
                fmt(s.p10, 1), fmt(s.p90, 1), fmt(s.mad, 1), fmt(s.cv, 4),
                s.noisy ? "true" : "false",
                count(\.shadowPagesVisited), count(\.sptesScanned), count(\.sptesProtected), count(\.largeSptesDropped),
                count(\.rmapEntriesVisited), count(\.lockAcquisitions), count(\.tlbFlushes),
                count(\.bytesTouched),
                c.map { fmt(Double($0.bytesTouched) / s.median, 3) } ?? "",
                c.flatMap { c in calibration.map { fmt(Double(c.bytesTouched) / s.median / $0.readBandwidthGBps, 3) } } ?? "",
                fmt(s.median / Double(max(1, r.dirtyPages)), 2),
                calibration.map { fmt(s.median / Double(max(1, r.dirtyPages)) / $0.missLatencyNs, 3) } ?? "",
                "\(r.allocatedBytesInTimedRegion)", r.verified ? "true" : "false", "\(r.violationCount)", r.violations.joined(separator: "; "),
                k?.guestMode ?? "",
                ph.flatMap { $0.getNs.isEmpty ? nil : fmt(Statistics.median($0.getNs), 1) } ?? "",
                ph.flatMap { $0.clearNs.isEmpty ? nil : fmt(Statistics.median($0.clearNs), 1) } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : "\($0.ringFullExits)" } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : "\($0.ringHarvestsDuringWrites)" } ?? "",
                ph.flatMap { $0.ringNsDuringWrites.isEmpty ? nil : fmt(Statistics.median($0.ringNsDuringWrites), 1) } ?? "",
                k.map { "\($0.sptes4k)" } ?? "", k.map { fmt($0.emulatedInstructionsPerWrite, 2) } ?? "", k?.clock.rawValue ?? "",
            ] + guestCells(r))
        }
        return t
    }

    /// The concurrent scenario's columns: the last of points.csv, from fault_path on.
    static let guestColumnCount = pointColumns.count - pointColumns.firstIndex(of: "fault_path")!

    /// The concurrent scenario's columns of a row (empty cells elsewhere).
    static func guestCells(_ r: PointRow) -> [String] {
        guard let g = r.guest else { return [String](repeating: "", count: guestColumnCount) }
        func n(_ v: Double?) -> String { v.map { fmt($0, 1) } ?? "" }
        func holds(_ h: LockHoldFigures) -> [String] { ["\(h.count)", n(h.p50Ns), n(h.p99Ns), n(h.maxNs), n(h.totalNs)] }
        return [r.series.faultPath?.rawValue ?? "", r.eraLabel, "\(g.vcpus)", g.pinned ? "true" : "false",
                "\(g.windowWrites)", "\(g.faultCount)", n(g.faultP50Ns), n(g.faultP99Ns), n(g.faultP999Ns), n(g.faultMaxNs),
                "\(g.fastFaults)", "\(g.emulatedWrites)", "\(g.shadowingFaults)", "\(g.ipiExits)", n(g.relogNs),
                "\(g.instrumentedReps)", n(g.instrumentedHarvestNs)]
            + holds(g.exclusiveHolds) + holds(g.sharedHolds)
            + ["\(g.lockWaitFaults)", n(g.lockWaitTotalNs), n(g.lockWaitP50Ns), n(g.lockWaitP99Ns), n(g.lockWaitMaxNs),
               "\(g.raceViolations)", "\(g.shadowings)", "\(g.shadowFlushes)"]
    }

    public static let sampleColumns = [
        "scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "dirty_pages",
        "strategy", "rep", "ns", "fault_path",
    ]

    /// Every timed repetition, in run order per point and strategy.
    public static func samplesTable(_ rows: [PointRow]) -> CSVTable {
        var t = CSVTable(columns: sampleColumns)
        for r in rows {
            let k = r.series
            for (i, ns) in r.samples.enumerated() {
                t.append([k.scenario.rawValue, r.backend.rawValue, k.paging.rawValue, "\(k.sptesPerGFN)", "\(k.slotPages)", "\(k.vmPages)",
                          k.pattern.rawValue, "\(r.dirtyPages)", r.strategy.name, "\(i)", fmt(ns, 0), k.faultPath?.rawValue ?? ""])
            }
        }
        return t
    }

    public static let skippedColumns = ["series", "backend", "strategy", "dirty_pages", "reason"]

    public static func skippedTable(_ notes: [SkipNote]) -> CSVTable {
        var t = CSVTable(columns: skippedColumns)
        for n in notes { t.append([n.series, n.backend.rawValue, n.strategy, n.dirtyPages, n.reason]) }
        return t
    }

    public static func crossoverTable(_ rows: [CrossoverRow]) -> CSVTable {
        var t = CSVTable(columns: crossoverColumns)
        for r in rows {
            t.append([
                r.series.scenario.rawValue, r.series.paging.rawValue, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)",
                "\(r.series.vmPages)", r.series.pattern.rawValue, "\(r.nUsedMMUPages)",
                r.crossoverDirtyPages.map { fmt($0, 1) } ?? "", r.crossoverLow.map { fmt($0, 1) } ?? "", r.crossoverHigh.map { fmt($0, 1) } ?? "",
                r.crossoverPerUsed.map { fmt($0, 3) } ?? "", r.note,
                "\(r.minDirtyPages)", "\(r.maxDirtyPages)",
                fmt(r.rmapSpeedupAtMin, 3), fmt(r.slotWalkSpeedupAtMax, 3),
                fmt(r.seedRegretMaxPct, 1), "\(r.seedRegretMaxAt)", fmt(r.seedRegretMeanPct, 1),
                r.successors?.bestByRange ?? "", r.successors?.bestOverallByRange ?? "",
                r.successors?.seed.map { fmt($0.maxPct, 1) } ?? "", r.successors?.seed.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.adaptive.map { fmt($0.maxPct, 1) } ?? "", r.successors?.adaptive.map { "\($0.maxAt)" } ?? "",
                r.successors?.adaptive.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.adaptive?.meanPctLow.map { fmt($0, 1) } ?? "", r.successors?.adaptive?.meanPctHigh.map { fmt($0, 1) } ?? "",
                r.successors?.adaptiveMeasured.map { fmt($0.maxPct, 1) } ?? "", r.successors?.adaptiveMeasured.map { fmt($0.meanPct, 1) } ?? "",
                r.successors?.replicate.map { fmt($0.maxPct, 1) } ?? "", r.successors?.replicate.map { "\($0.maxAt)" } ?? "",
                r.successors?.replicate.map { fmt($0.meanPct, 1) } ?? "",
                r.kernel?.guestMode ?? "", r.kernel.map { "\($0.minDirtyPages)" } ?? "",
                r.kernel.map { fmt($0.kvmGetAtMin, 1) } ?? "", r.kernel.map { "\($0.maxDirtyPages)" } ?? "",
                r.kernel.map { fmt($0.kvmGetAtMax, 1) } ?? "", r.kernel?.modelStrategy.rawValue ?? "",
                r.kernel?.modelOverKernelAtMin.map { fmt($0, 3) } ?? "", r.kernel?.modelOverKernelAtMax.map { fmt($0, 3) } ?? "",
            ])
        }
        return t
    }

    /// "812ns", "12.3us", "4.56ms", "1.23s".
    public static func duration(_ ns: Double) -> String {
        ns < 1e3 ? String(format: "%.0fns", ns) : ns < 1e6 ? String(format: "%.1fus", ns / 1e3)
            : ns < 1e9 ? String(format: "%.2fms", ns / 1e6) : String(format: "%.2fs", ns / 1e9)
    }

    /// Columns padded to their widest cell, the first left-aligned, a rule under the header.
    /// Columns padded to their widest cell, the first and (with
    /// `leftLast`) the last left-aligned, the rest right-aligned; a rule
    /// under the header; no trailing blanks.
    public static func layout(_ table: [[String]], leftLast: Bool = false) -> String {
        let widths = table[0].indices.map { c in table.map { $0[c].count }.max() ?? 0 }
        let last = widths.count - 1
        var lines: [String] = []
        for (i, row) in table.enumerated() {
            let line = row.enumerated().map { c, v in
                c == 0 || (leftLast && c == last) ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - v.count) + v
            }.joined(separator: "  ")
            lines.append(String(line.reversed().drop(while: { $0 == " " }).reversed()))
            if i == 0 { lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        return lines.joined(separator: "\n")
    }

    public static func fmt(_ v: Double, _ decimals: Int) -> String {
        v.isFinite ? String(format: "%.\(decimals)f", v) : ""
    }

    /// "masked" for one choice, "masked×3 rmap×7" for several (by name).
    static func choices(_ c: [Strategy: Int]) -> String {
        if c.count == 1 { return c.first!.key.rawValue }
        return c.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue)×\($0.value)" }.joined(separator: " ")
    }
}
