import DirtyLogCore
import Foundation

/// How well one series' medians are known: what report.md's precision
/// table and the terminal's precision line say.
public struct SeriesPrecision: Sendable {
    public var series: SeriesKey
    /// The limit a median's interval must be within, relative to it.
    public static let limit = 0.10

    /// Model rows, and those whose median's interval (at the run's
    /// confidence, not a lower-level range of a few long samples) is
    /// within `limit` of it.
    public var rows: Int
    public var within: Int
    /// The rows at the points within one octave of the crossover or of
    /// n_used_mmu_pages that a decision reads: all but those stopped as
    /// separated (far from the point's best, which their rule states).
    public var nearRows: Int
    public var nearWithin: Int
    /// The widest interval, relative to its median, of rmap's and
    /// slot-walk's rows at the two points that bracket the crossover, with
    /// its strategy and dirty count; nil without a crossover.
    public var crossoverWidest: (strategy: String, dirtyPages: Int, width: Double)?
    /// Every row's interval width relative to its median (nil: none).
    public var widths: [Double?]

    public var share: Double { rows > 0 ? Double(within) / Double(rows) : 0 }
    public var nearShare: Double { nearRows > 0 ? Double(nearWithin) / Double(nearRows) : 0 }

    /// Whether a row's median is known within `limit`: an interval at the
    /// confidence the row was measured to, that narrow.
    public static func isWithin(_ r: PointRow) -> Bool {
        let s = r.summary
        guard let w = s.intervalRelativeWidth else { return false }
        return s.intervalLevel >= r.intervalConfidence && w <= limit
    }

    /// The points within one octave of `center`.
    static func nearby(_ d: Int, _ center: Double) -> Bool {
        center > 0 && Double(d) >= center / 2 && Double(d) <= center * 2
    }

    /// One entry per model series of the threshold, migration and
    /// concurrent scenarios, in series order.
    public static func of(_ outcome: RunResults) -> [SeriesPrecision] {
        outcome.seriesKeys.compactMap { key in
            let these = outcome.rows.filter { $0.series == key && $0.backend == .model }
            guard !these.isEmpty else { return nil }
            let crossing = outcome.crossover.first { $0.series == key }?.crossoverDirtyPages
            let nUsed = these[0].nUsedMMUPages
            let near = these.filter { r in
                if case .separated = r.stop { return false }
                return nearby(r.dirtyPages, Double(nUsed)) || crossing.map { nearby(r.dirtyPages, $0) } == true
            }
            var widest: (strategy: String, dirtyPages: Int, width: Double)?
            if let c = crossing {
                let counts = Set(these.map(\.dirtyPages)).sorted()
                let bracket = [counts.last { Double($0) <= c }, counts.first { Double($0) >= c }].compactMap { $0 }
                for r in these where bracket.contains(r.dirtyPages) && (r.strategy == .model(.rmap) || r.strategy == .model(.slotWalk)) {
                    let w = r.summary.intervalRelativeWidth ?? .infinity
                    if widest == nil || w > widest!.width { widest = (r.strategy.name, r.dirtyPages, w) }
                }
            }
            return SeriesPrecision(series: key, rows: these.count, within: these.filter(isWithin).count, nearRows: near.count,
                                   nearWithin: near.filter(isWithin).count, crossoverWidest: widest,
                                   widths: these.map { $0.summary.intervalRelativeWidth })
        }
    }

    /// For the terminal: the whole run's shares in one line.
    public static func line(_ all: [SeriesPrecision]) -> String? {
        let rows = all.reduce(0) { $0 + $1.rows }, within = all.reduce(0) { $0 + $1.within }
        let near = all.reduce(0) { $0 + $1.nearRows }, nearWithin = all.reduce(0) { $0 + $1.nearWithin }
        guard rows > 0 else { return nil }
        var s = String(format: "precision: %.0f%% of model medians within %.0f%%", 100 * Double(within) / Double(rows), limit * 100)
        if near > 0 {
            s += String(format: "; %.0f%% near the crossovers and n_used (%d of %d rows)", 100 * Double(nearWithin) / Double(near), nearWithin, near)
        }
        return s
    }

    /// report.md's section.
    public static func section(_ all: [SeriesPrecision], policy: RepetitionPolicy) -> String {
        guard !all.isEmpty else { return "" }
        var md = "\n## Precision\n\n"
        md += "How well each median is known: its distribution-free interval at the confidence the run measured to "
        md += "(\(policy.description)). A median is *known within 10%* when that interval is at most 10% of it wide; the "
        md += "range of a long harvest's two or three samples holds the median with only 50% or 75% probability and does not count. "
        md += "*Near* are the points within one octave of the series' crossover or of n_used_mmu_pages, where the rules' "
        md += "decisions are read, less the rows stopped as separated (every sample above twice the best other strategy's "
        md += "median: nothing there turns on their precision). *Widest at the crossover*: the widest interval of rmap and "
        md += "slot-walk at the two points that bracket it. reps_stop in points.csv names each row's rule.\n\n"
        md += "| series | rows | within 10% | near: within 10% | widest at the crossover | interval width p50 | p90 | none |\n"
        md += "|---|---:|---:|---:|---|---:|---:|---:|\n"
        for p in all {
            let w = p.widths.compactMap { $0 }.sorted()
            let q = { (f: Double) in w.isEmpty ? "-" : String(format: "%.0f%%", 100 * Statistics.quantile(sorted: w, f)) }
            md += "| \(p.series.label) | \(p.rows) | \(p.within) (\(String(format: "%.0f%%", 100 * p.share))) | "
            md += p.nearRows > 0 ? "\(p.nearWithin) of \(p.nearRows) (\(String(format: "%.0f%%", 100 * p.nearShare))) | " : "- | "
            md += p.crossoverWidest.map {
                $0.width.isFinite ? String(format: "%.0f%%: %@ at %d", 100 * $0.width, $0.strategy, $0.dirtyPages)
                    : "no interval: \($0.strategy) at \($0.dirtyPages)"
            } ?? "-"
            md += " | \(q(0.5)) | \(q(0.9)) | \(p.widths.filter { $0 == nil }.count) |\n"
        }
        return md
    }
}
