import DirtyLogCore
import Foundation

/// Where `rmap` stops beating `slot-walk` in one series, and what the seed's
/// rule costs against the faster of the two: one row of crossover.csv.
public struct CrossoverRow: Sendable {
    public var series: SeriesKey
    public var nUsedMMUPages: Int
    /// Interpolated dirty-page count where rmap's median time meets slot-walk's,
    /// nil when the two do not cross within the sweep (see `note`).
    public var crossoverDirtyPages: Double?
    /// Its 90% interval for another run on this machine
    /// (`Crossover.interval`): where the crossing falls when each point's
    /// repetitions are drawn again and the two strategies drift apart as
    /// they do between runs. An edge of the sweep where resamples put no
    /// crossing inside it.
    public var crossoverLow: Double?
    public var crossoverHigh: Double?
    public var note: String
    public var minDirtyPages: Int
    public var maxDirtyPages: Int
    /// slot-walk median over rmap median at the fewest dirty pages.
    public var rmapSpeedupAtMin: Double
    /// rmap median over slot-walk median at the most dirty pages.
    public var slotWalkSpeedupAtMax: Double
    /// The worst slowdown of the seed's choice against the faster of the
    /// two, in percent, and where it happened.
    public var seedRegretMaxPct: Double
    public var seedRegretMaxAt: Int
    public var seedRegretMeanPct: Double
    /// The kernel beside the model, when it ran this series.
    public var kernel: KernelComparison?
    /// The successors: who is best where, and what the rules cost.
    public var successors: SuccessorSummary?

    public var crossoverPerUsed: Double? { crossoverDirtyPages.map { $0 / Double(max(1, nUsedMMUPages)) } }
}

public enum Crossover {
    /// One row per series that has model rows for rmap and slot-walk, in
    /// series order, with the kernel beside it when it ran.
    public static func rows(_ all: [PointRow]) -> [CrossoverRow] {
        var keys: [SeriesKey] = []
        for r in all where r.backend == .model && !keys.contains(r.series) { keys.append(r.series) }
        return keys.compactMap { key in
            let these = all.filter { $0.series == key }
            guard var r = row(series: key, rows: these) else { return nil }
            r.kernel = kernelComparison(these)
            r.successors = successors(these.filter { $0.backend == .model })
            return r
        }
    }

    /// A point of a series: the two strategies' medians at one dirty count.
    public struct Pair: Sendable {
        public var dirtyPages: Int
        public var rmap: Double
        public var slotWalk: Double
        public init(dirtyPages: Int, rmap: Double, slotWalk: Double) {
            self.dirtyPages = dirtyPages
            self.rmap = rmap
            self.slotWalk = slotWalk
        }
    }

    /// The first dirty count, between two measured ones, where rmap's time
    /// stops being below slot-walk's: the ratio rmap/slot-walk is
    /// interpolated linearly in log(ratio) against log(dirty pages).
    /// Returns nil with a note when rmap is slower already at the first point
    /// or faster at every point.
    public static func find(_ pairs: [Pair]) -> (Double?, String) {
        let ps = pairs.sorted { $0.dirtyPages < $1.dirtyPages }
        guard let first = ps.first else { return (nil, "no points") }
        if first.rmap >= first.slotWalk { return (nil, "slot-walk already as fast at \(first.dirtyPages) dirty pages") }
        for i in 1..<ps.count where ps[i].rmap >= ps[i].slotWalk {
            let a = ps[i - 1], b = ps[i]
            let x0 = log(Double(a.dirtyPages)), x1 = log(Double(b.dirtyPages))
            let y0 = log(a.rmap / a.slotWalk), y1 = log(b.rmap / b.slotWalk)
            let x = y1 == y0 ? x1 : x0 + (0 - y0) * (x1 - x0) / (y1 - y0)
            return (exp(x), "interpolated between \(a.dirtyPages) and \(b.dirtyPages)")
        }
        return (nil, "rmap faster at every point up to \(ps.last!.dirtyPages)")
    }

    /// The pair of neighbouring measured counts that brackets the crossover.
    public static func bracket(_ pairs: [Pair]) -> (Int, Int)? {
        let ps = pairs.sorted { $0.dirtyPages < $1.dirtyPages }
        guard let first = ps.first, first.rmap < first.slotWalk else { return nil }
        for i in 1..<ps.count where ps[i].rmap >= ps[i].slotWalk {
            return (ps[i - 1].dirtyPages, ps[i].dirtyPages)
        }
        return nil
    }

    /// rmap's and slot-walk's medians at each dirty count both measured, in
    /// order of dirty pages.
    public static func pairs(_ rows: [PointRow]) -> [Pair] {
        var rmap: [Int: Double] = [:], walk: [Int: Double] = [:]
        for r in rows {
            if r.strategy == .model(.rmap) { rmap[r.dirtyPages] = r.summary.median }
            if r.strategy == .model(.slotWalk) { walk[r.dirtyPages] = r.summary.median }
        }
        return rmap.keys.filter { walk[$0] != nil }.sorted().map { Pair(dirtyPages: $0, rmap: rmap[$0]!, slotWalk: walk[$0]!) }
    }

