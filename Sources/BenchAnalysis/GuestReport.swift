import DirtyLogCore
import Foundation

/// report.md's "What the guest pays": the concurrent scenario's series
/// read against the questions the seed's argument raised, with numbers.
enum GuestReport {
    static func section(_ results: RunResults) -> String {
        let rows = results.rows.filter { $0.series.scenario == .concurrent && $0.guest != nil }
        guard !rows.isEmpty else { return "" }
        let keys = Array(Set(rows.map(\.series))).sorted()
        let g0 = rows[0].guest!
        var md = "\n## What the guest pays\n\n"
        md += "vCPU threads (\(g0.vcpus), \(g0.pinned ? "each pinned to a CPU of its own, the harvest on CPU 0" : "not pinned: the OS refused")) "
        md += "write their share of the round's pages again and again while the harvest runs. A write through a cached writable "
        md += "translation goes through; one to a write-protected spte faults. "
        if let c = results.exitCosts {
            md += "A fault is timed from the VM exit to the re-entry and includes both: "
            md += "\(Reports.duration(c.exitNs)) for the exit and entry together (\(c.exitSource)); a TLB flush sends each vCPU in guest "
            md += "mode an IPI that reaches it \(Reports.duration(c.ipiNs)) later (\(c.ipiSource)) and waits for its exit. "
            if let host = c.hostExitNs {
                md += "This host's KVM, measured: \(Reports.duration(host)) per exit (\(c.hostExitNote ?? "")). "
            } else if let note = c.hostExitNote {
                md += "This host's KVM could not be measured (\(note)). "
            }
        }
        md += "Each strategy runs in its kernel's era: \(KernelEra.linux3_3to3_5.label) for slot-walk, rmap and rmap-fixed (mmu_lock a "
        md += "ticket spinlock, every fault under it, no fast path); \(KernelEra.linux4_2to5_11.label) for masked (a queued spinlock, "
        md += "c7ba5b48's fast path, the flush after unlocking as 198c74f4 placed it); \(KernelEra.linux5_14on.label) for the TDP MMU's "
        md += "tdp-walk and tdp-masked (an rwlock: faults and tdp-walk, which is the enable-logging path, under its read side, "
        md += "tdp-masked under its write side). The fast path runs only where the era had it and only on direct sptes (two-dimensional "
        md += "paging). The timed repetitions run with no lock statistics; each is followed by an instrumented one, whose holds of "
        md += "mmu_lock and the vCPUs' waits for it are the lock columns, its harvest time kept apart. Counts are totals over the "
        md += "repetitions they come from; percentiles are pooled over exactly those. The relog time runs from the harvest's "
        md += "start until every vCPU has written every page of its share once after the harvest protected it: the harvest "
        md += "and the writes through it (not dirty_log_perf_test's dirty memory time, a pass of the vCPUs alone).\n\n"
        for key in keys {
            let these = rows.filter { $0.series == key }
            let counts = Set(these.map(\.dirtyPages)).sorted()
            guard let lo = counts.first, let hi = counts.last else { continue }
            md += "### \(key.label)\n\n"
            md += "| strategy | era | dirty | reps | harvest | instrumented | holds | longest | read holds | longest read | faults | fault p50 | p99 | max | wait p99 | relog | race |\n"
            md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            for d in Set([lo, hi]).sorted() {
                for r in these.filter({ $0.dirtyPages == d }).sorted(by: { $0.strategy < $1.strategy }) {
                    let g = r.guest!
                    md += "| \(r.strategy.name) | \(r.eraLabel) | \(d) | \(r.samples.count) | \(t(r.summary.median)) | "
                    md += "\(t(g.instrumentedHarvestNs)) | \(g.exclusiveHolds.count) | \(t(g.exclusiveHolds.maxNs)) | \(g.sharedHolds.count) | "
                    md += "\(t(g.sharedHolds.maxNs)) | \(g.faultCount) | \(t(g.faultP50Ns)) | \(t(g.faultP99Ns)) | \(t(g.faultMaxNs)) | "
                    md += "\(t(g.lockWaitP99Ns)) | \(t(g.relogNs)) | \(g.raceViolations) |\n"
                }
            }
            md += "\n"
        }
        md += answers(rows, keys: keys)
        md += pollution(results.pollution)
        return md
    }

