import Foundation

/// `bench compare`: every point and strategy two runs share, the change in
/// median from the first to the second, and whether it is significant.
///
/// This machine is shared: between two runs minutes apart every time can
/// move by tens of percent together, while within a run the strategies of a
/// point, measured interleaved, move together. So a change is judged
/// relative to the point: each repetition of a strategy is divided by the
/// geometric mean of all the point's strategies in the same repetition
/// (same backend), which cancels what the machine did to all of them, and
/// the two runs' relative repetitions are compared with a two-sided
/// Mann-Whitney U test, then Benjamini-Hochberg across all comparisons at a
/// false-discovery rate `q`. A point with a single strategy has nothing to
/// be relative to and is compared raw. Both the raw and the relative change
/// are reported; regressions are judged on the relative one.
public struct RunComparison {
    public struct Row {
        public var key: [String]
        public var strategy: String
        public var backend: String
        public var medianA: Double
        public var medianB: Double
        /// Change of the median of the relative repetitions, percent.
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

    public static let keyColumns = ["scenario", "backend", "paging", "sptes_per_gfn", "slot_pages", "vm_pages", "pattern", "dirty_pages", "strategy"]

    public var runA: String
    public var runB: String
    public var rows: [Row]
    public var onlyInA: Int
    public var onlyInB: Int

    /// Reads both runs' samples.csv and compares.
    public static func load(_ a: String, _ b: String, q: Double) throws -> RunComparison {
        let sa = try samples(in: a, option: "run-a"), sb = try samples(in: b, option: "run-b")
        let ra = relativeSamples(sa), rb = relativeSamples(sb)
        var rows: [Row] = []
        for (key, va) in sa {
            guard let vb = sb[key] else { continue }
            let ma = Statistics.median(va.map(\.ns)), mb = Statistics.median(vb.map(\.ns))
            if let xa = ra[key], let xb = rb[key] {
                let change = (Statistics.median(xb) / Statistics.median(xa) - 1) * 100
                rows.append(Row(key: key, strategy: key[8], backend: key[1], medianA: ma, medianB: mb, relativeChangePct: change,
                                relative: true, pValue: MannWhitney.pValue(xa, xb), significant: false))
            } else {
                rows.append(Row(key: key, strategy: key[8], backend: key[1], medianA: ma, medianB: mb, relativeChangePct: 0,
                                relative: false, pValue: MannWhitney.pValue(va.map(\.ns), vb.map(\.ns)), significant: false))
            }
        }
        rows.sort { $0.key.lexicographicallyPrecedes($1.key) { a, b in
            if let x = Int(a), let y = Int(b) { return x < y }
            return a < b
        } }
        let sig = FalseDiscovery.significant(rows.map(\.pValue), q: q)
        for i in rows.indices { rows[i].significant = sig[i] }
        return RunComparison(runA: a, runB: b, rows: rows,
                             onlyInA: sa.keys.filter { sb[$0] == nil }.count, onlyInB: sb.keys.filter { sa[$0] == nil }.count)
    }

    /// Each repetition over the geometric mean of its point's strategies in
    /// the same repetition; only points with two or more strategies.
    static func relativeSamples(_ all: [[String]: [(rep: Int, ns: Double)]]) -> [[String]: [Double]] {
        var byPoint: [[String]: [[String]]] = [:]
        for key in all.keys { byPoint[Array(key.dropLast()), default: []].append(key) }
        var out: [[String]: [Double]] = [:]
        for (_, keys) in byPoint where keys.count >= 2 {
            var logSum: [Int: (Double, Int)] = [:]
            for k in keys { for s in all[k]! where s.ns > 0 { let e = logSum[s.rep] ?? (0, 0); logSum[s.rep] = (e.0 + log(s.ns), e.1 + 1) } }
            for k in keys {
                out[k] = all[k]!.compactMap { s in
                    guard let e = logSum[s.rep], e.1 == keys.count, s.ns > 0 else { return nil }
                    return s.ns / exp(e.0 / Double(e.1))
                }
            }
        }
        return out
    }

