import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// `bench check-eviction`: does the footprint eviction leave a harvest at
/// least as cold as a full read of the caches? On sample points, each
/// strategy's harvest is measured after a footprint eviction and after a
/// full 2×LLC read, the two interleaved repetition by repetition through
/// the one timed path, and their medians compared. A harvest faster after
/// the footprint ("warmer") found lines cached that the read had evicted:
/// lines the flushes missed, or the page-table lines of its page walks,
/// which no flush from user space reaches (a read of 600 MiB evicts them;
/// on 2026-12-07 that made 11 of 240 harvests of 1 to 256 pages 1-4 µs
/// faster after the flushes, their code's 4 KiB pages among those walked):
/// exit 1, for a look. One slower after it ("colder") means the read left
/// part of its data cached, as a read of a last-level cache shared with
/// other tenants does: reported, not a failure.
public struct EvictionCheck {
    public var layouts: [VMLayout]
    public var patterns: [DirtyPattern]
    public var counts: [Int]
    public var strategies: [Strategy]
    public var reps: Int
    public var seed: UInt64
    /// Beyond this relative difference of the medians, and significant, a
    /// sample is warmer or colder (the run-to-run shift of one strategy here
    /// is larger).
    public var tolerance = 0.10
    /// What the full read reads: twice the last-level cache by default; more
    /// shows whether that read leaves part of a harvest's data cached.
    public var fullReadBytes = CacheGeometry.fullEvictionBytes

    public init(layouts: [VMLayout], patterns: [DirtyPattern] = [.even, .random], counts: [Int], strategies: [Strategy], reps: Int, seed: UInt64) {
        self.layouts = layouts
        self.patterns = patterns
        self.counts = counts
        self.strategies = strategies
        self.reps = reps
        self.seed = seed
    }

    public struct Sample: Sendable {
        public var layout: VMLayout
        public var pattern: DirtyPattern
        public var dirtyPages: Int
        public var strategy: Strategy
        public var footprint: [Double]
        public var full: [Double]
        public var footprintMedian: Double { Statistics.median(footprint) }
        public var fullMedian: Double { Statistics.median(full) }
        public var ratio: Double { footprintMedian / fullMedian }
        public var pValue: Double { MannWhitney.pValue(footprint, full) }

        /// "warmer", "colder" or "same" after the footprint eviction than
        /// after the full read, beyond `tolerance` with p < 0.01.
        public func verdict(tolerance: Double) -> String {
            guard abs(ratio - 1) > tolerance && pValue < 0.01 else { return "same" }
            return ratio < 1 ? "warmer" : "colder"
        }
    }

    public struct Result: Sendable {
        public var samples: [Sample]
        public var tolerance: Double
        /// The evictions' cost per harvest, each mode's median.
        public var footprintEvictionNs: Double
        public var fullEvictionNs: Double
        /// What the full read read.
        public var fullReadBytes: Int
        public var violations: Int

        /// Samples faster after the footprint eviction, beyond the tolerance
        /// with p < 0.01: the flushes left some of their data cached.
        public var warmer: [Sample] { samples.filter { $0.verdict(tolerance: tolerance) == "warmer" } }
        /// Samples slower after it: the full read left some of theirs cached.
        public var colder: [Sample] { samples.filter { $0.verdict(tolerance: tolerance) == "colder" } }

        public var table: CSVTable {
            var t = CSVTable(columns: ["paging", "sptes_per_gfn", "slot_pages", "pattern", "dirty_pages", "strategy", "reps",
                                       "footprint_median_ns", "full_median_ns", "full_read_bytes", "ratio", "p_value", "after_footprint"])
            for s in samples {
                t.append([s.layout.paging.mode.rawValue, "\(s.layout.paging.sptesPerGFN)", "\(s.layout.slotPages)", s.pattern.rawValue, "\(s.dirtyPages)",
                          s.strategy.rawValue, "\(s.full.count)", String(format: "%.1f", s.footprintMedian), String(format: "%.1f", s.fullMedian),
                          "\(fullReadBytes)", String(format: "%.3f", s.ratio), String(format: "%.3g", s.pValue),
                          s.verdict(tolerance: tolerance)])
            }
            return t
        }

