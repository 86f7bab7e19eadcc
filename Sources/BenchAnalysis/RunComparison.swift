import DirtyLogCore
import Foundation

/// `bench compare`: every point and strategy two runs share, the change in
/// median from the first to the second and whether it is significant, per
/// point and per series.
///
/// This machine is shared: between two runs minutes apart every time can
/// move by tens of percent together, while within a run the strategies of a
/// point, measured interleaved, move together. So a change is judged
/// relative to the point: a strategy's change of median (as a log ratio)
/// less the median change of all the point's strategies (same backend),
/// which cancels what the machine did to all of them and is not moved by
/// one strategy's own change. A point with a single strategy has nothing
/// to be relative to and is judged raw.
///
/// - Per point: the first run's repetitions against the second's divided
///   by the point's median change, a two-sided Mann-Whitney U test, then
///   Benjamini-Hochberg across all points at a false-discovery rate `q`.
///   With a handful of repetitions per point and hundreds of points, only
///   large changes survive this.
/// - Per series and strategy: the per-point changes (log ratio of the
///   relative medians) pooled over the series' points, a two-sided
///   Wilcoxon signed-rank test that their median is zero, then
///   Benjamini-Hochberg across all series and strategies. A strategy that
///   got 10% slower at every point is seen here even when no single point
///   is.
public struct RunComparison {
    public struct Row {
        public var key: [String]
        public var strategy: String
        public var backend: String
        public var medianA: Double
        public var medianB: Double
        /// Change of the median less the point's median change, percent.
        public var relativeChangePct: Double
        /// Whether the point had other strategies to be relative to.
        public var relative: Bool
        public var pValue: Double
        public var significant: Bool

        /// Change of the raw median, percent.
        public var changePct: Double { (medianB / medianA - 1) * 100 }
        /// The change regressions are judged on.
        public var judgedChangePct: Double { relative ? relativeChangePct : changePct }
    }

    /// One strategy over one series' points.
    public struct SeriesVerdict {
        public var series: String
        public var strategy: String
        public var points: Int
        /// The median over the points of the judged change, percent.
        public var medianChangePct: Double
        public var minChangePct: Double
        public var maxChangePct: Double
        /// Points that changed significantly on their own, each way.
        public var slowerPoints: Int
        public var fasterPoints: Int
        /// Two-sided Wilcoxon signed-rank p-value of the per-point changes.
        public var pValue: Double
        public var significant: Bool

        /// "slower", "faster" or "unchanged".
        public var verdict: String { !significant ? "unchanged" : medianChangePct > 0 ? "slower" : "faster" }
    }

