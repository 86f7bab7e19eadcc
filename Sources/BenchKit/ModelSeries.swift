import CAtomics
import Foundation
import ShadowMMU

/// Whether each timed protection starts with cold caches.
public enum CacheMode: String, CaseIterable, Sendable {
    /// A buffer twice the last-level cache is read before each timed protection.
    case cold
    /// Nothing is evicted: the data the guest writes just touched stays cached.
    case warm
}

/// How much effort each point gets.
public struct MeasureSettings: Sendable, Hashable {
    /// Timed repetitions per point and strategy.
    public var reps: Int = 11
    /// Untimed repetitions before them.
    public var warmup: Int = 1
    public var cache: CacheMode = .cold
    /// Seeds random patterns, shadow-paging layouts and strategy order.
    public var seed: UInt64 = 1
    /// More repetitions, past `reps`, until every strategy's timed
    /// repetitions add up to this many nanoseconds (at most ten times `reps`).
    public var minTimeNs: UInt64 = 0

    public init(reps: Int = 11, warmup: Int = 1, cache: CacheMode = .cold, seed: UInt64 = 1, minTimeNs: UInt64 = 0) {
        self.reps = reps
        self.warmup = warmup
        self.cache = cache
        self.seed = seed
        self.minTimeNs = minTimeNs
    }

    /// Whether a point needs another repetition, given how many it has had
    /// and each strategy's timed total so far.
    func wantsAnother(done: Int, timed: [Double]) -> Bool {
        if done < warmup + reps { return true }
        guard minTimeNs > 0, done < warmup + 10 * reps else { return false }
        return timed.contains { $0 < Double(minTimeNs) }
    }
}

/// Which dirty counts a series measures.
public enum CountPlan: Sendable, Hashable {
    /// `SweepPlan.thresholdSweep`, then refined around the crossover.
    case thresholdSweep
    /// 1, 2, 4, ... up to the slot (dirty-log-perf).
    case powersOfTwo
    /// Exactly these.
    case explicit([Int])

    public func counts(slotPages: Int, nUsedMMUPages: Int) -> [Int] {
        switch self {
        case .thresholdSweep: SweepPlan.thresholdSweep(slotPages: slotPages, nUsedMMUPages: nUsedMMUPages)
        case .powersOfTwo: SweepPlan.powersOfTwo(slotPages: slotPages)
        case .explicit(let c): Array(Set(c)).sorted()
        }
    }
}

/// One series on the model: a VM layout, a dirty pattern, the counts, the strategies.
public struct ModelSeriesSpec: Sendable, Hashable {
    public var scenario: String
    public var layout: VMLayout
    public var pattern: DirtyPattern
    public var counts: CountPlan
    public var strategies: [Strategy]

    public init(scenario: String, layout: VMLayout, pattern: DirtyPattern, counts: CountPlan, strategies: [Strategy]) {
        self.scenario = scenario
        self.layout = layout
        self.pattern = pattern
        self.counts = counts
        self.strategies = strategies
    }

    public var key: SeriesKey {
        SeriesKey(scenario: scenario, paging: layout.paging.name, sptesPerGFN: layout.paging.sptesPerGFN,
                  slotPages: layout.slotPages, vmPages: layout.vmPages, pattern: pattern.rawValue)
    }

    /// Whether the crossover of rmap and slot-walk can be refined.
    var refinesCrossover: Bool {
        counts == .thresholdSweep && strategies.contains(.rmap) && strategies.contains(.slotWalk)
    }

    /// Planned work, for progress estimates (n_used from the layout).
    public var plannedUnits: Double {
        let nUsed = layout.expectedShadowPages
        return counts.counts(slotPages: layout.slotPages, nUsedMMUPages: nUsed).reduce(0) {
            $0 + Progress.units(dirtyPages: $1, nUsedMMUPages: nUsed)
        } * Double(strategies.count)
    }
}