        /// For the terminal: per layout and count, each strategy's ratio.
        public var summary: String {
            var out = [["series", "dirty", "strategy", "after footprint", "after full read", "ratio", "p"]]
            for s in samples {
                out.append(["\(s.layout.paging) \(Bytes.pages(s.layout.slotPages)) \(s.pattern.rawValue)", "\(s.dirtyPages)", s.strategy.rawValue,
                            Reports.duration(s.footprintMedian), Reports.duration(s.fullMedian),
                            String(format: "%.2f", s.ratio) + ["warmer": " warmer", "colder": " colder"][s.verdict(tolerance: tolerance), default: ""],
                            String(format: "%.2g", s.pValue)])
            }
            let ratios = samples.map(\.ratio).sorted()
            return Reports.layout(out) + "\n\n" + String(format: "%d samples: median ratio %.3f (range %.2f to %.2f); beyond %.0f%% with p < 0.01, "
                                                         + "%d warmer after the footprint (lines its flushes missed, or its page walks' own: exit 1), "
                                                         + "%d colder (the full read left lines cached).\n",
                                                         samples.count, Statistics.quantile(sorted: ratios, 0.5), ratios.first ?? 0, ratios.last ?? 0,
                                                         tolerance * 100, warmer.count, colder.count)
                + String(format: "Eviction per harvest: %@ for the footprint, %@ for the full read of %@.",
                         Reports.duration(footprintEvictionNs), Reports.duration(fullEvictionNs), Bytes.format(fullReadBytes) as NSString)
        }
    }

    /// Runs the check; `progress` says which sample is under way.
    public func run(progress: Progress) throws -> Result {
        var samples: [Sample] = []
        var violations = 0
        let cheap = CacheEviction(mode: .footprint), full = CacheEviction(mode: .full, fullReadBytes: fullReadBytes)
        var cheapTimer = TimedHarvest(eviction: cheap), fullTimer = TimedHarvest(eviction: full)
        var order = SeededGenerator(seed: seed ^ 0xE71C)
        progress.plan(layouts.map { ("check-eviction \($0.paging) \(Bytes.pages($0.slotPages))", counts.count * patterns.count, 1) })
        for (li, layout) in layouts.enumerated() {
            progress.beginSeries(li)
            progress.point("building the VM")
            let vm = VirtualMachine(layout: layout, vcpus: 2, ringEntries: 65536)
            let runnable = strategies.filter(layout.runs)
            try vm.withMMU { mmu in
                var backend = ModelBackend(vm: vm, mmu: mmu)
                for pattern in patterns {
                    for d in counts where d <= pattern.maxCount(slotPages: layout.slotPages) {
                        progress.point("\(pattern.rawValue), \(d) dirty")
                        let set = pattern.dirtySet(count: d, slotPages: layout.slotPages, seed: seed)
                        let round = GuestRound(vm: vm, set: set, sptesPerGFN: layout.paging.sptesPerGFN, seed: seed)
                        var a = [[Double]](repeating: [], count: runnable.count), b = a
                        for rep in 0..<(reps + 1) {
                            for si in runnable.indices.shuffled(using: &order) {
                                let firstCheap = (rep + si) % 2 == 0
                                for useCheap in [firstCheap, !firstCheap] {
                                    let m = useCheap ? try cheapTimer.measure(&backend, runnable[si], round)
                                        : try fullTimer.measure(&backend, runnable[si], round)
                                    violations += m.verdict.count
                                    if rep > 0 { if useCheap { a[si].append(Double(m.ns)) } else { b[si].append(Double(m.ns)) } }
                                }
                            }
                        }
                        for si in runnable.indices {
                            samples.append(Sample(layout: layout, pattern: pattern, dirtyPages: d, strategy: runnable[si], footprint: a[si], full: b[si]))
                        }
                        progress.pointDone()
                    }
                }
            }
        }
        progress.finish()
        let perEviction = { (t: TimedHarvest) in t.phases[.eviction] * 1e9 / Double(max(1, samples.count * (reps + 1))) }
        return Result(samples: samples, tolerance: tolerance, footprintEvictionNs: perEviction(cheapTimer),
                      fullEvictionNs: perEviction(fullTimer), fullReadBytes: fullReadBytes, violations: violations)
    }
}
