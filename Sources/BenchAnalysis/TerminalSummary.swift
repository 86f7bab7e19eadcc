import DirtyLogCore
import Foundation

/// What a run prints when it ends: tables for the terminal.
extension Reports {
    /// The widest line the terminal summary prints.
    public static let terminalColumns = 100

    /// The terminal summary of a run, within `terminalColumns`: one line
    /// per series, grouped by scenario: the rmap/slot-walk crossover (and
    /// its multiple of n_used_mmu_pages), the seed's and the adaptive
    /// rule's worst regret, and a last word: the kernel beside the model,
    /// the guest's worst fault under the harvests, the lifecycle's enable
    /// and disable; then the run's precision in a line. The detail is in
    /// report.md.
    public static func terminal(_ results: RunResults) -> String {
        var table: [[String]] = [["series", "crossover", "seed regret", "adaptive", "±10%", "beside it"]]
        var lastScenario = ""
        func group(_ name: String) {
            guard name != lastScenario else { return }
            lastScenario = name
            table.append([name + ":", "", "", "", "", ""])
        }
        let precision = SeriesPrecision.of(results)
        for r in results.crossover {
            group(r.series.scenario.rawValue)
            var crossover = r.crossoverDirtyPages.map { String(format: "%.0f", $0) } ?? "-"
            if let lo = r.crossoverLow, let hi = r.crossoverHigh { crossover += String(format: " [%.0f-%.0f]", lo, hi) }
            let seed = r.successors?.seed.map(shortRegret) ?? String(format: "%.0f%%@%d", r.seedRegretMaxPct, r.seedRegretMaxAt)
            let adaptive = r.successors?.adaptive.map(shortRegret) ?? "-"
            var note = ""
            if let k = r.kernel {
                note = "kvm-get \(duration(k.kvmGetAtMin))-\(duration(k.kvmGetAtMax))"
                if let a = k.modelOverKernelAtMin, let b = k.modelOverKernelAtMax { note += String(format: ", model %.2f-%.2fx", a, b) }
            }
            if r.series.scenario == .concurrent { note = guestVerdict(results.rows.filter { $0.series == r.series }) }
            // The share of the rows near the crossover and n_used whose
            // median is known within 10%.
            let known = precision.first { $0.series == r.series }.map { $0.nearRows > 0 ? String(format: "%.0f%%", 100 * $0.nearShare) : "-" } ?? "-"
            table.append(["  " + shortLabel(r.series), crossover, r.series.scenario == .concurrent ? "-" : seed,
                          r.series.scenario == .concurrent ? "-" : adaptive, known, note])
        }
        for key in results.lifecycleKeys {
            group("lifecycle")
            let rows = results.lifecycle.filter { $0.series == key }
            var seed = "-"
            if let g = rows.first(where: { $0.strategy == .seed && $0.phase == .get && $0.alternative == nil && $0.iteration == 1 }) {
                let alts = rows.filter { $0.phase == .get && $0.iteration == 1 && $0.alternative != nil }
                if let best = alts.min(by: { $0.ns < $1.ns }) {
                    seed = String(format: "%.0f%%@it1", 100 * max(0, g.ns - best.ns) / best.ns)
                }
            }
            func phase(_ p: EnablePolicy, _ ph: LifecyclePhase, _ d: DisablePolicy? = nil) -> String? {
                rows.first { $0.policy == p && $0.phase == ph && $0.alternative == nil && (d == nil || $0.disable == d) }.map { duration($0.ns) }
            }
            var note: [String] = []
            if let w = phase(.wrprot, .enable), let e = phase(.eagerSplit, .enable) { note.append("enable \(w)→\(e) split") }
            if let z = phase(.eagerSplit, .disable, .zap), let b = phase(.eagerSplit, .disable, .zapBatched) { note.append("zap \(z)→\(b)") }
            let label = "\(Bytes.pages(key.slotPages)) \(key.paging.rawValue)\(key.sptesPerGFN > 1 ? "×\(key.sptesPerGFN)" : "") \(key.backing.rawValue)"
            table.append(["  " + label, "-", seed, "-", "-", note.joined(separator: ", ")])
        }
        guard table.count > 1 else { return "" }
        // The last column gets what the others leave; a note too long for it
        // keeps its first whole items (the rest is in report.md).
        var fixed = 2 * 5
        for c in 0..<5 {
            var w = 0
            for row in table { w = max(w, row[c].count) }
            fixed += w
        }
        for i in table.indices { table[i][5] = fitNote(table[i][5], width: terminalColumns - fixed) }
        return fit(layout(table, leftLast: true), columns: terminalColumns)
            + (SeriesPrecision.line(precision).map { "\n\n" + wrap($0) } ?? "")
    }

