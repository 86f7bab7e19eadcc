import Foundation

/// Order statistics over a handful of repetitions.
public enum Statistics {
    /// The q-quantile by linear interpolation between closest ranks
    /// (the "type 7" estimator of R and NumPy's default).
    public static func quantile(sorted xs: [Double], _ q: Double) -> Double {
        precondition(!xs.isEmpty && q >= 0 && q <= 1)
        let h = Double(xs.count - 1) * q
        let lo = Int(h.rounded(.down))
        let hi = min(lo + 1, xs.count - 1)
        return xs[lo] + (h - Double(lo)) * (xs[hi] - xs[lo])
    }

    public static func median(_ xs: [Double]) -> Double { quantile(sorted: xs.sorted(), 0.5) }

    /// Median absolute deviation from the median (unscaled).
    public static func mad(_ xs: [Double]) -> Double {
        let m = median(xs)
        return median(xs.map { abs($0 - m) })
    }

    /// A distribution-free confidence interval for the median: the order
    /// statistics x(j) and x(n+1-j) of the sorted sample, j the largest rank
    /// with P(x(j) <= median <= x(n+1-j)) = 1 - 2·P(Binomial(n, 1/2) < j)
    /// at least `confidence`. Nil when even the whole range is not that
    /// likely to hold the median (fewer than 5 samples at 90%).
    public static func medianInterval(sorted xs: [Double], confidence: Double) -> (low: Double, high: Double)? {
        let n = xs.count
        guard n > 0 else { return nil }
        // P(B <= k) for B ~ Binomial(n, 1/2), accumulated from k = 0.
        var below = 0.0, term = pow(0.5, Double(n))
        var j = 0
        while j < n / 2 {
            let next = below + term  // P(B <= j)
            if 1 - 2 * next < confidence { break }
            below = next
            term *= Double(n - j) / Double(j + 1)
            j += 1
        }
        guard j >= 1 else { return nil }
        return (xs[j - 1], xs[n - j])
    }

    /// The probability that the range of `n` samples holds the median:
    /// 1 − 2·2⁻ⁿ.
    public static func rangeLevel(_ n: Int) -> Double { 1 - 2 * pow(0.5, Double(n)) }
}

/// The summary of one point's samples for one strategy.
public struct SampleSummary: Sendable {
    public let count: Int
    public let median: Double
    public let p10: Double
    public let p90: Double
    /// Median absolute deviation, nanoseconds.
    public let mad: Double
    /// Coefficient of variation (standard deviation over mean).
    public let cv: Double
    /// The median's distribution-free interval at `confidence` (90% unless
    /// the run's repetition policy says otherwise); with too few samples
    /// for that (fewer than 5 at 90%), their range, whose own level,
    /// 1 − 2·2⁻ⁿ, `intervalLevel` says (50% for two, 75% for three). Nil
    /// for a single sample.
    public let interval: (low: Double, high: Double)?
    /// The probability that `interval` holds the median.
    public let intervalLevel: Double

    /// The default confidence of `interval`.
    public static let intervalConfidence = 0.90

    public init(_ samples: [Double], confidence: Double = Self.intervalConfidence) {
        precondition(!samples.isEmpty)
        let s = samples.sorted()
        count = s.count
        if let i = Statistics.medianInterval(sorted: s, confidence: confidence) {
            interval = i
            intervalLevel = confidence
        } else {
            interval = s.count > 1 ? (s[0], s[s.count - 1]) : nil
            intervalLevel = s.count > 1 ? Statistics.rangeLevel(s.count) : 0
        }
        median = Statistics.quantile(sorted: s, 0.5)
        p10 = Statistics.quantile(sorted: s, 0.1)
        p90 = Statistics.quantile(sorted: s, 0.9)
        mad = Statistics.mad(s)
        let mean = s.reduce(0, +) / Double(s.count)
        let variance = s.count > 1 ? s.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(s.count - 1) : 0
        cv = mean > 0 ? variance.squareRoot() / mean : 0
    }
}

extension SampleSummary {
    /// The documented limit past which a point is flagged noisy: a median
    /// absolute deviation above 10% of the median. With 11 repetitions the
    /// median itself is then uncertain by about 5% or more (its standard
    /// error is near 1.25 · 1.4826 · MAD / √n).
    public static let noisyMADFraction = 0.10

    public var noisy: Bool { median > 0 && mad / median > Self.noisyMADFraction }

    /// The interval's width over the median.
    public var intervalRelativeWidth: Double? {
        interval.map { median > 0 ? ($0.high - $0.low) / median : 0 }
    }
}

/// The Mann-Whitney U test: do two samples come from the same distribution?
public enum MannWhitney {
    /// Two-sided p-value: exact (the U statistic's distribution counted)
    /// for up to `exactMaximum` samples a side without ties; otherwise by
    /// the normal approximation with tie and continuity correction, fine
    /// from about 8 samples a side.
    public static func pValue(_ a: [Double], _ b: [Double]) -> Double {
        guard !a.isEmpty, !b.isEmpty else { return 1 }
        if a.count <= exactMaximum, b.count <= exactMaximum, Set(a + b).count == a.count + b.count {
            return exactPValue(a, b)
        }
        return approximatePValue(a, b)
    }