    public static let keyColumns = ["scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "dirty_pages", "strategy"]

    public var runA: String
    public var runB: String
    public var rows: [Row]
    public var series: [SeriesVerdict]
    public var onlyInA: Int
    public var onlyInB: Int

    /// Reads both runs' samples.csv and compares.
    public static func load(_ a: String, _ b: String, q: Double) throws -> RunComparison {
        compare(try samples(in: a, option: "run-a"), try samples(in: b, option: "run-b"), runA: a, runB: b, q: q)
    }

    /// Compares two runs' repetitions, keyed as samples.csv keys them.
    static func compare(_ sa: [[String]: [(rep: Int, ns: Double)]], _ sb: [[String]: [(rep: Int, ns: Double)]],
                        runA: String, runB: String, q: Double) -> RunComparison {
        // Each point's strategies, and each one's log change of median.
        var byPoint: [[String]: [[String]]] = [:]
        var logChange: [[String]: Double] = [:]
        for (key, va) in sa {
            guard let vb = sb[key], !va.isEmpty, !vb.isEmpty else { continue }
            byPoint[Array(key.dropLast()), default: []].append(key)
            logChange[key] = log(Statistics.median(vb.map(\.ns)) / Statistics.median(va.map(\.ns)))
        }
        var rows: [Row] = []
        for (_, keys) in byPoint {
            let shift = keys.count >= 2 ? Statistics.median(keys.map { logChange[$0]! }) : 0
            for key in keys {
                let a = sa[key]!.map(\.ns), b = sb[key]!.map(\.ns)
                rows.append(Row(key: key, strategy: key[8], backend: key[1], medianA: Statistics.median(a), medianB: Statistics.median(b),
                                relativeChangePct: keys.count >= 2 ? (exp(logChange[key]! - shift) - 1) * 100 : 0,
                                relative: keys.count >= 2, pValue: MannWhitney.pValue(a, b.map { $0 / exp(shift) }), significant: false))
            }
        }
        rows.sort { $0.key.lexicographicallyPrecedes($1.key) { a, b in
            if let x = Int(a), let y = Int(b) { return x < y }
            return a < b
        } }
        let sig = FalseDiscovery.significant(rows.map(\.pValue), q: q)
        for i in rows.indices { rows[i].significant = sig[i] }
        return RunComparison(runA: runA, runB: runB, rows: rows, series: seriesVerdicts(rows, q: q),
                             onlyInA: sa.keys.filter { sb[$0] == nil }.count, onlyInB: sb.keys.filter { sa[$0] == nil }.count)
    }

    /// Per series and strategy, in the order the rows come.
    static func seriesVerdicts(_ rows: [Row], q: Double) -> [SeriesVerdict] {
        var groups: [[String]: [Row]] = [:]
        var order: [[String]] = []
        for r in rows {
            let g = [seriesLabel(r.key), r.strategy]
            if groups[g] == nil { order.append(g) }
            groups[g, default: []].append(r)
        }
        var out = order.map { g -> SeriesVerdict in
            let rs = groups[g]!, c = rs.map(\.judgedChangePct)
            let logs = c.map { log1p($0 / 100) }
            return SeriesVerdict(series: g[0], strategy: g[1], points: rs.count, medianChangePct: Statistics.median(c),
                                 minChangePct: c.min()!, maxChangePct: c.max()!,
                                 slowerPoints: rs.filter { $0.significant && $0.judgedChangePct > 0 }.count,
                                 fasterPoints: rs.filter { $0.significant && $0.judgedChangePct < 0 }.count,
                                 pValue: SignedRank.pValue(logs), significant: false)
        }
        let sig = FalseDiscovery.significant(out.map(\.pValue), q: q)
        for i in out.indices { out[i].significant = sig[i] }
        return out
    }

    /// A run's samples.csv, every row checked field by field: a damaged
    /// row (a number that is not one, a name no run writes) stops the
    /// comparison with the file, line and field (`BenchError.data`, exit
    /// 65), rather than being dropped or read as a point of its own.
    static func samples(in dir: String, option: String) throws -> [[String]: [(rep: Int, ns: Double)]] {
        let path = dir + "/samples.csv"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchError.usage("\(option): \(path) cannot be read; give a run folder written by bench")
        }
        let table = try CSVTable.parse(text, file: path)
        guard keyColumns.allSatisfy(table.columns.contains), table.columns.contains("ns") else {
            throw BenchError.usage("\(option): \(path) is not a samples.csv written by bench (its columns: \(table.columns.joined(separator: ",")))")
        }
        let idx = keyColumns.map { table.columns.firstIndex(of: $0)! }
        let ns = table.columns.firstIndex(of: "ns")!
        let rep = table.columns.firstIndex(of: "rep")
        // The concurrent scenario's series differ by fault path too (runs
        // before it have no such column).
        let faultPath = table.columns.firstIndex(of: "fault_path")
        var out: [[String]: [(rep: Int, ns: Double)]] = [:]
        for (i, r) in table.rows.enumerated() {
            let line = table.lines[i]
            func bad(_ column: String, _ value: String, _ what: String) -> BenchError {
                BenchError.data("\(path):\(line): field '\(column)': '\(value)' is not \(what)")
            }
            for (c, column) in zip(idx, keyColumns) where !SampleField.valid(column, r[c]) {
                throw bad(column, r[c], SampleField.expected(column))
            }
            guard let v = Double(r[ns]), v.isFinite, v >= 0 else { throw bad("ns", r[ns], "a time in ns") }
            var repetition = 0
            if let c = rep {
                guard let n = Int(r[c]), n >= 0 else { throw bad("rep", r[c], "a repetition number") }
                repetition = n
            }
            var key = idx.map { r[$0] }
            if let p = faultPath, !r[p].isEmpty {
                guard FaultPath(rawValue: r[p]) != nil else { throw bad("fault_path", r[p], SampleField.names(FaultPath.allCases.map(\.rawValue))) }
                key[0] += "/" + r[p]
            }
            out[key, default: []].append((repetition, v))
        }
        return out
    }

    /// Significant slowdowns beyond `limitPct` among `strategies` (all when
    /// empty): series whose strategy got slower over its points (what fails
    /// a comparison), and single points that did on their own (reported:
    /// one point's few repetitions move with the machine by more than that
    /// between two runs of the same code).
    ///
    /// `failing`: the regressed series of the strategies that regressed in
    /// two series or more, or in every series they ran in. A change of the
    /// code shows wherever its strategy runs; the machine's drift shows in
    /// the series measured while it lasted (the series run one after
    /// another): two default runs of one commit had slot-walk 26% slower
    /// against the others in the 16 GiB tdp series alone.
    public func regressions(strategies: Set<String>, limitPct: Double) -> (series: [SeriesVerdict], points: [Row], failing: [SeriesVerdict]) {
        let chosen = { (s: String) in strategies.isEmpty || strategies.contains(s) }
        let regressed = series.filter { $0.significant && $0.medianChangePct > limitPct && chosen($0.strategy) }
        let failing = regressed.filter { v in
            let n = regressed.filter { $0.strategy == v.strategy }.count
            return n >= 2 || n == series.filter { $0.strategy == v.strategy }.count
        }
        return (regressed, rows.filter { $0.significant && $0.judgedChangePct > limitPct && chosen($0.strategy) }, failing)
    }

    public var table: CSVTable {
        var t = CSVTable(columns: Self.keyColumns + ["median_a_ns", "median_b_ns", "change_pct", "relative_change_pct", "p_value", "significant"])
        for r in rows {
            t.append(r.key + [Reports.fmt(r.medianA, 1), Reports.fmt(r.medianB, 1), Reports.fmt(r.changePct, 2),
                              r.relative ? Reports.fmt(r.relativeChangePct, 2) : "",
                              String(format: "%.4g", r.pValue), r.significant ? "true" : "false"])
        }
        return t
    }

