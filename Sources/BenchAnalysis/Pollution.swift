import DirtyLogCore

/// A median and its distribution-free confidence interval (order
/// statistics of the binomial), from paired samples.
public struct MedianInterval: Sendable, Equatable {
    public var median: Double
    public var low: Double
    public var high: Double

    /// Pollution's confidence: the issue a reader checks is whether an
    /// excess is real, so 95%.
    public static let confidence = 0.95

    /// Nil when too few samples for an interval at `confidence` (under 6).
    public init?(_ samples: [Double], confidence: Double = MedianInterval.confidence) {
        let s = samples.sorted()
        guard !s.isEmpty, let i = Statistics.medianInterval(sorted: s, confidence: confidence) else { return nil }
        median = Statistics.quantile(sorted: s, 0.5)
        low = i.low
        high = i.high
    }

    public init(median: Double, low: Double, high: Double) {
        self.median = median
        self.low = low
        self.high = high
    }

    /// Whether the interval lies wholly above (1) or below (-1) zero, or holds it (0).
    public var sign: Int { low > 0 ? 1 : high < 0 ? -1 : 0 }

    public func scaled(_ f: Double) -> MedianInterval { MedianInterval(median: median * f, low: low * f, high: high * f) }

    /// How far the interval reaches from the median, on its wider side.
    public var halfWidth: Double { max(high - median, median - low) }
}

/// What ended a working set's pollution pairs.
public enum PollutionStop: String, Sendable {
    /// slot-walk's excess over rmap known within the target (±3 µs at 95%).
    case target = "ci95<=3us"
    /// The time a working set on one CPU may take, spent first.
    case budget
    /// The most pairs the probe keeps.
    case maximumPairs = "max-pairs"
    /// The run was stopped.
    case interrupted
}

/// The cache pollution one strategy's harvest leaves in the guest's working
/// set, from harvest and idle intervals alternated (pollution.csv):
/// per pair, the working set is read (warm), then either the harvest runs
/// or the CPU spins as long, then it is read again, timed, on `guestCPU`.
/// The excess is the re-read after the harvest minus the one after the
/// idle interval of the same pair.
public struct PollutionRow: Sendable {
    public var series: SeriesKey
    public var strategy: Strategy
    public var guestCPU: GuestCPU
    public var workingSetBytes: Int
    public var dirtyPages: Int
    /// Harvest/idle pairs.
    public var pairs: Int
    /// Medians over the pairs.
    public var harvestNs: Double
    public var rereadAfterHarvestNs: Double
    public var rereadAfterIdleNs: Double
    /// The excess per pair, ns: median and 95% interval.
    public var excess: MedianInterval?
    /// What a line of the working set costs to re-read from memory rather
    /// than from cache, on `guestCPU` (a read after flushing it minus one
    /// right after, per line): excess ns over it is lines.
    public var nsPerLine: Double
    /// slot-walk's rows: its excess less rmap's, pair by pair (the k-th
    /// pair of each ran in the same block, in the same order of halves).
    public var overRmapSamples: [Double] = []
    /// slot-walk's rows: what ended its pairs.
    public var stop: PollutionStop?
    /// slot-walk's rows: the median of `overRmapSamples` and its 95% interval.
    public var overRmap: MedianInterval? { MedianInterval(overRmapSamples) }
    /// Every pair's harvest handed out the pages written and left them protected.
    public var violationCount = 0
    public var violations: [String] = []

    public init(series: SeriesKey, strategy: Strategy, guestCPU: GuestCPU, workingSetBytes: Int, dirtyPages: Int, pairs: Int,
                harvestNs: Double, rereadAfterHarvestNs: Double, rereadAfterIdleNs: Double, excess: MedianInterval?, nsPerLine: Double) {
        self.series = series
        self.strategy = strategy
        self.guestCPU = guestCPU
        self.workingSetBytes = workingSetBytes
        self.dirtyPages = dirtyPages
        self.pairs = pairs
        self.harvestNs = harvestNs
        self.rereadAfterHarvestNs = rereadAfterHarvestNs
        self.rereadAfterIdleNs = rereadAfterIdleNs
        self.excess = excess
        self.nsPerLine = nsPerLine
    }