    /// How far rmap and slot-walk drift apart between two runs of the same
    /// code on this machine, as standard deviations of the log of their
    /// ratio: its memory bandwidth moves between 11 and 18 GB/s from minute
    /// to minute, and slot-walk, which streams the slot's tables, moves with
    /// it more than rmap, which chases pointers. Part of it moves a whole
    /// series (`runDrift`), part each point on its own (`pointDrift`: the
    /// points are measured seconds to minutes apart); together 0.085, the
    /// spread of that ratio's change at a point between two default runs of
    /// this machine, 2026-12-07 (394 points: robust 0.059, standard
    /// deviation 0.133 with its outliers; README).
    public static let runDrift = 0.06
    public static let pointDrift = 0.06

    /// The crossover's 90% interval for another run on this machine, by
    /// the bootstrap: `resamples` times, each point's rmap and slot-walk
    /// repetitions are drawn again with replacement, and slot-walk's
    /// medians all scaled by one draw of the drift between runs (log-normal,
    /// `drift`) and each by a draw of its own (`pointDrift`), seeded: the
    /// same rows give the same interval; the medians
    /// paired and the crossing found (`find`); the 5th and 95th percentiles
    /// of where it fell. A resample with rmap slower at the first point
    /// counts as the first point, one with rmap faster at every point as
    /// the last. The repetitions alone (both drifts 0) say how well this run
    /// knows its own crossing, not where the next run's falls. Nil without
    /// two repetitions at a point of each.
    public static func interval(_ rows: [PointRow], drift: Double = runDrift, pointDrift: Double = pointDrift, resamples: Int = 400,
                                seed: UInt64 = 0xC805) -> (low: Double, high: Double)? {
        var rmap: [Int: [Double]] = [:], walk: [Int: [Double]] = [:]
        for r in rows {
            if r.strategy == .model(.rmap) { rmap[r.dirtyPages] = r.samples }
            if r.strategy == .model(.slotWalk) { walk[r.dirtyPages] = r.samples }
        }
        let counts = rmap.keys.filter { walk[$0] != nil }.sorted()
        guard counts.count >= 2, counts.contains(where: { rmap[$0]!.count >= 2 && walk[$0]!.count >= 2 }) else { return nil }
        var rng = SeededGenerator(seed: seed)
        func redrawn(_ xs: [Double]) -> Double {
            var s = [Double](repeating: 0, count: xs.count)
            for i in s.indices { s[i] = xs[rng.below(xs.count)] }
            return Statistics.median(s)
        }
        var found: [Double] = []
        for _ in 0..<resamples {
            let apart = exp(drift * rng.normal())
            let pairs = counts.map {
                Pair(dirtyPages: $0, rmap: redrawn(rmap[$0]!), slotWalk: redrawn(walk[$0]!) * apart * exp(pointDrift * rng.normal()))
            }
            if let x = find(pairs).0 {
                found.append(x)
            } else {
                found.append(pairs[0].rmap >= pairs[0].slotWalk ? Double(counts[0]) : Double(counts[counts.count - 1]))
            }
        }
        found.sort()
        return (Statistics.quantile(sorted: found, 0.05), Statistics.quantile(sorted: found, 0.95))
    }

    /// Regret of a rule at one point: its choice's time over the best, minus one, in percent.
    public static func regretPct(chosen: Double, best: Double) -> Double {
        best > 0 ? (chosen / best - 1) * 100 : 0
    }

    /// The crossover row of one series from its model rows.
    public static func row(series: SeriesKey, rows: [PointRow]) -> CrossoverRow? {
        let model = rows.filter { $0.backend == .model && $0.series == series }
        let pairs = pairs(model)
        guard let first = pairs.first, let last = pairs.last, let nUsed = model.first?.nUsedMMUPages else { return nil }
        let (cross, note) = find(pairs)
        var worst = 0.0, worstAt = first.dirtyPages, sum = 0.0
        for p in pairs {
            let choice = Strategy.seedChoice(nrDirtyPages: p.dirtyPages, nUsedMMUPages: nUsed)
            let chosen = choice == .rmap ? p.rmap : p.slotWalk
            let r = regretPct(chosen: chosen, best: min(p.rmap, p.slotWalk))
            sum += r
            if r > worst { worst = r; worstAt = p.dirtyPages }
        }
        let ci = cross == nil ? nil : interval(model)
        return CrossoverRow(
            series: series, nUsedMMUPages: nUsed, crossoverDirtyPages: cross, crossoverLow: ci?.low, crossoverHigh: ci?.high, note: note,
            minDirtyPages: first.dirtyPages, maxDirtyPages: last.dirtyPages,
            rmapSpeedupAtMin: first.slotWalk / first.rmap,
            slotWalkSpeedupAtMax: last.rmap / last.slotWalk,
            seedRegretMaxPct: worst, seedRegretMaxAt: worstAt,
            seedRegretMeanPct: sum / Double(pairs.count)
        )
    }
}
