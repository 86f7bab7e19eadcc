import DirtyLogCore
import Foundation

/// What a run prints when it ends: tables for the terminal.
extension Reports {
    /// The terminal summary: one line per series (empty without model series).
    public static func summary(_ rows: [CrossoverRow]) -> String {
        guard !rows.isEmpty else { return "" }
        let header = ["series", "n_used", "crossover", "×n_used", "rmap speedup@min", "slot-walk speedup@max", "seed regret max"]
        var table: [[String]] = [header]
        for r in rows {
            table.append([
                r.series.label, "\(r.nUsedMMUPages)",
                r.crossoverDirtyPages.map { String(format: "%.0f", $0) } ?? "none",
                r.crossoverPerUsed.map { String(format: "%.1f", $0) } ?? "-",
                String(format: "%.1fx at %d", r.rmapSpeedupAtMin, r.minDirtyPages),
                String(format: "%.1fx at %d", r.slotWalkSpeedupAtMax, r.maxDirtyPages),
                String(format: "%.0f%% at %d", r.seedRegretMaxPct, r.seedRegretMaxAt),
            ])
        }
        return layout(table)
    }

    /// The successors, one line per series: the best of the KVM_GET_DIRTY_LOG
    /// family by range, and what the seed's rule and adaptive cost against it.
    public static func successorSummary(_ rows: [CrossoverRow]) -> String {
        let with = rows.filter { $0.successors != nil }
        guard !with.isEmpty else { return "" }
        var table = [["series", "best (KVM_GET_DIRTY_LOG family) by dirty pages", "seed regret max", "adaptive regret max", "mean",
                      "noise floor max", "mean"]]
        for r in with {
            let s = r.successors!
            table.append([r.series.label, s.bestByRange, s.seed.map(regretAt) ?? "-", s.adaptive.map(regretAt) ?? "-",
                          s.adaptive.map { String(format: "%.1f%%", $0.meanPct) } ?? "-",
                          s.replicate.map(regretAt) ?? "-", s.replicate.map { String(format: "%.1f%%", $0.meanPct) } ?? "-"])
        }
        return layout(table)
    }

    /// "94% at 16384"
    static func regretAt(_ r: RegretStats) -> String { String(format: "%.0f%% at %d", r.maxPct, r.maxAt) }

    /// The kernel next to the model, one line per kernel series: kvm-get at
    /// the fewest and most dirty pages it measured, and the model's
    /// counterpart over it there.
    public static func kernelSummary(_ rows: [CrossoverRow]) -> String {
        let withKernel = rows.filter { $0.kernel != nil }
        guard !withKernel.isEmpty else { return "" }
        var table = [["series (kernel beside model)", "guest", "kvm-get@min", "kvm-get@max",
                      "\(Strategy.counterpartOfKernelGet.rawValue)/kvm-get@min", "@max"]]
        for r in withKernel {
            let k = r.kernel!
            table.append([r.series.label, k.guestMode,
                          "\(duration(k.kvmGetAtMin)) at \(k.minDirtyPages)", "\(duration(k.kvmGetAtMax)) at \(k.maxDirtyPages)",
                          k.modelOverKernelAtMin.map { String(format: "%.2fx", $0) } ?? "-",
                          k.modelOverKernelAtMax.map { String(format: "%.2fx", $0) } ?? "-"])
        }
        return layout(table)
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