    /// "94% at 16384"
    static func regretAt(_ r: RegretStats) -> String { String(format: "%.0f%% at %d", r.maxPct, r.maxAt) }

    /// "823%@515"
    static func shortRegret(_ r: RegretStats) -> String { String(format: "%.0f%%@%d", r.maxPct, r.maxAt) }

    /// "1GiB tdp even", "16GiB shadow×2 even locked": the series without its scenario.
    static func shortLabel(_ k: SeriesKey) -> String {
        var s = "\(Bytes.pages(k.slotPages)) \(k.paging.rawValue)"
        if k.sptesPerGFN > 1 { s += "×\(k.sptesPerGFN)" }
        if k.vmPages != k.slotPages { s += " in \(Bytes.pages(k.vmPages))" }
        s += " \(k.pattern.rawValue)"
        if let f = k.faultPath { s += " \(f.rawValue)" }
        return s
    }

    /// A concurrent series' verdict on the guest: the strategies whose
    /// harvests gave the vCPUs the worst and the best fault p99.
    static func guestVerdict(_ rows: [PointRow]) -> String {
        var worst: [MeasuredStrategy: Double] = [:]
        for r in rows { if let p = r.guest?.faultP99Ns { worst[r.strategy] = max(worst[r.strategy] ?? 0, p) } }
        guard let hi = worst.max(by: { $0.value < $1.value }), let lo = worst.min(by: { $0.value < $1.value }) else { return "" }
        return "fault p99 \(lo.key.name) \(duration(lo.value)), \(hi.key.name) \(duration(hi.value))"
    }

    /// A note of comma-separated items within `width`: as many whole
    /// items as fit, then " …" where some were left out (report.md has
    /// them); never an item, and so never a figure, cut in two.
    static func fitNote(_ note: String, width: Int) -> String {
        guard note.count > width else { return note }
        let items = note.components(separatedBy: ", ")
        var kept = ""
        for item in items {
            let next = kept.isEmpty ? item : kept + ", " + item
            guard next.count + 2 <= width else { break }
            kept = next
        }
        return kept.isEmpty ? (width >= 1 ? "…" : "") : kept + " …"
    }

    /// Lines longer than `columns` (which the notes' fitting leaves none
    /// of) cut at their last space within it, with "…".
    static func fit(_ text: String, columns: Int) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.count > columns else { return String(line) }
            let head = line.prefix(columns - 1)
            let cut = head.lastIndex(of: " ").map { head[..<$0] } ?? head
            return String(cut) + "…"
        }.joined(separator: "\n")
    }

    /// `text` wrapped at word boundaries within `columns`, continuation lines indented.
    public static func wrap(_ text: String, columns: Int = terminalColumns, indent: String = "  ") -> String {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            let add = line.isEmpty ? String(word) : line + " " + word
            if add.count > columns && !line.isEmpty {
                lines.append(line)
                line = indent + word
            } else {
                line = add
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines.joined(separator: "\n")
    }
    /// dirty-log-perf's question, per dirty count: the kernel's harvest times
    /// and the model's, side by side, for every series of `scenario`.
    public static func sideBySide(_ rows: [PointRow], scenario: Scenario) -> String {
        var out: [String] = []
        let keys = Set(rows.filter { $0.series.scenario == scenario }.map(\.series)).sorted()
        for key in keys {
            let these = rows.filter { $0.series == key }
            var byCount: [Int: [MeasuredStrategy: Double]] = [:]
            for r in these { byCount[r.dirtyPages, default: [:]][r.strategy] = r.roundSummary.median }
            let present = Set(these.map(\.strategy)).sorted()
            var table = [["dirty pages"] + present.map(\.name) + ["\(Strategy.counterpartOfKernelGet.rawValue)/kvm-get"]]
            for d in byCount.keys.sorted() {
                let m = byCount[d]!
                let ratio = m[.model(Strategy.counterpartOfKernelGet)].flatMap { a in m[.kernel(.get)].map { a / $0 } }
                table.append(["\(d)"] + present.map { m[$0].map(duration) ?? "-" } + [ratio.map { String(format: "%.2fx", $0) } ?? "-"])
            }
            out.append("\(key.label): median per harvest (kvm = the real kernel, model = this model; rings with the harvests full rings forced)\n" + layout(table))
        }
        return out.joined(separator: "\n\n")
    }
}