/// Runs one series on the model: builds its VM, measures every point
/// (strategies interleaved in a seeded random order within each
/// repetition), checks the invariant after every measured protection and the
/// whole invariant after every point, and tears the VM down.
public final class ModelSeries {
    public let spec: ModelSeriesSpec
    public let settings: MeasureSettings
    private let flusher: CacheFlusher?
    private let progress: Progress
    private let status: String
    private let allocations = ThreadAllocationCounter()

    public init(spec: ModelSeriesSpec, settings: MeasureSettings, flusher: CacheFlusher?, progress: Progress, status: String) {
        self.spec = spec
        self.settings = settings
        self.flusher = settings.cache == .cold ? flusher : nil
        self.progress = progress
        self.status = status
    }

    public func run() throws -> [PointRow] {
        let layout = spec.layout
        let vm = VirtualMachine(layout: layout)
        let nUsed = vm.nUsedMMUPages
        let initial = vm.checkInvariants(slotID: VMLayout.measuredSlotID, at: .afterProtection)
        guard initial.ok else {
            throw BenchError.failed("\(spec.key.label): the freshly built VM breaks the invariant: \(initial)")
        }
        var rows: [PointRow] = []
        var counts = spec.counts.counts(slotPages: layout.slotPages, nUsedMMUPages: nUsed)
        for (i, d) in counts.enumerated() {
            rows += measure(vm: vm, dirtyPages: d, nUsed: nUsed, status: "\(status) · point \(i + 1)/\(counts.count) (\(d) dirty)")
        }
        if spec.refinesCrossover {
            // The crossover need not lie where the sweep is dense: bisect the
            // bracket (in log space) until it is a quarter octave wide.
            for _ in 0..<4 {
                let pairs = Self.pairs(rows)
                guard let (lo, hi) = Crossover.bracket(pairs), let mid = SweepPlan.refinement(between: lo, and: hi) else { break }
                counts.append(mid)
                rows += measure(vm: vm, dirtyPages: mid, nUsed: nUsed, status: "\(status) · refining crossover (\(mid) dirty)")
                progress.addPlannedWork(Progress.units(dirtyPages: mid, nUsedMMUPages: nUsed) * Double(spec.strategies.count))
            }
        }
        return rows
    }

    static func pairs(_ rows: [PointRow]) -> [Crossover.Pair] {
        var rmap: [Int: Double] = [:], walk: [Int: Double] = [:]
        for r in rows {
            if r.strategy == Strategy.rmap.rawValue { rmap[r.dirtyPages] = r.summary.median }
            if r.strategy == Strategy.slotWalk.rawValue { walk[r.dirtyPages] = r.summary.median }
        }
        return rmap.keys.compactMap { d in walk[d].map { Crossover.Pair(dirtyPages: d, rmap: rmap[d]!, slotWalk: $0) } }
    }

