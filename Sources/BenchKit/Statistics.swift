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
}

/// The summary of one point's samples for one strategy.
public struct SampleSummary: Sendable, Equatable {
    public let count: Int
    public let median: Double
    public let p10: Double
    public let p90: Double
    /// Median absolute deviation, nanoseconds.
    public let mad: Double
    /// Coefficient of variation (standard deviation over mean).
    public let cv: Double

    public init(_ samples: [Double]) {
        precondition(!samples.isEmpty)
        let s = samples.sorted()
        count = s.count
        median = Statistics.quantile(sorted: s, 0.5)
        p10 = Statistics.quantile(sorted: s, 0.1)
        p90 = Statistics.quantile(sorted: s, 0.9)
        mad = Statistics.mad(s)
        let mean = s.reduce(0, +) / Double(s.count)
        let variance = s.count > 1 ? s.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(s.count - 1) : 0
        cv = mean > 0 ? variance.squareRoot() / mean : 0
    }
}