    static func samples(in dir: String, option: String) throws -> [[String]: [(rep: Int, ns: Double)]] {
        let path = dir + "/samples.csv"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchError.usage("\(option): \(path) cannot be read; give a run folder written by bench")
        }
        guard let table = CSVTable.parse(text), keyColumns.allSatisfy(table.columns.contains), table.columns.contains("ns") else {
            throw BenchError.usage("\(option): \(path) is not a samples.csv written by bench")
        }
        let idx = keyColumns.map { table.columns.firstIndex(of: $0)! }
        let ns = table.columns.firstIndex(of: "ns")!
        let rep = table.columns.firstIndex(of: "rep")
        var out: [[String]: [(rep: Int, ns: Double)]] = [:]
        for r in table.rows {
            guard let v = Double(r[ns]) else { continue }
            out[idx.map { r[$0] }, default: []].append((rep.flatMap { Int(r[$0]) } ?? 0, v))
        }
        return out
    }

    /// Significant slowdowns beyond `limitPct` among `strategies` (all when empty).
    public func regressions(strategies: Set<String>, limitPct: Double) -> [Row] {
        rows.filter { $0.significant && $0.judgedChangePct > limitPct && (strategies.isEmpty || strategies.contains($0.strategy)) }
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

    /// The terminal summary: counts, then the significant changes, largest first.
    public func summary(limit: Int = 25) -> String {
        let sig = rows.filter(\.significant)
        let slower = sig.filter { $0.judgedChangePct > 0 }.count
        var out = "compared \(rows.count) points x strategies: \(rows.count - sig.count) without significant change, "
            + "\(slower) significantly slower, \(sig.count - slower) significantly faster"
        if onlyInA + onlyInB > 0 { out += " (\(onlyInA) only in the first run, \(onlyInB) only in the second)" }
        out += "\n\n" + Reports.layout(strategyTable)
        guard !sig.isEmpty else { return out }
        var table = [["series", "dirty pages", "strategy", "first", "second", "change", "relative", "p"]]
        for r in sig.sorted(by: { abs($0.judgedChangePct) > abs($1.judgedChangePct) }).prefix(limit) {
            let k = r.key
            table.append([Self.seriesLabel(k), k[7], r.strategy, Reports.duration(r.medianA), Reports.duration(r.medianB),
                          String(format: "%+.1f%%", r.changePct), r.relative ? String(format: "%+.1f%%", r.relativeChangePct) : "-",
                          String(format: "%.2g", r.pValue)])
        }
        return out + "\n\nsignificant changes, largest first:\n" + Reports.layout(table)
            + (sig.count > limit ? "\n(\(sig.count - limit) more in the CSV)" : "")
    }

    /// Per series and strategy: over its points, the median and the range
    /// of the judged change, and how many points changed significantly.
    var strategyTable: [[String]] {
        var groups: [[String]: [Row]] = [:]
        var order: [[String]] = []
        for r in rows {
            let g = [Self.seriesLabel(r.key), r.strategy]
            if groups[g] == nil { order.append(g) }
            groups[g, default: []].append(r)
        }
        var table = [["series", "strategy", "points", "median change", "range", "slower", "faster"]]
        for g in order {
            let rs = groups[g]!, c = rs.map(\.judgedChangePct)
            table.append(g + ["\(rs.count)", String(format: "%+.1f%%", Statistics.median(c)),
                              String(format: "%+.0f%% to %+.0f%%", c.min()!, c.max()!),
                              "\(rs.filter { $0.significant && $0.judgedChangePct > 0 }.count)",
                              "\(rs.filter { $0.significant && $0.judgedChangePct < 0 }.count)"])
        }
        return table
    }

    /// "threshold 1GiB shadow×2 even (kvm)" from a key.
    static func seriesLabel(_ k: [String]) -> String {
        "\(k[0]) \(Bytes.pages(Int(k[4]) ?? 0)) \(k[2])\(k[3] == "1" ? "" : "×" + k[3]) \(k[6])\(k[1] == "kvm" ? " (kvm)" : "")"
    }
}
