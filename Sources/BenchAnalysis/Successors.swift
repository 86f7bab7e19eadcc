import DirtyLogCore
import Foundation

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
        func regret(_ rule: Strategy, measured: Bool) -> RegretStats? {
            over { d in
                guard let r = byPoint[d]![rule], let (_, b) = best(d, among: family), b > 0 else { return nil }
                var t = r.summary.median
                // A migration total's choice differs by round: the rule's own total is its cost.
                if !measured, r.rounds == 1, let c = r.chose, let chosen = byPoint[d]![c] { t = chosen.summary.median }
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
}
