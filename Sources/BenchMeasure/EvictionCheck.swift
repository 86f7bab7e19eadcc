import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// `bench check-eviction`: does the cheap eviction leave a harvest as cold
/// as the full one? On sample points, each strategy's harvest is measured
/// after a footprint eviction and after a full 2×LLC read, the two
/// interleaved repetition by repetition through the one timed path, and
/// their medians compared.
public struct EvictionCheck {
    public var layouts: [VMLayout]
    public var patterns: [DirtyPattern]
    public var counts: [Int]
    public var strategies: [Strategy]
    public var reps: Int
    public var seed: UInt64
    /// Beyond this relative difference of the medians, and significant, a
    /// sample differs (the run-to-run shift of one strategy here is larger).
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

        /// Samples whose medians differ by more than the tolerance with p < 0.01.
        public var differing: [Sample] { samples.filter { abs($0.ratio - 1) > tolerance && $0.pValue < 0.01 } }

        public var table: CSVTable {
            var t = CSVTable(columns: ["paging", "sptes_per_gfn", "slot_pages", "pattern", "dirty_pages", "strategy", "reps",
                                       "footprint_median_ns", "full_median_ns", "full_read_bytes", "ratio", "p_value", "differs"])
            for s in samples {
                t.append([s.layout.paging.mode.rawValue, "\(s.layout.paging.sptesPerGFN)", "\(s.layout.slotPages)", s.pattern.rawValue, "\(s.dirtyPages)",
                          s.strategy.rawValue, "\(s.full.count)", String(format: "%.1f", s.footprintMedian), String(format: "%.1f", s.fullMedian),
                          "\(fullReadBytes)", String(format: "%.3f", s.ratio), String(format: "%.3g", s.pValue),
                          abs(s.ratio - 1) > tolerance && s.pValue < 0.01 ? "true" : "false"])
            }
            return t
        }

        /// For the terminal: per layout and count, each strategy's ratio.
        public var summary: String {
            var out = [["series", "dirty", "strategy", "after footprint", "after full read", "ratio", "p"]]
            for s in samples {
                out.append(["\(s.layout.paging) \(Bytes.pages(s.layout.slotPages)) \(s.pattern.rawValue)", "\(s.dirtyPages)", s.strategy.rawValue,
                            Reports.duration(s.footprintMedian), Reports.duration(s.fullMedian),
                            String(format: "%.2f", s.ratio) + (abs(s.ratio - 1) > tolerance && s.pValue < 0.01 ? " *" : ""),
                            String(format: "%.2g", s.pValue)])
            }
            let ratios = samples.map(\.ratio).sorted()
            let d = differing.count
            return Reports.layout(out) + "\n\n" + String(format: "%d samples: median ratio %.3f (range %.2f to %.2f); %d differ by more than %.0f%% with p < 0.01.\n",
                                                         samples.count, Statistics.quantile(sorted: ratios, 0.5), ratios.first ?? 0, ratios.last ?? 0,
                                                         d, tolerance * 100)
                + String(format: "Eviction per harvest: %@ for the footprint, %@ for the full read of %@.",
                         Reports.duration(footprintEvictionNs), Reports.duration(fullEvictionNs), Bytes.format(fullReadBytes) as NSString)
        }
    }

    /// Runs the check; `progress` says which sample is under way.
    public func run(progress: Progress) throws -> Result {
        var samples: [Sample] = []
        var violations = 0
        let cheap = CacheEviction(forcing: .footprint), full = CacheEviction(forcing: .full, fullReadBytes: fullReadBytes)
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
