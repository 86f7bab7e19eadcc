import DirtyLogCore
import Foundation

/// report.md's "What the guest pays": the concurrent scenario's series
/// read against the questions the seed's argument raised, with numbers.
enum GuestReport {
    static func section(_ rows: [PointRow]) -> String {
        let concurrent = rows.filter { $0.series.scenario == .concurrent && $0.guest != nil }
        guard !concurrent.isEmpty else { return "" }
        let keys = Array(Set(concurrent.map(\.series))).sorted()
        var md = "\n## What the guest pays\n\n"
        md += "vCPU threads (\(concurrent[0].guest!.vcpus), pinned beside the harvesting thread) write their share of the round's pages "
        md += "again and again while the harvest runs; a write through a cached writable translation goes through, one to a "
        md += "write-protected spte faults. mmu_lock is the lock of each strategy's era (a ticket lock for the seed's strategies, "
        md += "a queued lock for masked, the TDP MMU's rwlock for tdp-walk and tdp-masked). Per strategy at the fewest and the "
        md += "most dirty pages: the harvest's time with them running; its holds of mmu_lock (how many, the longest); the "
        md += "vCPUs' write faults begun during it (how many, p50 / p99 / max latency) and their wait for the lock; the dirty "
        md += "memory time (their pass over their pages after it, each faulting again); the cache pollution (re-reading "
        md += "\(Bytes.format(concurrent[0].guest!.workingSetBytes)) of guest memory after the harvest minus after an idle interval as long, "
        md += "in lines missed); the seed's race (writes to a guest page table its shadower had returned believing write-protected).\n\n"
        for key in keys {
            let these = concurrent.filter { $0.series == key }
            let counts = Set(these.map(\.dirtyPages)).sorted()
            guard let lo = counts.first, let hi = counts.last else { continue }
            md += "### \(key.label)\n\n"
            md += "| strategy | dirty | harvest | holds | longest hold | faults | fault p50 | p99 | max | lock wait | dirty memory | pollution | race |\n"
            md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            for d in Set([lo, hi]).sorted() {
                for r in these.filter({ $0.dirtyPages == d }).sorted(by: { $0.strategy < $1.strategy }) {
                    let g = r.guest!
                    func t(_ v: Double?) -> String { v.map { Reports.duration($0) } ?? "-" }
                    md += "| \(r.strategy.name) | \(d) | \(t(r.summary.median)) | \(Int(g.lockHolds)) | \(t(g.lockHoldMaxNs)) | "
                    md += "\(Int(g.windowFaults)) | \(t(g.faultP50Ns)) | \(t(g.faultP99Ns)) | \(t(g.faultMaxNs)) | \(t(g.lockWaitNs)) | "
                    md += "\(t(g.dirtyMemoryNs)) | \(String(format: "%.0f", g.pollutionLines)) | \(g.raceViolations) |\n"
                }
            }
            md += "\n"
        }
        md += answers(concurrent, keys: keys)
        return md
    }

    /// The row of `strategy` at `dirty` in `key`.
    static func row(_ rows: [PointRow], _ key: SeriesKey, _ s: Strategy, _ dirty: Int) -> PointRow? {
        rows.first { $0.series == key && $0.strategy == .model(s) && $0.dirtyPages == dirty }
    }

