import DirtyLogCore
import Foundation

/// How far a rule's choices fall behind the best strategy measured at each point.
public struct RegretStats: Sendable {
    public var maxPct: Double
    public var meanPct: Double
    public var maxAt: Int
    /// The mean's 90% bootstrap interval: every point's repetitions drawn
    /// again (seeded), the medians and the rule's regret found again each
    /// time. Nil where there is none (a migration, the noise floor).
    public var meanPctLow: Double? = nil
    public var meanPctHigh: Double? = nil
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

extension Crossover {
    /// Best strategies by range, and the rules' regrets.
    static func successors(_ model: [PointRow]) -> SuccessorSummary? {
        var byPoint: [Int: [Strategy: PointRow]] = [:]
        for r in model { if let s = r.strategy.model { byPoint[r.dirtyPages, default: [:]][s] = r } }
        let points = byPoint.keys.sorted()
        let family = Set(Strategy.getDirtyLogFamily)
        let protecting = Set(Strategy.allCases.filter { !$0.isRule })
        func cost(_ r: PointRow) -> Double { r.roundSummary.median }
        func best(_ d: Int, among set: Set<Strategy>) -> (Strategy, Double)? {
            byPoint[d]!.filter { set.contains($0.key) }.map { ($0.key, cost($0.value)) }.min { $0.1 < $1.1 }
        }
        // Ranges of the best; a strategy within 5% of the best keeps its
        // range going, so that two near-equal strategies trading places in
        // the noise do not cut the sweep into slivers.
        func ranges(among set: Set<Strategy>) -> String {
            var out: [(Strategy, Int, Int)] = []
            for d in points {
                guard let (b, t) = best(d, among: set) else { continue }
                if let last = out.last, let r = byPoint[d]![last.0], cost(r) <= t * 1.05 {
                    out[out.count - 1].2 = d
                } else {
                    out.append((b, d, d))
                }
            }
            return out.map { $0.1 == $0.2 ? "\($0.1) \($0.0.rawValue)" : "\($0.1)-\($0.2) \($0.0.rawValue)" }.joined(separator: "; ")
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
        // Each point's best of the family by its medians, for the bootstrap.
        var bestAt: [Int: Strategy] = [:]
        for d in points { bestAt[d] = best(d, among: family)?.0 }
        func regret(_ rule: Strategy, measured: Bool) -> RegretStats? {
            /// `fixedBest`: judge against the strategy best by the medians,
            /// not the least of the redrawn ones.
            func pct(_ d: Int, fixedBest: Bool = false, _ median: (PointRow) -> Double) -> Double? {
                guard let r = byPoint[d]![rule] else { return nil }
                let b: Double
                if fixedBest {
                    guard let s = bestAt[d], let row = byPoint[d]![s] else { return nil }
                    b = median(row)
                } else {
                    guard let least = byPoint[d]!.filter({ family.contains($0.key) }).map({ median($0.value) }).min() else { return nil }
                    b = least
                }
                guard b > 0 else { return nil }
                var t = median(r)
                // A migration total's choice differs by round: the rule's own total is its cost.
                if !measured, r.rounds == 1, let c = r.chose, let chosen = byPoint[d]![c] { t = median(chosen) }
                return regretPct(chosen: t, best: b)
            }
            guard var stats = over({ d in pct(d, cost) }) else { return nil }
            // The mean again over resampled repetitions (not for a rule's
            // migration totals, whose rounds' choices differ), each against
            // the strategy best by the medians: the least of several redrawn
            // medians is lower than the best's own, which put every draw's
            // regret above the estimate (a mean of 0.9% with an interval of
            // 1.0-3.6% on 2026-12-07).
            if byPoint.values.allSatisfy({ ($0[rule]?.rounds ?? 1) == 1 }) {
                var rng = SeededGenerator(seed: 0x4E6E)
                var means: [Double] = []
                for _ in 0..<200 {
                    func redrawn(_ r: PointRow) -> Double {
                        guard r.samples.count > 1 else { return cost(r) }
                        var s = [Double](repeating: 0, count: r.samples.count)
                        for i in s.indices { s[i] = r.samples[rng.below(r.samples.count)] }
                        return Statistics.median(s)
                    }
                    // One draw per row and resample, shared by the rule and the best.
                    var medians: [Int: [Strategy: Double]] = [:]
                    for d in points { for (s, r) in byPoint[d]! { medians[d, default: [:]][s] = redrawn(r) } }
                    let values = points.compactMap { d in pct(d, fixedBest: true) { medians[d]![$0.strategy.model!] ?? cost($0) } }
                    if !values.isEmpty { means.append(values.reduce(0, +) / Double(values.count)) }
                }
                means.sort()
                if !means.isEmpty {
                    stats.meanPctLow = Statistics.quantile(sorted: means, 0.05)
                    stats.meanPctHigh = Statistics.quantile(sorted: means, 0.95)
                }
            }
            return stats
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
}
