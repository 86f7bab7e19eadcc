import Foundation
import ShadowMMU

/// Where `rmap` stops beating `slot-walk` in one series, and what the seed's
/// rule costs against the faster of the two: one row of crossover.csv.
public struct CrossoverRow: Sendable {
    public var series: SeriesKey
    public var nUsedMMUPages: Int
    /// Interpolated dirty-page count where rmap's median time meets slot-walk's,
    /// nil when the two do not cross within the sweep (see `note`).
    public var crossoverDirtyPages: Double?
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

/// How far a rule's choices fall behind the best strategy measured at each point.
public struct RegretStats: Sendable {
    public var maxPct: Double
    public var meanPct: Double
    public var maxAt: Int
}

/// Per series: the best strategy by ranges of dirty pages, and the rules'
/// regret against the best of the KVM_GET_DIRTY_LOG family at each point.
public struct SuccessorSummary: Sendable {
    /// "1-2048 masked; 2896-262144 tdp-walk": the best of the
    /// KVM_GET_DIRTY_LOG family (`Strategy.getDirtyLogFamily`) per range.
    public var bestByRange: String
    /// The same over every strategy that protects on its own, dbit-clear,
    /// clear-chunked and ring included (ring's time counts its harvests
    /// during the writes too).
    public var bestOverallByRange: String
    /// The seed's rule, its choice's median against the best.
    public var seed: RegretStats?
    /// The adaptive rule, its choice's median against the best.
    public var adaptive: RegretStats?
    /// The adaptive rule's own measured median against the best: the
    /// choice plus the decision, and the noise between two measurements.
    public var adaptiveMeasured: RegretStats?
    /// What noise alone costs: a rule that knew each point's measurements
    /// but from half the repetitions (choosing by the even ones, judged by
    /// the odd ones, and the reverse, averaged). No rule's regret against
    /// medians this noisy can be expected below it.
    public var replicate: RegretStats?
}

/// The kernel's kvm-get at the fewest and the most dirty pages it measured,
/// and how the model's closest strategy compares there.
public struct KernelComparison: Sendable {
    public var guestMode: String
    public var minDirtyPages: Int
    public var maxDirtyPages: Int
    public var kvmGetAtMin: Double
    public var kvmGetAtMax: Double
    /// The model strategy compared: the one that works as the kernel's
    /// KVM_GET_DIRTY_LOG does.
    public var modelStrategy: String
    /// Model median over kernel median at those two counts (nil when the
    /// model did not measure that count).
    public var modelOverKernelAtMin: Double?
    public var modelOverKernelAtMax: Double?
}

public enum Crossover {
    /// The model strategy that does what the kernel's KVM_GET_DIRTY_LOG does
    /// with the shadow MMU (tdp_mmu=N): per non-zero bitmap word, under one
    /// hold of mmu_lock, write-protect the word's pages through their rmaps
    /// (kvm_mmu_write_protect_pt_masked; MODEL.md's "masked rmap").
    public static let modelCounterpartOfKernel = Strategy.masked

    /// One row per series that has model rows for rmap and slot-walk, in
    /// series order, with the kernel beside it when it ran.
    public static func rows(_ all: [PointRow]) -> [CrossoverRow] {
        var keys: [SeriesKey] = []
        for r in all where r.backend == "model" && !keys.contains(r.series) { keys.append(r.series) }
        return keys.compactMap { key in
            let these = all.filter { $0.series == key }
            guard var r = row(series: key, rows: these) else { return nil }
            r.kernel = kernelComparison(these)
            r.successors = successors(these.filter { $0.backend == "model" })
            return r
        }
    }