    public static let exactMaximum = 20

    /// The smallest p-value samples of these sizes can reach (the two
    /// sides wholly apart): a test whose threshold is below it cannot
    /// reject, whatever the samples.
    public static func smallestPValue(_ n1: Int, _ n2: Int) -> Double {
        guard n1 > 0, n2 > 0 else { return 1 }
        return pValue((0..<n1).map { Double($0) }, (0..<n2).map { Double(n1 + $0) })
    }

    /// The exact two-sided p: twice the probability, over every way of
    /// ranking the samples, of a U at least as far from its mean.
    static func exactPValue(_ a: [Double], _ b: [Double]) -> Double {
        let n1 = a.count, n2 = b.count
        var u = 0
        for x in a { for y in b where x > y { u += 1 } }
        let tail = min(u, n1 * n2 - u)
        // ways[i][j][k]: rankings of i and j samples with U = k.
        var ways = [[Double]](repeating: [Double](repeating: 0, count: n1 * n2 + 1), count: n2 + 1)
        for j in 0...n2 { ways[j][0] = 1 }
        for i in 1...n1 {
            var next = [[Double]](repeating: [Double](repeating: 0, count: n1 * n2 + 1), count: n2 + 1)
            next[0][0] = 1
            for j in 1...max(1, n2) where j <= n2 {
                for k in 0...(i * j) {
                    // The largest sample is of a (adds j to U) or of b.
                    next[j][k] = (k >= j ? ways[j][k - j] : 0) + next[j - 1][k]
                }
            }
            ways = next
        }
        let all = ways[n2].reduce(0, +)
        let lower = ways[n2][0...tail].reduce(0, +)
        return min(1, 2 * lower / all)
    }

    static func approximatePValue(_ a: [Double], _ b: [Double]) -> Double {
        let n1 = Double(a.count), n2 = Double(b.count)
        let all = (a.map { ($0, 0) } + b.map { ($0, 1) }).sorted { $0.0 < $1.0 }
        var ranks = [Double](repeating: 0, count: all.count)
        var tieTerm = 0.0
        var i = 0
        while i < all.count {
            var j = i
            while j + 1 < all.count && all[j + 1].0 == all[i].0 { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j { ranks[k] = rank }
            let t = Double(j - i + 1)
            tieTerm += t * t * t - t
            i = j + 1
        }
        var r1 = 0.0
        for (k, e) in all.enumerated() where e.1 == 0 { r1 += ranks[k] }
        let u1 = r1 - n1 * (n1 + 1) / 2
        let mean = n1 * n2 / 2
        let n = n1 + n2
        let variance = n1 * n2 / 12 * ((n + 1) - tieTerm / (n * (n - 1)))
        guard variance > 0 else { return 1 }
        let z = (abs(u1 - mean) - 0.5) / variance.squareRoot()
        return min(1, max(0, erfc(max(0, z) / 2.0.squareRoot())))
    }
}

/// The Wilcoxon signed-rank test: is the median of paired differences zero?
public enum SignedRank {
    /// Two-sided p-value, exact (over the ranks' sign patterns, ties given
    /// their average rank), zeros dropped. 1 with no nonzero difference.
    public static func pValue(_ d: [Double]) -> Double {
        let x = d.filter { $0 != 0 && $0.isFinite }
        let n = x.count
        guard n > 0 else { return 1 }
        let order = x.indices.sorted { abs(x[$0]) < abs(x[$1]) }
        // Doubled average ranks, whole numbers even for ties.
        var rank2 = [Int](repeating: 0, count: n)
        var i = 0
        while i < n {
            var j = i
            while j + 1 < n && abs(x[order[j + 1]]) == abs(x[order[i]]) { j += 1 }
            for k in i...j { rank2[order[k]] = i + j + 2 }
            i = j + 1
        }
        let total = rank2.reduce(0, +)
        let wPlus = x.indices.filter { x[$0] > 0 }.reduce(0) { $0 + rank2[$1] }
        // Ways to reach each doubled rank sum with a subset of the ranks (as Doubles: 2^n overflows).
        var ways = [Double](repeating: 0, count: total + 1)
        ways[0] = 1
        for r in rank2 {
            var s = total
            while s >= r {
                ways[s] += ways[s - r]
                s -= 1
            }
        }
        let all = pow(2.0, Double(n))
        let extreme = min(wPlus, total - wPlus)
        let tail = ways[0...extreme].reduce(0, +) / all
        return min(1, 2 * tail)
    }
}

/// Benjamini-Hochberg: which of many p-values stay significant when the
/// expected share of false discoveries is held at `q`.
public enum FalseDiscovery {
    public static func significant(_ p: [Double], q: Double) -> [Bool] {
        let m = p.count
        guard m > 0 else { return [] }
        let order = p.indices.sorted { p[$0] < p[$1] }
        var cutoff = -1
        for (rank, idx) in order.enumerated() where p[idx] <= q * Double(rank + 1) / Double(m) { cutoff = rank }
        var out = [Bool](repeating: false, count: m)
        if cutoff >= 0 { for r in 0...cutoff { out[order[r]] = true } }
        return out
    }
}