    /// The series-level verdicts as a CSV.
    public var seriesTable: CSVTable {
        var t = CSVTable(columns: ["series", "strategy", "points", "median_change_pct", "min_change_pct", "max_change_pct",
                                   "slower_points", "faster_points", "p_value", "significant", "verdict"])
        for v in series {
            t.append([v.series, v.strategy, "\(v.points)", Reports.fmt(v.medianChangePct, 2), Reports.fmt(v.minChangePct, 2),
                      Reports.fmt(v.maxChangePct, 2), "\(v.slowerPoints)", "\(v.fasterPoints)", String(format: "%.4g", v.pValue),
                      v.significant ? "true" : "false", v.verdict])
        }
        return t
    }

    /// The terminal summary: counts, the series-level verdicts, then the
    /// significant points, largest first.
    public func summary(limit: Int = 25) -> String {
        let sig = rows.filter(\.significant)
        let slower = sig.filter { $0.judgedChangePct > 0 }.count
        let seriesSlower = series.filter { $0.verdict == "slower" }.count, seriesFaster = series.filter { $0.verdict == "faster" }.count
        var out = "compared \(rows.count) points x strategies: \(rows.count - sig.count) without significant change, "
            + "\(slower) significantly slower, \(sig.count - slower) significantly faster"
        if onlyInA + onlyInB > 0 { out += " (\(onlyInA) only in the first run, \(onlyInB) only in the second)" }
        out += "\nover each series: \(series.count) strategies x series, \(seriesSlower) significantly slower, \(seriesFaster) significantly faster"
        out += "\n\n" + Reports.layout(strategyTable)
        guard !sig.isEmpty else { return out }
        var table = [["series", "dirty pages", "strategy", "first", "second", "change", "relative", "p"]]
        for r in sig.sorted(by: { abs($0.judgedChangePct) > abs($1.judgedChangePct) }).prefix(limit) {
            let k = r.key
            table.append([Self.seriesLabel(k), k[7], r.strategy, Reports.duration(r.medianA), Reports.duration(r.medianB),
                          String(format: "%+.1f%%", r.changePct), r.relative ? String(format: "%+.1f%%", r.relativeChangePct) : "-",
                          String(format: "%.2g", r.pValue)])
        }
        return out + "\n\nsignificant points, largest first:\n" + Reports.layout(table)
            + (sig.count > limit ? "\n(\(sig.count - limit) more in the CSV)" : "")
    }

    /// Per series and strategy: over its points, the median and the range
    /// of the judged change, the points that changed on their own, and the
    /// series-level verdict.
    var strategyTable: [[String]] {
        var table = [["series", "strategy", "points", "median change", "range", "slower", "faster", "p (series)", "verdict"]]
        for v in series {
            table.append([v.series, v.strategy, "\(v.points)", String(format: "%+.1f%%", v.medianChangePct),
                          String(format: "%+.0f%% to %+.0f%%", v.minChangePct, v.maxChangePct),
                          "\(v.slowerPoints)", "\(v.fasterPoints)", String(format: "%.2g", v.pValue), v.verdict])
        }
        return table
    }

    /// "threshold 1GiB shadow×2 even (kvm)" from a key.
    static func seriesLabel(_ k: [String]) -> String {
        "\(k[0]) \(Bytes.pages(Int(k[4]) ?? 0)) \(k[2])\(k[3] == "1" ? "" : "×" + k[3]) \(k[6])\(k[1] == "kvm" ? " (kvm)" : "")"
    }
}

/// What each key column of samples.csv may hold.
enum SampleField {
    static func valid(_ column: String, _ v: String) -> Bool {
        switch column {
        case "scenario": Scenario(rawValue: v) != nil
        case "backend": Backend(rawValue: v) != nil
        case "paging": PagingMode(rawValue: v) != nil
        case "sptes_per_gfn", "slot_pages", "vm_pages": Int(v).map { $0 >= 1 } ?? false
        case "pattern": DirtyPattern(rawValue: v) != nil
        case "dirty_pages": Int(v).map { $0 >= 0 } ?? false
        case "strategy": Strategy(rawValue: v) != nil || KernelStrategy(rawValue: v) != nil
        default: true
        }
    }

    static func expected(_ column: String) -> String {
        switch column {
        case "scenario": names(Scenario.allCases.map(\.rawValue))
        case "backend": names(Backend.allCases.map(\.rawValue))
        case "paging": names(PagingMode.allCases.map(\.rawValue))
        case "sptes_per_gfn", "slot_pages", "vm_pages": "a count of at least 1"
        case "pattern": names(DirtyPattern.allCases.map(\.rawValue))
        case "dirty_pages": "a count"
        case "strategy": names(Strategy.allCases.map(\.rawValue) + KernelStrategy.allCases.map(\.rawValue))
        default: "valid"
        }
    }

    static func names(_ all: [String]) -> String { "one of " + all.joined(separator: ", ") }
}