    /// All strategies at one dirty count.
    private func measure(vm: VirtualMachine, dirtyPages d: Int, nUsed: Int, status: String) -> [PointRow] {
        let slotID = VMLayout.measuredSlotID
        let set = spec.pattern.dirtySet(count: d, slotPages: spec.layout.slotPages, seed: settings.seed)
        let writes = guestTranslations(vm: vm, pages: set.pages)
        let strategies = spec.strategies
        var samples = [[Double]](repeating: [], count: strategies.count)
        var counters = [ProtectCounters](repeating: ProtectCounters(), count: strategies.count)
        var chose = [String](repeating: "", count: strategies.count)
        var allocated = [UInt64](repeating: 0, count: strategies.count)
        var reports = [InvariantReport](repeating: InvariantReport(), count: strategies.count)
        var order = SeededGenerator(seed: settings.seed ^ mix64(UInt64(d)))
        let units = Progress.units(dirtyPages: d, nUsedMMUPages: nUsed) / Double(settings.reps + settings.warmup)

        var rep = 0
        while settings.wantsAnother(done: rep, timed: samples.map { $0.reduce(0, +) }) {
            defer { rep += 1 }
            var sequence = Array(strategies.indices)
            sequence.shuffle(using: &order)
            for si in sequence {
                let (ns, harvest, bytes) = timedHarvest(vm: vm, slotID: slotID, writes: writes, strategy: strategies[si])
                if rep >= settings.warmup {
                    samples[si].append(Double(ns))
                    allocated[si] += bytes
                }
                counters[si] = harvest.counters
                chose[si] = harvest.choice?.rawValue ?? ""
                let check = set.pages.withUnsafeBufferPointer { pages in
                    set.bitmap.withUnsafeBufferPointer { expected in
                        vm.checkProtected(slotID: slotID, written: pages, harvested: harvest.bitmap, expected: expected.baseAddress!)
                    }
                }
                reports[si].merge(check)
                progress.advance(units, status: status)
            }
        }
        // The whole invariant once per point, after the last protection.
        let full = vm.checkInvariants(slotID: slotID, at: .afterProtection)
        let seedChoice = Strategy.seedChoice(nrDirtyPages: d, nUsedMMUPages: nUsed).rawValue
        return strategies.indices.map { si in
            var report = reports[si]
            report.merge(full)
            return PointRow(
                series: spec.key, backend: "model", nUsedMMUPages: nUsed, dirtyPages: d,
                strategy: strategies[si].rawValue, seedChoice: seedChoice, chose: chose[si],
                samples: samples[si], counters: counters[si], allocatedBytesInTimedRegion: allocated[si],
                verified: report.ok, violations: report.ok ? "" : report.description, cache: settings.cache.rawValue
            )
        }
    }

    /// The spte each written page is reached through: under shadow paging a
    /// page is written through one of its address spaces, a fixed seeded
    /// choice per page, like a guest whose TLB holds that translation.
    /// Returned in spte address order: the state a round of writes leaves
    /// does not depend on their order, and writing in memory order keeps the
    /// untimed refault cheap on large VMs.
    private func guestTranslations(vm: VirtualMachine, pages: [UInt32]) -> GuestWrites {
        let k = UInt64(spec.layout.paging.sptesPerGFN)
        let seed = settings.seed
        var pairs: [(sptep: UnsafeMutablePointer<UInt64>, gfn: UInt64)] = vm.withMMU { mmu in
            let s = mmu.slot(id: VMLayout.measuredSlotID)
            return pages.map { off in
                let gfn = s.baseGFN + UInt64(off)
                return (mmu.spte(gfn: gfn, mapping: Int(mix64(gfn ^ seed) % k), slot: s)!, gfn)
            }
        }
        pairs.sort { $0.sptep < $1.sptep }
        return GuestWrites(sptes: pairs.map(\.sptep), gfns: pairs.map(\.gfn))
    }

    /// One measurement: the guest writes the pages (faulting on each, since
    /// the last harvest protected them), caches are evicted, and one
    /// KVM_GET_DIRTY_LOG is timed. Only the harvest lies between the clock
    /// reads; the allocation counter is read just outside them.
    @inline(never)
    private func timedHarvest(vm: VirtualMachine, slotID: Int, writes: GuestWrites,
                              strategy: Strategy) -> (UInt64, Harvest, UInt64) {
        let counter = allocations
        let flusher = flusher
        return writes.gfns.withUnsafeBufferPointer { gp in
            writes.sptes.withUnsafeBufferPointer { tp in
                vm.withMMU { mmu in
                    let s = mmu.slot(id: slotID)
                    for i in 0..<gp.count {
                        mmu.guestWrite(slot: s, gfn: gp[i], sptep: tp[i])
                    }
                    flusher?.flush()
                    let a0 = counter.allocatedBytes
                    ca_compiler_barrier()
                    let t0 = MonotonicClock.now()
                    let h = mmu.getDirtyLog(slot: s, strategy: strategy)
                    let t1 = MonotonicClock.now()
                    ca_compiler_barrier()
                    let a1 = counter.allocatedBytes
                    return (t1 &- t0, h, a1 &- a0)
                }
            }
        }
    }
}

/// A round of guest writes, resolved: the spte each write goes through and its gfn.
struct GuestWrites {
    var sptes: [UnsafeMutablePointer<UInt64>]
    var gfns: [UInt64]
}
