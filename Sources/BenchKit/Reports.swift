import Foundation
import ShadowMMU

/// points.csv and crossover.csv: their columns, in order, and their rows.
public enum Reports {
    public static let pointColumns = [
        "scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "n_used_mmu_pages",
        "pattern", "cache", "dirty_pages", "dirty_per_used", "strategy", "seed_choice", "chose",
        "reps", "median_ns", "p10_ns", "p90_ns", "mad_ns", "cv",
        "shadow_pages_visited", "sptes_scanned", "sptes_protected", "large_sptes_dropped",
        "rmap_entries_visited", "lock_acquisitions", "tlb_flushes",
        "allocs_in_timed_region", "verified", "violations",
    ]

    public static let crossoverColumns = [
        "scenario", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "n_used_mmu_pages",
        "crossover_dirty_pages", "crossover_per_used", "crossover_note", "min_dirty_pages", "max_dirty_pages",
        "rmap_speedup_at_min", "slot_walk_speedup_at_max",
        "seed_regret_max_pct", "seed_regret_max_at", "seed_regret_mean_pct",
    ]

    public static func pointsTable(_ rows: [PointRow]) -> CSVTable {
        var t = CSVTable(columns: pointColumns)
        for r in rows {
            let s = r.summary
            let c = r.counters
            t.append([
                r.series.scenario, r.backend, r.series.paging, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)",
                "\(r.series.vmPages)", "\(r.nUsedMMUPages)", r.series.pattern, r.cache, "\(r.dirtyPages)",
                fmt(r.dirtyPerUsed, 6), r.strategy, r.seedChoice, r.chose,
                "\(s.count)", fmt(s.median, 1), fmt(s.p10, 1), fmt(s.p90, 1), fmt(s.mad, 1), fmt(s.cv, 4),
                "\(c.shadowPagesVisited)", "\(c.sptesScanned)", "\(c.sptesProtected)", "\(c.largeSptesDropped)",
                "\(c.rmapEntriesVisited)", "\(c.lockAcquisitions)", "\(c.tlbFlushes)",
                "\(r.allocatedBytesInTimedRegion)", r.verified ? "true" : "false", r.violations,
            ])
        }
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
            ])
        }
        return t
    }

    /// The terminal summary: one line per series.
    public static func summary(_ rows: [CrossoverRow]) -> String {
        var lines: [String] = []
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
        let widths = header.indices.map { c in table.map { $0[c].count }.max() ?? 0 }
        for (i, row) in table.enumerated() {
            let cells = row.enumerated().map { c, v in
                c == 0 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - v.count) + v
            }
            lines.append(cells.joined(separator: "  "))
            if i == 0 { lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        return lines.joined(separator: "\n")
    }

    static func fmt(_ v: Double, _ decimals: Int) -> String {
        v.isFinite ? String(format: "%.\(decimals)f", v) : ""
    }
}