    /// "12.3us", or "-" where there is no figure (no fault, no hold).
    static func t(_ v: Double?) -> String { v.map { Reports.duration($0) } ?? "-" }

    /// The row of `strategy` at `dirty` in `key`.
    static func row(_ rows: [PointRow], _ key: SeriesKey, _ s: Strategy, _ dirty: Int) -> PointRow? {
        rows.first { $0.series == key && $0.strategy == .model(s) && $0.dirtyPages == dirty }
    }

    static func answers(_ rows: [PointRow], keys: [SeriesKey]) -> String {
        var md = ""
        func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.2fx", a / max(b, 1e-9)) }

        // The seed's lock: per-gfn holds against slot-walk's one, and the fix.
        var lock: [String] = []
        for key in keys where key.faultPath == .locked {
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            for d in [counts.first!, counts.last!] {
                guard let rm = row(rows, key, .rmap, d), let walk = row(rows, key, .slotWalk, d) else { continue }
                let a = rm.guest!, b = walk.guest!
                var line = "\(key.label), \(d) dirty pages: rmap held mmu_lock \(a.exclusiveHolds.count / max(1, a.instrumentedReps)) times a "
                line += "harvest, the longest \(t(a.exclusiveHolds.maxNs)), against slot-walk's one hold of \(t(b.exclusiveHolds.maxNs)); "
                line += "the vCPUs' fault p99 \(t(a.faultP99Ns)) (\(a.faultCount) faults) against \(t(b.faultP99Ns)) (\(b.faultCount)), "
                line += "while rmap's harvest took \(t(rm.summary.median)) against \(t(walk.summary.median))"
                if let fixed = row(rows, key, .rmapFixed, d), let f = fixed.guest {
                    line += "; 6dbf79e7's one hold: longest \(t(f.exclusiveHolds.maxNs)), fault p99 \(t(f.faultP99Ns)), "
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
            md += "**The seed's race.** Under shadow paging each vCPU takes a fault per pass that shadows one of its pages as a "
            md += "guest page table (\(shadowed.reduce(0) { $0 + $1.guest!.shadowings }) times in all), timed with the other faults. "
            if racy.isEmpty {
                md += "No write went through a translation its shadower believed write-protected in this run: the window is "
                md += "narrow; the test suite widens it before every flush and catches rmap every time, the others never.\n\n"
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

        // What the lock statistics cost the harvest that records them.
        var instrumentation: [String] = []
        for key in keys where key.faultPath == .locked {
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            guard let hi = counts.last, let rm = row(rows, key, .rmap, hi), let inst = rm.guest?.instrumentedHarvestNs else { continue }
            instrumentation.append("\(key.label), rmap at \(hi) dirty pages: \(t(rm.summary.median)) plain, \(t(inst)) with its "
                + "\(rm.guest!.exclusiveHolds.count / max(1, rm.guest!.instrumentedReps)) holds recorded (\(ratio(inst, rm.summary.median)))")
        }
        if !instrumentation.isEmpty {
            md += "**What recording the lock costs.** The instrumented repetitions read the time-stamp counter at every acquire and "
            md += "release; their harvest times are not the reported ones:\n\n" + instrumentation.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        }

        // The fast path.
        var fast: [String] = []
        for key in keys where key.faultPath == .fast {
            var locked = key
            locked.faultPath = .locked
            let counts = Set(rows.filter { $0.series == key }.map(\.dirtyPages)).sorted()
            guard let d = counts.last else { continue }
            for s in [Strategy.masked, .tdpMasked, .tdpWalk] {
                guard let f = row(rows, key, s, d)?.guest, let l = row(rows, locked, s, d)?.guest else { continue }
                fast.append("\(key.label.replacingOccurrences(of: " fast faults", with: "")), \(s.rawValue) at \(d) dirty pages: fault p50 "
                    + "\(t(l.faultP50Ns)) locked, \(t(f.faultP50Ns)) fast (\(f.fastFaults) of \(f.faultCount) faults fixed without "
                    + "the lock); p99 \(t(l.faultP99Ns)) and \(t(f.faultP99Ns)); relog time \(t(l.relogNs)) and \(t(f.relogNs))")
            }
        }
        if !fast.isEmpty {
            md += "**What does the fast fault path change?** c7ba5b48 fixes a fault on a direct spte write-protected only for dirty "
            md += "logging by cmpxchg, without mmu_lock. Where its era had it (not 3.3, so not for the seed's strategies; under "
            md += "shadow paging never, its sptes being indirect):\n\n"
            md += fast.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        }
        return md
    }

    /// The cache pollution, from pollution.csv.
    static func pollution(_ rows: [PollutionRow]) -> String {
        guard !rows.isEmpty else { return "" }
        let verdicts = Reports.pollutionVerdicts(rows)
        let pairs = rows.map(\.pairs)
        var md = "**Does slot-walk pollute the guest's cache more than rmap?** At the fewest dirty pages of each series, "
        md += "\(pairs.min()!)\(pairs.max()! > pairs.min()! ? " to \(pairs.max()!)" : "") pairs per strategy, working set and CPU: "
        md += "the guest's working set read warm, then the harvest (or an idle interval as long), then re-read, timed; the halves' order "
        md += "and the strategies' alternate, balanced in blocks of four, until slot-walk's excess over rmap is known within "
        md += "±\(Reports.duration(3_000)) (95%) or the working set's time is spent. The excess is the re-read after the harvest less "
        md += "the one after the idle interval, in ns and in lines re-read from memory (the excess over what a line costs from memory "
        md += "rather than from cache, measured on that CPU), median and 95% interval. `same`: the re-read on the harvesting CPU, as a "
        md += "vCPU scheduled after the migration thread; `other`: on the vCPU thread's CPU, where only the shared last-level cache is "
        md += "at stake. slot-walk against rmap is the difference of their excesses, pair by pair. The verdict reads the difference's "
        md += String(format: "%.2f%% interval", 100 * PollutionRow.verdictConfidence(verdicts: verdicts))
        md += verdicts > 1 ? ", so that its \(verdicts) verdicts together are wrong by chance at most 5% of the time (Bonferroni).\n\n" : ".\n\n"
        md += "| series | CPU | working set | slot-walk excess | rmap excess | slot-walk over rmap | pairs | verdict |\n|---|---|---:|---:|---:|---:|---:|---|\n"
        for w in rows where w.strategy == .slotWalk {
            let rmap = rows.first { $0.series == w.series && $0.guestCPU == w.guestCPU && $0.workingSetBytes == w.workingSetBytes && $0.strategy == .rmap }
            func cell(_ r: PollutionRow?, _ i: MedianInterval?) -> String {
                guard let r, let i else { return "-" }
                let l = r.asLines(i)
                return "\(ns(i)) (\(l.map { String(format: "%.0f lines [%.0f, %.0f]", $0.median, $0.low, $0.high) } ?? "-"))"
            }
            let verdict: String
            switch w.verdictInterval(verdicts: verdicts)?.sign {
            case .some(1): verdict = "**more, beyond the interval**"
            case .some(-1): verdict = "less, beyond the interval"
            case .some(0): verdict = "no difference beyond the interval"
            default: verdict = "-"
            }
            md += "| \(w.series.label.replacingOccurrences(of: " locked faults", with: "")) | \(w.guestCPU.rawValue) | \(Bytes.format(w.workingSetBytes)) | "
            md += "\(cell(w, w.excess)) | \(cell(rmap, rmap?.excess)) | \(cell(w, w.overRmap)) | \(w.pairs) (\(w.stop?.rawValue ?? "-")) | \(verdict) |\n"
        }
        return md + "\n"
    }

    /// "3.2us [1.1us, 4.0us]"
    static func ns(_ i: MedianInterval) -> String {
        "\(signed(i.median)) [\(signed(i.low)), \(signed(i.high))]"
    }

    static func signed(_ v: Double) -> String { (v < 0 ? "-" : "") + Reports.duration(abs(v)) }
}