    static func answers(_ rows: [PointRow], keys: [SeriesKey]) -> String {
        var md = ""
        func t(_ v: Double?) -> String { v.map { Reports.duration($0) } ?? "-" }
        func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.1fx", a / max(b, 1e-9)) }

        // The seed's lock: per-gfn holds against slot-walk's one, and the fix.
        var lock: [String] = []
        for key in keys where key.faultPath == .locked {
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            for d in [counts.first!, counts.last!] {
                guard let rm = row(rows, key, .rmap, d), let walk = row(rows, key, .slotWalk, d) else { continue }
                var line = "\(key.label), \(d) dirty pages: rmap's longest hold \(t(rm.guest!.lockHoldMaxNs)) against slot-walk's "
                line += "\(t(walk.guest!.lockHoldMaxNs)); the vCPUs' fault p99 \(t(rm.guest!.faultP99Ns)) against \(t(walk.guest!.faultP99Ns)), "
                line += "while rmap's harvest took \(t(rm.summary.median)) against \(t(walk.summary.median))"
                if let fixed = row(rows, key, .rmapFixed, d) {
                    line += "; 6dbf79e7's one hold: longest \(t(fixed.guest!.lockHoldMaxNs)), fault p99 \(t(fixed.guest!.faultP99Ns)), "
                    line += "harvest \(t(fixed.summary.median)) (\(ratio(fixed.summary.median, rm.summary.median)) rmap's)"
                }
                lock.append(line + ".")
            }
        }
        if !lock.isEmpty {
            md += "**Did the seed's fine-grained lock shorten vCPU stalls, and what did 6dbf79e7's fix cost?** With faults under "
            md += "mmu_lock, as at the seed:\n\n" + lock.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        }

        // The race.
        let racy = rows.filter { ($0.guest?.raceViolations ?? 0) > 0 }
        let shadowed = rows.filter { ($0.guest?.shadowings ?? 0) > 0 }
        if !shadowed.isEmpty {
            md += "**The seed's race.** Under shadow paging each vCPU shadows one of its pages as a guest page table per pass "
            md += "(\(shadowed.reduce(0) { $0 + $1.guest!.shadowings }) times in all). "
            if racy.isEmpty {
                md += "No write went through a translation its shadower believed write-protected in this run: the window is "
                md += "narrow; the test suite widens it and catches rmap every time, rmap-fixed never.\n\n"
            } else {
                let groups = Dictionary(grouping: racy, by: \.strategy.name)
                md += groups.keys.sorted().map { name in
                    let rs = groups[name]!
                    return "\(name): \(rs.reduce(0) { $0 + $1.guest!.raceViolations }) such writes at \(rs.count) point(s) ("
                        + rs.map { "\($0.series.label) at \($0.dirtyPages)" }.joined(separator: "; ") + ")"
                }.joined(separator: "; ")
                md += ". Every other strategy: none.\n\n"
            }
        }

        // Pollution, against a noise floor: the strategies whose work follows
        // the dirty pages touch next to nothing at the fewest, so what they
        // show there is what the measurement shows with nothing to see; and
        // a harvest cannot make the guest's re-read faster, so a negative
        // figure anywhere in the series is noise of that size too.
        var pollution: [String] = []
        for key in keys {
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            let lo = counts.first!, hi = counts.last!
            guard let walkLo = row(rows, key, .slotWalk, lo)?.guest, let walkHi = row(rows, key, .slotWalk, hi)?.guest,
                  let rmapHi = row(rows, key, .rmap, hi)?.guest else { continue }
            let quiet = [Strategy.rmap, .rmapFixed, .masked, .tdpMasked].compactMap { row(rows, key, $0, lo)?.guest?.pollutionLines }
            let negative = rows.filter { $0.series == key }.compactMap { $0.guest?.pollutionLines }.filter { $0 < 0 }
            let floor = (quiet + negative).map(abs).max() ?? 0
            let lines = Double(walkHi.workingSetBytes / 64)
            func pct(_ v: Double) -> String { String(format: "%.0f lines (%.0f%%)", v, 100 * v / lines) }
            // Beyond the noise: twice the floor, and at least 1% of the working set.
            let beyond = walkHi.pollutionLines - rmapHi.pollutionLines > max(2 * floor, lines / 100)
            pollution.append("\(key.label): slot-walk \(pct(walkLo.pollutionLines)) at \(lo) dirty pages and \(pct(walkHi.pollutionLines)) at \(hi), "
                + "rmap \(pct(rmapHi.pollutionLines)) at \(hi); noise floor ±\(pct(floor)): "
                + (beyond ? "**slot-walk more, beyond the noise**" : "no difference beyond the noise"))
        }
        if !pollution.isEmpty {
            // How much of the working set the cache keeps across an idle
            // interval at all: pollution can only take away what is kept.
            let g = rows.map { $0.guest! }
            let cold = Statistics.median(g.map(\.coldReadNs)), warm = Statistics.median(g.map(\.warmReadNs))
            let idle = Statistics.median(g.map(\.idleRereadNs))
            let kept = cold > warm ? max(0, min(1, (cold - idle) / (cold - warm))) : 0
            md += String(format: "**Does slot-walk pollute the guest's cache more than rmap?** First, what there is to pollute: the vCPUs "
                + "read their working set in %@ from memory and %@ from cache, and in %@ after an idle interval as long as a harvest "
                + "(medians over the run): the cache keeps about %.0f%% of it across the interval%@. ",
                Reports.duration(cold) as NSString, Reports.duration(warm) as NSString, Reports.duration(idle) as NSString, 100 * kept,
                kept < 0.25 ? " on this machine, so no harvest can take much away and the figures below are mostly noise" : "")
            md += "Lines of the guest's \(Bytes.format(rows[0].guest!.workingSetBytes)) "
            md += "working set re-read from memory after the harvest beyond those after the idle interval, as a share of "
            md += "its lines. The vCPUs run on other cores than the harvest, so only a shared cache can be polluted. The noise "
            md += "floor is the largest such figure, either sign, of rmap, rmap-fixed, masked and tdp-masked at the fewest dirty "
            md += "pages, harvests that touch a few kilobytes, and of any negative figure in the series (a harvest cannot make the "
            md += "re-read faster); slot-walk's excess over rmap counts when it is over twice that and 1% "
            md += "of the working set:\n\n" + pollution.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        }

        // The fast path.
        var fast: [String] = []
        for key in keys where key.faultPath == .fast {
            var locked = key
            locked.faultPath = .locked
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            let d = counts.last!
            for s in [Strategy.slotWalk, .masked] {
                guard let f = row(rows, key, s, d), let l = row(rows, locked, s, d) else { continue }
                fast.append("\(key.label.replacingOccurrences(of: " fast faults", with: "")), \(s.rawValue) at \(d) dirty pages: fault p50 "
                    + "\(t(l.guest!.faultP50Ns)) locked, \(t(f.guest!.faultP50Ns)) fast; p99 \(t(l.guest!.faultP99Ns)) and \(t(f.guest!.faultP99Ns)); "
                    + "dirty memory time \(t(l.guest!.dirtyMemoryNs)) and \(t(f.guest!.dirtyMemoryNs))")
            }
        }
        if !fast.isEmpty {
            md += "**What does the fast fault path change?** c7ba5b48 fixes a fault on an spte write-protected only for dirty "
            md += "logging by cmpxchg, without mmu_lock, so a vCPU no longer waits for a harvest's hold:\n\n"
            md += fast.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        }
        return md
    }
}