    /// Best strategies by range, and the rules' regrets.
    static func successors(_ model: [PointRow]) -> SuccessorSummary? {
        var byPoint: [Int: [String: PointRow]] = [:]
        for r in model { byPoint[r.dirtyPages, default: [:]][r.strategy] = r }
        let points = byPoint.keys.sorted()
        let family = Set(Strategy.getDirtyLogFamily.map(\.rawValue))
        let protecting = Set(Strategy.allCases.filter { !$0.isRule }.map(\.rawValue))
        func cost(_ r: PointRow) -> Double { r.roundSummary.median }
        func best(_ d: Int, among set: Set<String>) -> (String, Double)? {
            byPoint[d]!.filter { set.contains($0.key) }.map { ($0.key, cost($0.value)) }.min { $0.1 < $1.1 }
        }
        // Ranges of the best; a strategy within 5% of the best keeps its
        // range going, so that two near-equal strategies trading places in
        // the noise do not cut the sweep into slivers.
        func ranges(among set: Set<String>) -> String {
            var out: [(String, Int, Int)] = []
            for d in points {
                guard let (b, t) = best(d, among: set) else { continue }
                if let last = out.last, let r = byPoint[d]![last.0], cost(r) <= t * 1.05 {
                    out[out.count - 1].2 = d
                } else {
                    out.append((b, d, d))
                }
            }
            return out.map { $0.1 == $0.2 ? "\($0.1) \($0.0)" : "\($0.1)-\($0.2) \($0.0)" }.joined(separator: "; ")
        }
        /// The worst and mean of a regret over the points that have one.
        func over(_ pct: (Int) -> Double?) -> RegretStats? {
            var worst = 0.0, worstAt = 0, sum = 0.0, n = 0
            for d in points {
                guard let p = pct(d) else { continue }
                if n == 0 || p > worst { worst = p; worstAt = d }
                sum += p
                n += 1
            }
            return n == 0 ? nil : RegretStats(maxPct: worst, meanPct: sum / Double(n), maxAt: worstAt)
        }
        func regret(_ rule: Strategy, measured: Bool) -> RegretStats? {
            over { d in
                guard let r = byPoint[d]![rule.rawValue], let (_, b) = best(d, among: family), b > 0 else { return nil }
                var t = r.summary.median
                if !measured, let chosen = byPoint[d]![r.chose] { t = chosen.summary.median }
                return regretPct(chosen: t, best: b)
            }
        }
        func replicate() -> RegretStats? {
            func half(_ r: PointRow, _ parity: Int) -> Double {
                Statistics.median(r.samples.indices.filter { $0 % 2 == parity }.map { r.samples[$0] })
            }
            return over { d in
                let rows = byPoint[d]!.filter { family.contains($0.key) && $0.value.samples.count >= 2 }.map(\.value)
                guard rows.count >= 2 else { return nil }
                return [(0, 1), (1, 0)].reduce(0.0) { acc, p in
                    let chosen = rows.min { half($0, p.0) < half($1, p.0) }!
                    return acc + regretPct(chosen: half(chosen, p.1), best: rows.map { half($0, p.1) }.min()!) / 2
                }
            }
        }
        guard !points.isEmpty else { return nil }
        return SuccessorSummary(bestByRange: ranges(among: family), bestOverallByRange: ranges(among: protecting),
                                seed: regret(.seed, measured: false), adaptive: regret(.adaptive, measured: false),
                                adaptiveMeasured: regret(.adaptive, measured: true), replicate: replicate())
    }

    static func kernelComparison(_ rows: [PointRow]) -> KernelComparison? {
        let get = rows.filter { $0.backend == "kvm" && $0.strategy == "kvm-get" }.sorted { $0.dirtyPages < $1.dirtyPages }
        guard let lo = get.first, let hi = get.last else { return nil }
        let model = Dictionary(rows.filter { $0.backend == "model" && $0.strategy == modelCounterpartOfKernel.rawValue }
            .map { ($0.dirtyPages, $0.summary.median) }, uniquingKeysWith: { a, _ in a })
        return KernelComparison(
            guestMode: lo.kernel?.guestMode ?? "", minDirtyPages: lo.dirtyPages, maxDirtyPages: hi.dirtyPages,
            kvmGetAtMin: lo.summary.median, kvmGetAtMax: hi.summary.median, modelStrategy: modelCounterpartOfKernel.rawValue,
            modelOverKernelAtMin: model[lo.dirtyPages].map { $0 / lo.summary.median },
            modelOverKernelAtMax: model[hi.dirtyPages].map { $0 / hi.summary.median })
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
    static func pairs(_ rows: [PointRow]) -> [Pair] {
        var rmap: [Int: Double] = [:], walk: [Int: Double] = [:]
        for r in rows {
            if r.strategy == Strategy.rmap.rawValue { rmap[r.dirtyPages] = r.summary.median }
            if r.strategy == Strategy.slotWalk.rawValue { walk[r.dirtyPages] = r.summary.median }
        }
        return rmap.keys.filter { walk[$0] != nil }.sorted().map { Pair(dirtyPages: $0, rmap: rmap[$0]!, slotWalk: walk[$0]!) }
    }

    /// Regret of a rule at one point: its choice's time over the best, minus one, in percent.
    public static func regretPct(chosen: Double, best: Double) -> Double {
        best > 0 ? (chosen / best - 1) * 100 : 0
    }

    /// The crossover row of one series from its model rows.
    public static func row(series: SeriesKey, rows: [PointRow]) -> CrossoverRow? {
        let model = rows.filter { $0.backend == "model" && $0.series == series }
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
        return CrossoverRow(
            series: series, nUsedMMUPages: nUsed, crossoverDirtyPages: cross, note: note,
            minDirtyPages: first.dirtyPages, maxDirtyPages: last.dirtyPages,
            rmapSpeedupAtMin: first.slotWalk / first.rmap,
            slotWalkSpeedupAtMax: last.rmap / last.slotWalk,
            seedRegretMaxPct: worst, seedRegretMaxAt: worstAt,
            seedRegretMeanPct: sum / Double(pairs.count)
        )
    }
}