    public var verified: Bool { violationCount == 0 }
    public var lines: Int { workingSetBytes / 64 }
    /// Ns as lines re-read from memory.
    public func asLines(_ i: MedianInterval?) -> MedianInterval? { nsPerLine > 0 ? i?.scaled(1 / nsPerLine) : nil }

    /// The confidence of each verdict when a run gives `verdicts` of them:
    /// 95% for the family (Bonferroni), so that among 16 verdicts one
    /// "more" or "less" by chance is as unlikely as in one.
    public static func verdictConfidence(verdicts: Int) -> Double {
        1 - (1 - MedianInterval.confidence) / Double(max(1, verdicts))
    }

    /// slot-walk's over rmap at the family's confidence (`verdictConfidence`);
    /// nil when too few pairs for it.
    public func verdictInterval(verdicts: Int) -> MedianInterval? {
        MedianInterval(overRmapSamples, confidence: Self.verdictConfidence(verdicts: verdicts))
    }

    /// For slot-walk's rows: "more", "less" or "within noise" than rmap's,
    /// from the interval at the family's confidence.
    public func verdict(verdicts: Int) -> String? {
        guard let d = verdictInterval(verdicts: verdicts) else { return overRmapSamples.isEmpty ? nil : "too few pairs" }
        return d.sign > 0 ? "more" : d.sign < 0 ? "less" : "within noise"
    }
}

extension Reports {
    public static let pollutionColumns = [
        "scenario", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "guest_cpu", "wss_bytes", "strategy",
        "dirty_pages", "pairs", "harvest_ns", "reread_after_harvest_ns", "reread_after_idle_ns",
        "excess_ns", "excess_ci_low_ns", "excess_ci_high_ns", "ns_per_line", "excess_lines", "excess_lines_ci_low", "excess_lines_ci_high",
        "over_rmap_ns", "over_rmap_ci_low_ns", "over_rmap_ci_high_ns", "pairs_stop", "verdict_confidence", "verdict_ci_low_ns",
        "verdict_ci_high_ns", "over_rmap_verdict", "verified", "violation_count", "violations",
    ]

    /// The verdicts a run's pollution rows give: one per slot-walk row with rmap beside it.
    public static func pollutionVerdicts(_ rows: [PollutionRow]) -> Int { rows.filter { !$0.overRmapSamples.isEmpty }.count }

    public static func pollutionTable(_ rows: [PollutionRow]) -> CSVTable {
        var t = CSVTable(columns: pollutionColumns)
        let verdicts = pollutionVerdicts(rows)
        for r in rows {
            let k = r.series, lines = r.asLines(r.excess), family = r.verdictInterval(verdicts: verdicts)
            func cells(_ i: MedianInterval?, _ d: Int) -> [String] {
                [i.map { fmt($0.median, d) } ?? "", i.map { fmt($0.low, d) } ?? "", i.map { fmt($0.high, d) } ?? ""]
            }
            t.append([k.scenario.rawValue, k.paging.rawValue, "\(k.sptesPerGFN)", "\(k.slotPages)", "\(k.vmPages)", k.pattern.rawValue,
                      r.guestCPU.rawValue, "\(r.workingSetBytes)", r.strategy.rawValue, "\(r.dirtyPages)", "\(r.pairs)",
                      fmt(r.harvestNs, 1), fmt(r.rereadAfterHarvestNs, 1), fmt(r.rereadAfterIdleNs, 1)]
                     + cells(r.excess, 1) + [fmt(r.nsPerLine, 3)] + cells(lines, 1) + cells(r.overRmap, 1)
                     + [r.stop?.rawValue ?? "", r.overRmapSamples.isEmpty ? "" : fmt(PollutionRow.verdictConfidence(verdicts: verdicts), 4),
                        family.map { fmt($0.low, 1) } ?? "", family.map { fmt($0.high, 1) } ?? ""]
                     + [r.verdict(verdicts: verdicts) ?? "", r.verified ? "true" : "false", "\(r.violationCount)", r.violations.joined(separator: "; ")])
        }
        return t
    }
}
