import DirtyLogCore
import Foundation

/// One SVG per lifecycle series: each lifecycle's phases as horizontal
/// bars on a log time axis (populate, enable, each iteration's pass and
/// harvest, each disable and the pass after it), a band per lifecycle.
public enum LifecyclePlot {
    static let width = 960.0, left = 250.0, right = 40.0, top = 64.0, bottom = 56.0, barHeight = 11.0

    static let phaseColors: [LifecyclePhase: String] = [
        .populate: "#7f7f7f", .enable: "#d62728", .dirty: "#1f77b4", .get: "#2ca02c", .clear: "#637939",
        .disable: "#ff7f0e", .refault: "#9467bd",
    ]

    /// A bar's label: "iteration 1 dirty", "disable zap".
    static func label(_ r: LifecycleRow) -> String {
        switch r.phase {
        case .populate, .enable: r.phase.rawValue
        case .dirty, .get, .clear:
            "iteration \(r.iteration ?? 0) \(r.phase.rawValue)" + (r.alternative.map { " (\($0.rawValue), same state)" } ?? "")
        case .disable: "disable \(r.disable?.rawValue ?? "")"
        case .refault: "pass after \(r.disable?.rawValue ?? "")"
        }
    }

    public static func render(series key: LifecycleKey, rows: [LifecycleRow]) -> String {
        let rows = rows.filter { $0.ns > 0 }
        guard !rows.isEmpty else { return "" }
        var groups: [String] = []
        for r in rows where !groups.contains(r.lifecycleLabel) { groups.append(r.lifecycleLabel) }
        let height = top + bottom + Double(rows.count) * (barHeight + 3) + Double(groups.count) * 18
        let x0 = floor(log10(rows.map(\.ns).min()!)), x1 = max(x0 + 1, ceil(log10(rows.map(\.ns).max()!)))
        let pw = width - left - right
        func px(_ ns: Double) -> Double { left + (log10(max(ns, 1)) - x0) / (x1 - x0) * pw }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="20" y="26" font-size="16" font-weight="bold">\(SVGPlot.escape(key.label))</text>
        <text x="20" y="44" fill="#555">each phase of each lifecycle (enable policy/harvest strategy), as dirty_log_perf_test times them; log scale</text>

        """
        let plotBottom = height - bottom
        for d in Int(x0)...Int(x1) {
            let x = px(pow(10, Double(d)))
            svg += SVGPlot.line(x, top, x, plotBottom, "#ccc", 1)
            svg += "<text x=\"\(SVGPlot.f(x))\" y=\"\(SVGPlot.f(plotBottom + 16))\" text-anchor=\"middle\">\(SVGPlot.timeLabel(pow(10, Double(d))))</text>\n"
        }
        var y = top
        for g in groups {
            let these = rows.filter { $0.lifecycleLabel == g }
            svg += "<text x=\"20\" y=\"\(SVGPlot.f(y + 12))\" font-weight=\"bold\">\(SVGPlot.escape(g)) (\(these[0].kernel.label))</text>\n"
            y += 18
            for r in these {
                let color = phaseColors[r.phase] ?? "#444"
                svg += "<text x=\"\(SVGPlot.f(left - 6))\" y=\"\(SVGPlot.f(y + barHeight - 2))\" text-anchor=\"end\">\(SVGPlot.escape(label(r)))</text>\n"
                svg += "<rect x=\"\(SVGPlot.f(left))\" y=\"\(SVGPlot.f(y))\" width=\"\(SVGPlot.f(max(1, px(r.ns) - left)))\" height=\"\(SVGPlot.f(barHeight))\" fill=\"\(color)\""
                    + (r.verified ? "" : " stroke=\"#000\" stroke-width=\"2\"") + "/>\n"
                svg += "<text x=\"\(SVGPlot.f(px(r.ns) + 4))\" y=\"\(SVGPlot.f(y + barHeight - 2))\" fill=\"#333\">\(Reports.duration(r.ns))</text>\n"
                y += barHeight + 3
            }
        }
        svg += "<text x=\"\(SVGPlot.f(left + pw / 2))\" y=\"\(SVGPlot.f(height - 16))\" text-anchor=\"middle\" font-size=\"12\">time (log scale)</text>\n"
        return svg + "</svg>\n"
    }
}

/// The lifecycle's section of report.md: a phase table per series and the
/// answers the lifecycle scenario is for, with this run's figures.
public enum LifecycleReport {
    /// Published dirty_log_perf_test figures (TDP MMU) to set this run's beside.
    struct Published {
        var what: String
        var config: String
        var beforeS: Double
        var afterS: Double
        var commit: String
        /// The guest's GiB the figures are divided by: the whole guest for
        /// an ioctl's time (one thread's work over all of it), 1 for a
        /// pass (each vCPU writes its own GiB, all at once).
        var perGiBDivisor: Double
    }

    static let published: [Published] = [
        Published(what: "enable (eager split)", config: "96 vCPUs × 1 GiB, 1 GiB HugeTLB", beforeS: 0.0017, afterS: 1.547,
                  commit: "a3fe5dbd", perGiBDivisor: 96),
        Published(what: "first write pass after enable", config: "same", beforeS: 2.944, afterS: 0.146, commit: "a3fe5dbd", perGiBDivisor: 1),
        Published(what: "iteration 1 clear (split on clear)", config: "same, initially-set", beforeS: 0.0496, afterS: 1.668,
                  commit: "cb00a70b", perGiBDivisor: 96),
        Published(what: "iteration 2 dirty memory", config: "same", beforeS: 2.751, afterS: 0.127, commit: "cb00a70b", perGiBDivisor: 1),
        Published(what: "disable, vCPUs running", config: "416 vCPUs × 1 GiB, 1 GiB HugeTLB, -e", beforeS: 509.77, afterS: 336.52,
                  commit: "aca48556", perGiBDivisor: 416),
        Published(what: "disable, batched TLB flush", config: "64 vCPUs × 4 GiB, 2 MiB HugeTLB, -e", beforeS: 14.33, afterS: 4.79,
                  commit: "35ef80eb", perGiBDivisor: 256),
        Published(what: "enable, initially-set (chunked)", config: "128 GiB guest", beforeS: 0.460, afterS: 0.010,
                  commit: "3c9bd400", perGiBDivisor: 128),
    ]

    public static func section(_ results: RunResults, plots: [LifecycleKey: String]) -> String {
        guard !results.lifecycle.isEmpty || !results.kernelLifecycle.isEmpty else { return "" }
        var md = "\n## The lifecycle\n\n"
        md += "Dirty logging turned on, harvested and turned off on a huge-page guest, each phase timed once as "
        md += "dirty_log_perf_test times it (`lifecycle.txt` has the test's own lines; `lifecycle.csv` every figure). "
        md += "The model's vCPU threads do the guest's passes through its paging structure: each fault pays a VM exit "
        md += "(the exit cost of the concurrent scenario), but no guest memory is written and the model has no host memory: "
        md += "its populate time is the MMU's work only, without the host's page faults (THP allocation and zeroing) that "
        md += "dominate the kernel's. A fresh VM per lifecycle; the TDP MMU's disable policies each start from the same "
        md += "state (the leaves put back between them, untimed).\n"
        for key in results.lifecycleKeys {
            let rows = results.lifecycle.filter { $0.series == key }
            md += "\n### \(key.label)\n\n"
            if let f = plots[key] { md += "![\(key.label)](\(f))\n\n" }
            md += phaseTable(rows)
            md += disableTable(rows)
            md += answers(rows, key: key)
            for r in rows where !r.verified {
                md += "- **\(r.lifecycleLabel) \(LifecyclePlot.label(r)): \(r.violationCount) violation(s)**: \(r.violations.joined(separator: "; "))\n"
            }
        }
        md += kernelSection(results)
        md += publishedSection(results)
        return md
    }

    /// The host kernel's own lifecycle beside the model's.
    static func kernelSection(_ results: RunResults) -> String {
        let rows = results.kernelLifecycle
        guard !rows.isEmpty else { return "" }
        var md = "\n### The kernel beside it\n\n"
        md += "This host's KVM, through /dev/kvm: the guest's memory of the same size and backing, its own enable and disable, "
        md += "in its two modes; one vCPU, stopped while logging is disabled. pages_4k/2m/1g from the VM's binary statistics "
        md += "after each phase. Where the kernel emulates the guest no spte is built, and the figures are its bookkeeping's.\n\n"
        md += "| series | mode | populate | enable | iteration 1 dirty | get 1 | clear 1 | disable | next pass | leaves after disable (4K/2M/1G) |\n"
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
        var keys: [String] = []
        for r in rows where !keys.contains(r.series.label + r.mode.rawValue) { keys.append(r.series.label + r.mode.rawValue) }
        for k in keys {
            let rs = rows.filter { $0.series.label + $0.mode.rawValue == k }
            func d(_ p: LifecyclePhase, _ i: Int? = nil) -> String {
                rs.first { $0.phase == p && (i == nil || $0.iteration == i) }.map { Reports.duration($0.ns) } ?? "-"
            }
            let dis = rs.first { $0.phase == .disable }
            let leaves = dis.flatMap { r in r.pages4K.map { "\($0)/\(r.pages2M ?? 0)/\(r.pages1G ?? 0)" } } ?? "-"
            md += "| \(rs[0].series.label) (kvm)\(rs[0].emulated ? ", emulated" : "") | \(rs[0].mode.rawValue) | \(d(.populate)) | \(d(.enable)) | "
            md += "\(d(.dirty, 1)) | \(d(.get, 1)) | \(d(.clear, 1)) | \(d(.disable)) | \(d(.refault)) | \(leaves) |\n"
        }
        return md
    }

    static func lifecycles(_ rows: [LifecycleRow]) -> [String] {
        var out: [String] = []
        for r in rows where !out.contains(r.lifecycleLabel) { out.append(r.lifecycleLabel) }
        return out
    }

    /// Populate, enable, and each iteration's pass and harvest, per lifecycle.
    static func phaseTable(_ rows: [LifecycleRow]) -> String {
        let iterations = rows.compactMap(\.iteration).max() ?? 0
        let manual = rows.contains { $0.phase == .clear }
        var head = "| lifecycle | kernel | populate | enable | n_used after enable |"
        var rule = "|---|---|---:|---:|---:|"
        for k in 1...max(1, iterations) {
            head += " iteration \(k) dirty | get \(k) |" + (manual ? " clear \(k) |" : "") + " n_used after \(k) |"
            rule += "---:|---:|" + (manual ? "---:|" : "") + "---:|"
        }
        var md = head + "\n" + rule + "\n"
        for l in lifecycles(rows) {
            let these = rows.filter { $0.lifecycleLabel == l }
            func t(_ p: LifecyclePhase, _ k: Int? = nil) -> LifecycleRow? {
                these.first { $0.phase == p && $0.iteration == k && $0.alternative == nil }
            }
            func d(_ r: LifecycleRow?) -> String { r.map { Reports.duration($0.ns) } ?? "-" }
            md += "| \(l) | \(these[0].kernel.label) | \(d(t(.populate))) | \(d(t(.enable))) | \(t(.enable)?.nUsedMMUPages ?? 0) |"
            for k in 1...max(1, iterations) {
                let g = t(.get, k)
                var getCell = d(g)
                if let c = g?.seedChoice { getCell += " (\(c.rawValue))" }
                md += " \(d(t(.dirty, k))) | \(getCell) |" + (manual ? " \(d(t(.clear, k))) |" : "")
                md += " \(t(.dirty, k)?.nUsedMMUPages ?? 0) |"
            }
            md += "\n"
        }
        return md + "\n"
    }

    /// Each disable policy: its time, flushes, faults of the vCPUs running
    /// through it, and the pass after it.
    static func disableTable(_ rows: [LifecycleRow]) -> String {
        let disables = rows.filter { $0.phase == .disable }
        guard !disables.isEmpty else { return "" }
        var md = "| lifecycle | disable | time | TLB flushes | vCPU faults during | tables freed | 2 MiB/1 GiB leaves after | next pass | its faults |\n"
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        for r in disables {
            let next = rows.first { $0.phase == .refault && $0.disable == r.disable && $0.lifecycleLabel == r.lifecycleLabel }
            md += "| \(r.lifecycleLabel) | \(r.disable!.rawValue) (\(r.disable!.commit)) | \(Reports.duration(r.ns)) | \(r.tlbFlushes) | "
            md += "\(r.vcpusRunning ? "\(r.faults)" : "-") | \(r.tablesFreed) | \(r.pages2M)/\(r.pages1G) | "
            md += "\(next.map { Reports.duration($0.ns) } ?? "-") | \(next?.faults ?? 0) |\n"
        }
        return md + "\n"
    }

    static func perGiB(_ ns: Double, pages: Int) -> String {
        Reports.duration(ns / (Double(pages) / 262_144))
    }

    /// The issue's questions, answered from this series' rows.
    static func answers(_ rows: [LifecycleRow], key: LifecycleKey) -> String {
        var md = ""
        let enables = rows.filter { $0.phase == .enable }
        var seen = Set<EnablePolicy>()
        let perPolicy = enables.filter { seen.insert($0.policy).inserted }
        if !perPolicy.isEmpty {
            md += "- *What does enabling cost?* " + perPolicy.map {
                "\($0.policy.rawValue) \(Reports.duration($0.ns)) (\(perGiB($0.ns, pages: key.slotPages)) per GiB)"
            }.joined(separator: ", ") + ".\n"
        }
        func firstDirty(_ p: EnablePolicy) -> LifecycleRow? {
            rows.first { $0.policy == p && $0.phase == .dirty && $0.iteration == 1 }
        }
        if let eager = firstDirty(.eagerSplit) {
            let others = [EnablePolicy.drop, .wrprot].compactMap(firstDirty)
            if !others.isEmpty {
                md += "- *How much longer is the first round's dirty memory time without eager splitting?* " + others.map {
                    String(format: "%@ %@ (%d faults, %d mapping, %d splitting a huge leaf), %.1fx eager-split's %@",
                           $0.policy.rawValue, Reports.duration($0.ns), $0.faults, $0.mappingFaults, $0.splitFaults,
                           $0.ns / eager.ns, Reports.duration(eager.ns))
                }.joined(separator: "; ") + ". The model charges each fault its VM exit and the MMU's work; a fault that maps "
                    + "a page also looks the host page up in the kernel (kvm_faultin_pfn(), get_user_pages()), which the model has no "
                    + "host memory to do: these ratios leave that cost out, where a3fe5dbd's 2.944 s → 0.146 s has it in.\n"
            }
        }
        let seedGets = rows.filter { $0.policy == .drop && $0.strategy == .seed && $0.phase == .get && $0.alternative == nil }
        if !seedGets.isEmpty {
            md += "- *What did the seed's rule choose while n_used_mmu_pages grew?* "
            md += seedGets.map { g -> String in
                let k = g.iteration ?? 0
                let alts = rows.filter { $0.policy == .drop && $0.phase == .get && $0.iteration == k && $0.alternative != nil }
                var s = "iteration \(k): nr_dirty_pages \(g.nrDirtyPages ?? 0) against n_used_mmu_pages "
                s += "\(rows.first { $0.policy == .drop && $0.strategy == .seed && $0.phase == .dirty && $0.iteration == k }?.nUsedMMUPages ?? 0)"
                s += ", chose \(g.seedChoice?.rawValue ?? "?") in \(Reports.duration(g.ns))"
                if let best = alts.min(by: { $0.ns < $1.ns }) {
                    s += "; " + alts.map { "\($0.alternative!.rawValue) \(Reports.duration($0.ns))" }.joined(separator: ", ")
                    s += String(format: ": regret %.0f%% against %@", 100 * max(0, g.ns - best.ns) / best.ns, best.alternative!.rawValue)
                    if let same = alts.first(where: { $0.alternative == g.seedChoice }) {
                        s += String(format: " (the rule's harvest and %@'s are the same walk: %.0f%% apart is the noise of one harvest each)",
                                    same.alternative!.rawValue, 100 * abs(g.ns - same.ns) / min(g.ns, same.ns))
                    }
                }
                return s
            }.joined(separator: "; ") + ". Each branch is timed once on the same state as the rule, the guest's pass run again "
                + "between them (untimed), in an order that turns with the iteration.\n"
        }
        return md
    }

    /// This run's figures per GiB beside the published ones.
    static func publishedSection(_ results: RunResults) -> String {
        var md = "\n### Beside the published figures\n\n"
        md += "dirty_log_perf_test's published figures (TDP MMU hosts, many vCPUs) per GiB of guest for an ioctl's time, per "
        md += "vCPU's GiB for a pass (the vCPUs write their own memory at once), beside this run's tdp series at the same "
        md += "phase, per GiB. The model charges each fault a VM exit but runs at most two CPUs; a host's IPIs reach every "
        md += "running vCPU, the model's its one or few.\n\n"
        md += "| phase | published config | before → after | per GiB | commit | this run (per GiB) |\n|---|---|---:|---:|---|---|\n"
        let tdp = results.lifecycle.filter { $0.series.paging == .tdp }
        func ours(_ p: Published) -> String {
            func per(_ r: LifecycleRow) -> Double { r.ns / (Double(r.series.slotPages) / 262_144) }
            func pair(_ a: LifecycleRow?, _ b: LifecycleRow?, _ la: String, _ lb: String, pass: Bool = false) -> String {
                guard let a, let b else { return "-" }
                let fa = pass ? a.ns : per(a), fb = pass ? b.ns : per(b)
                return "\(la) \(Reports.duration(fa)) → \(lb) \(Reports.duration(fb))"
            }
            func first(_ pol: EnablePolicy, _ ph: LifecyclePhase, _ k: Int? = nil, disable: DisablePolicy? = nil) -> LifecycleRow? {
                tdp.first { $0.policy == pol && $0.phase == ph && (k == nil || $0.iteration == k) && (disable == nil || $0.disable == disable) }
            }
            switch p.commit {
            case "a3fe5dbd" where p.perGiBDivisor > 1: return pair(first(.wrprot, .enable), first(.eagerSplit, .enable), "wrprot", "eager-split")
            case "a3fe5dbd": return pair(first(.wrprot, .dirty, 1), first(.eagerSplit, .dirty, 1), "wrprot", "eager-split", pass: true)
            case "cb00a70b" where p.perGiBDivisor > 1: return pair(first(.wrprot, .get, 1), first(.splitOnClear, .clear, 1), "wrprot get", "split-on-clear clear")
            case "cb00a70b": return pair(first(.wrprot, .dirty, 2), first(.splitOnClear, .dirty, 2), "wrprot", "split-on-clear", pass: true)
            case "35ef80eb": return pair(first(.eagerSplit, .disable, disable: .zap), first(.eagerSplit, .disable, disable: .zapBatched), "zap", "zap-batched")
            case "3c9bd400": return pair(first(.wrprot, .enable), first(.splitOnClear, .enable), "wrprot", "split-on-clear")
            case "aca48556": return pair(first(.eagerSplit, .disable, disable: .zap), first(.eagerSplit, .disable, disable: .recover), "zap", "recover")
            default: return "-"
            }
        }
        for p in published {
            md += "| \(p.what) | \(p.config) | \(Reports.duration(p.beforeS * 1e9)) → \(Reports.duration(p.afterS * 1e9)) | "
            md += "\(Reports.duration(p.beforeS * 1e9 / p.perGiBDivisor)) → \(Reports.duration(p.afterS * 1e9 / p.perGiBDivisor)) | "
            md += "\(p.commit) | \(ours(p)) |\n"
        }
        return md
    }
}
