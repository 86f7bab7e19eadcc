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

/// How much effort each point gets, and the model's knobs.
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
    /// vCPUs writing: guest writes are dealt to them in turn; each has a
    /// dirty ring and a PML buffer.
    public var vcpus = 2
    /// Entries of each vCPU's dirty ring (a power of two).
    public var ringEntries = 65536
    /// rmap-walk and tdp-walk yield mmu_lock every this many gfns.
    public var yieldEveryGFNs = 4096
    /// clear-chunked's KVM_CLEAR_DIRTY_LOG size in pages (a multiple of 64).
    public var clearChunkPages = 1 << 18
    public var patterns = PatternParameters()
    /// Rounds of the migration scenario.
    public var migrationRounds = 10

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
    case thresholdSweep(SweepDensity)
    /// 1, 2, 4, ... up to the slot (dirty-log-perf).
    case powersOfTwo
    /// Exactly these.
    case explicit([Int])
    /// Pre-copy live migration: rounds of shrinking dirty sets (see `MigrationPlan`).
    case migration

    /// Octaves between the coarse counts of a sweep (the kernel's counts follow them).
    public var coarseOctaves: Int {
        if case .thresholdSweep(let density) = self { return density.octavesPerCoarseStep }
        return 1
    }

    /// Whether the plan sweeps from 1 to the slot (rather than listing counts).
    public var isSweep: Bool {
        switch self {
        case .thresholdSweep, .powersOfTwo: true
        default: false
        }
    }

    public func counts(slotPages: Int, nUsedMMUPages: Int) -> [Int] {
        switch self {
        case .thresholdSweep(let density): SweepPlan.thresholdSweep(slotPages: slotPages, nUsedMMUPages: nUsedMMUPages, density: density)
        case .powersOfTwo: SweepPlan.powersOfTwo(slotPages: slotPages)
        case .explicit(let c): Array(Set(c)).sorted()
        case .migration: []
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

    /// The strategies this layout can run: the tdp ones need the
    /// two-dimensional paging structure.
    public var runnable: [Strategy] { strategies.filter { !$0.needsTDP || layout.paging == .tdp } }

    /// The dirty counts the pattern allows.
    func plannedCounts(nUsed: Int) -> [Int] {
        let cap = pattern.maxCount(slotPages: layout.slotPages)
        var c = counts.counts(slotPages: layout.slotPages, nUsedMMUPages: nUsed).filter { $0 <= cap }
        if counts.isSweep, cap < layout.slotPages, c.last != cap { c.append(cap) }
        return c
    }

    /// Whether the crossover of rmap and slot-walk can be refined.
    var refinesCrossover: Bool {
        if case .thresholdSweep = counts { return strategies.contains(.rmap) && strategies.contains(.slotWalk) }
        return false
    }

    /// Planned work, for progress estimates (n_used from the layout).
    public func plannedUnits(settings: MeasureSettings) -> Double {
        let nUsed = layout.expectedShadowPages
        if counts == .migration {
            let total = MigrationPlan(slotPages: layout.slotPages, rounds: settings.migrationRounds).counts.reduce(0, +)
            return Progress.units(dirtyPages: total, nUsedMMUPages: nUsed * settings.migrationRounds) * Double(runnable.count)
        }
        return plannedCounts(nUsed: nUsed).reduce(0) { $0 + Progress.units(dirtyPages: $1, nUsedMMUPages: nUsed) } * Double(runnable.count)
    }
}

/// Pre-copy live migration's dirty rounds: the first copies every page,
/// then each round dirties half as many as the one before, down to the
/// guest's working set (a sixteenth of the slot), drawn hot-set.
public struct MigrationPlan: Sendable {
    public let counts: [Int]

    public init(slotPages: Int, rounds: Int) {
        let floor = max(1, slotPages / 16)
        counts = (0..<max(1, rounds)).map { max(floor, slotPages >> $0) }
    }
}

/// What a model series produced.
public struct ModelOutcome {
    public var rows: [PointRow] = []
    public var skipped: [SkipNote] = []
    /// The adaptive rule's constants, when the series measured them.
    public var adaptiveFit: AdaptiveFit?
}

/// Runs one series on the model: builds its VM, measures the adaptive
/// rule's constants on it when adaptive is among the strategies, measures
/// every point (strategies in a seeded random order within each
/// repetition, grouped by how they log), checks the invariant after every
/// measured protection and the whole invariant after every point, and
/// tears the VM down.
public final class ModelSeries {
    public let spec: ModelSeriesSpec
    public let settings: MeasureSettings
    private let flusher: CacheFlusher?
    private let progress: Progress
    private let status: String
    private let allocations = ThreadAllocationCounter()
    private let slotID = VMLayout.measuredSlotID

    public init(spec: ModelSeriesSpec, settings: MeasureSettings, flusher: CacheFlusher?, progress: Progress, status: String) {
        self.spec = spec
        self.settings = settings
        self.flusher = settings.cache == .cold ? flusher : nil
        self.progress = progress
        self.status = status
    }

    public func run() throws -> ModelOutcome {
        var out = ModelOutcome()
        let layout = spec.layout
        let missing = spec.strategies.filter { !spec.runnable.contains($0) }
        if !missing.isEmpty {
            out.skipped.append(SkipNote(series: spec.key.label, backend: "model", strategy: missing.map(\.rawValue).joined(separator: " "),
                                        reason: "shadow paging has no two-dimensional paging structure to walk"))
        }
        let vm = VirtualMachine(layout: layout, vcpus: settings.vcpus, ringEntries: settings.ringEntries)
        vm.state.pointee.yieldEveryGFNs = settings.yieldEveryGFNs
        vm.state.pointee.clearChunkPages = settings.clearChunkPages
        let nUsed = vm.nUsedMMUPages
        let initial = vm.checkInvariants(slotID: slotID, at: .afterProtection)
        guard initial.ok else {
            throw BenchError.failed("\(spec.key.label): the freshly built VM breaks the invariant: \(initial)")
        }
        if spec.runnable.contains(.adaptive) {
            progress.advance(0, status: "\(status) · measuring the adaptive rule's constants")
            let fit = AdaptiveCalibration(vm: vm, flusher: flusher, seed: settings.seed, sptesPerGFN: layout.paging.sptesPerGFN).fit()
            vm.state.pointee.costModel = fit.model
            out.adaptiveFit = fit
        }
        if spec.counts == .migration {
            out.rows = try measureMigration(vm: vm, nUsed: nUsed)
            return out
        }
        var counts = spec.plannedCounts(nUsed: nUsed)
        for (i, d) in counts.enumerated() {
            out.rows += measure(vm: vm, dirtyPages: d, nUsed: nUsed, status: "\(status) · point \(i + 1)/\(counts.count) (\(d) dirty)")
        }
        if spec.refinesCrossover {
            // The crossover need not lie where the sweep is dense: bisect the
            // bracket (in log space) until it is a quarter octave wide.
            for _ in 0..<4 {
                let pairs = Crossover.pairs(out.rows)
                guard let (lo, hi) = Crossover.bracket(pairs), let mid = SweepPlan.refinement(between: lo, and: hi) else { break }
                counts.append(mid)
                out.rows += measure(vm: vm, dirtyPages: mid, nUsed: nUsed, status: "\(status) · refining crossover (\(mid) dirty)")
                progress.addPlannedWork(Progress.units(dirtyPages: mid, nUsedMMUPages: nUsed) * Double(spec.runnable.count))
            }
        }
        return out
    }

    /// The order of repetition `rep`: strategies grouped by how the slot
    /// logs, so the untimed switches between modes
    /// (`VirtualMachine.beginRound`) are few: the dirty-bit group, whose
    /// switch rewrites every leaf of the slot, at one end, alternating ends
    /// from one repetition to the next so consecutive repetitions share it;
    /// the write-protect groups (bitmap, ring) in between in random order;
    /// strategies shuffled within each group.
    static func sequence(_ strategies: [Strategy], rep: Int, using rng: inout SeededGenerator) -> [Int] {
        var groups: [String: [Int]] = [:]
        for (i, s) in strategies.enumerated() { groups["\(s.protection)-\(s.usesRing)", default: []].append(i) }
        var writeProtect = groups.keys.filter { !$0.hasPrefix("\(Protection.dirtyBit)") }.sorted()
        writeProtect.shuffle(using: &rng)
        let dirtyBit = groups.keys.filter { $0.hasPrefix("\(Protection.dirtyBit)") }
        let keys = rep % 2 == 0 ? writeProtect + dirtyBit : dirtyBit + writeProtect
        return keys.flatMap { k -> [Int] in
            var g = groups[k]!
            g.shuffle(using: &rng)
            return g
        }
    }

    /// All strategies at one dirty count.
    private func measure(vm: VirtualMachine, dirtyPages d: Int, nUsed: Int, status: String) -> [PointRow] {
        let set = spec.pattern.dirtySet(count: d, slotPages: spec.layout.slotPages, seed: settings.seed, parameters: settings.patterns)
        let writes = guestTranslations(vm: vm, pages: set.pages)
        let strategies = spec.runnable
        var r = Record(strategies.count)
        var order = SeededGenerator(seed: settings.seed ^ mix64(UInt64(d)))
        let units = Progress.units(dirtyPages: d, nUsedMMUPages: nUsed) / Double(settings.reps + settings.warmup)

        var rep = 0
        while settings.wantsAnother(done: rep, timed: r.samples.map { $0.reduce(0, +) }) {
            defer { rep += 1 }
            for si in Self.sequence(strategies, rep: rep, using: &order) {
                let s = strategies[si]
                let m = timedHarvest(vm: vm, writes: writes, strategy: s)
                r.add(si, m, timed: rep >= settings.warmup)
                let check = set.pages.withUnsafeBufferPointer { pages in
                    set.bitmap.withUnsafeBufferPointer { expected in
                        vm.checkProtected(slotID: slotID, written: pages, harvested: m.harvest.bitmap, expected: expected.baseAddress!)
                    }
                }
                r.reports[si].merge(check)
                progress.advance(units, status: status)
            }
        }
        // The whole invariant once per point, after the last protection.
        let full = vm.checkInvariants(slotID: slotID, at: .afterProtection)
        return r.rows(series: spec.key, strategies: strategies, dirtyPages: d, nUsed: nUsed, full: full, cache: settings.cache)
    }

    /// Pre-copy migration: each repetition runs every round (guest writes a
    /// hot-set round, harvest) for each strategy; a sample is the sum of the
    /// round harvests' times.
    private func measureMigration(vm: VirtualMachine, nUsed: Int) throws -> [PointRow] {
        let plan = MigrationPlan(slotPages: spec.layout.slotPages, rounds: settings.migrationRounds)
        let rounds = plan.counts.enumerated().map { i, d in
            spec.pattern.dirtySet(count: min(d, spec.pattern.maxCount(slotPages: spec.layout.slotPages)),
                                  slotPages: spec.layout.slotPages, seed: settings.seed &+ UInt64(i) &* 0x51ED, parameters: settings.patterns)
        }
        let writes = rounds.map { guestTranslations(vm: vm, pages: $0.pages) }
        let strategies = spec.runnable
        var r = Record(strategies.count)
        var choices = [[String: Int]](repeating: [:], count: strategies.count)
        var order = SeededGenerator(seed: settings.seed ^ 0x316)
        let total = rounds.reduce(0) { $0 + $1.count }
        let units = Progress.units(dirtyPages: total, nUsedMMUPages: nUsed * rounds.count) / Double(settings.reps + settings.warmup)
        var rep = 0
        while settings.wantsAnother(done: rep, timed: r.samples.map { $0.reduce(0, +) }) {
            defer { rep += 1 }
            for si in Self.sequence(strategies, rep: rep, using: &order) {
                let s = strategies[si]
                var sum = Measurement.zero
                for (i, set) in rounds.enumerated() {
                    let m = timedHarvest(vm: vm, writes: writes[i], strategy: s)
                    sum.accumulate(m)
                    if let c = m.harvest.choice, rep >= settings.warmup { choices[si][c.rawValue, default: 0] += 1 }
                    let check = set.pages.withUnsafeBufferPointer { pages in
                        set.bitmap.withUnsafeBufferPointer { expected in
                            vm.checkProtected(slotID: slotID, written: pages, harvested: m.harvest.bitmap, expected: expected.baseAddress!)
                        }
                    }
                    r.reports[si].merge(check)
                }
                r.add(si, sum, timed: rep >= settings.warmup)
                progress.advance(units, status: "\(status) · \(rounds.count) migration rounds")
            }
        }
        for si in strategies.indices where !choices[si].isEmpty {
            r.chose[si] = choices[si].sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
        }
        let full = vm.checkInvariants(slotID: slotID, at: .afterProtection)
        return r.rows(series: spec.key, strategies: strategies, dirtyPages: total, nUsed: nUsed, full: full, cache: settings.cache)
            .map { var row = $0; row.rounds = rounds.count; return row }
    }

    /// The spte each written page is reached through: under shadow paging a
    /// page is written through one of its address spaces, a fixed seeded
    /// choice per page, like a guest whose TLB holds that translation.
    /// Returned in spte address order: the state a round of writes leaves
    /// does not depend on their order, and writing in memory order keeps the
    /// untimed refault cheap on large VMs.
    private func guestTranslations(vm: VirtualMachine, pages: [UInt32]) -> GuestWrites {
        Self.guestTranslations(vm: vm, pages: pages, sptesPerGFN: spec.layout.paging.sptesPerGFN, seed: settings.seed)
    }

    static func guestTranslations(vm: VirtualMachine, pages: [UInt32], sptesPerGFN: Int, seed: UInt64) -> GuestWrites {
        let k = UInt64(sptesPerGFN)
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

    /// One measurement: the guest writes the pages, its vCPUs taking them
    /// in turn (a vCPU whose dirty ring fills stops, and the ring is
    /// harvested before it goes on: timed apart); caches are evicted; one
    /// harvest is timed. Only the harvest lies between the clock reads; the
    /// allocation counter is read just outside them.
    @inline(never)
    private func timedHarvest(vm: VirtualMachine, writes: GuestWrites, strategy: Strategy) -> Measurement {
        vm.beginRound(slotID: slotID, for: strategy)
        let counter = allocations
        let flusher = flusher
        let slotID = slotID
        return writes.gfns.withUnsafeBufferPointer { gp in
            writes.sptes.withUnsafeBufferPointer { tp in
                vm.withMMU { mmu in
                    let s = mmu.slot(id: slotID)
                    var m = Measurement.zero
                    let vcpus = mmu.vcpus.count
                    var v = 0
                    for i in 0..<gp.count {
                        if mmu.guestWrite(slot: s, gfn: gp[i], sptep: tp[i], vcpu: v) == .ringFull {
                            let a = MonotonicClock.now()
                            _ = mmu.harvest(slot: s, strategy: .ring)
                            m.ringNs &+= MonotonicClock.now() &- a
                            m.ringStops &+= 1
                        }
                        v = v + 1 == vcpus ? 0 : v + 1
                    }
                    flusher?.flush()
                    let a0 = counter.allocatedBytes
                    ca_compiler_barrier()
                    let t0 = MonotonicClock.now()
                    let h = mmu.harvest(slot: s, strategy: strategy)
                    let t1 = MonotonicClock.now()
                    ca_compiler_barrier()
                    let a1 = counter.allocatedBytes
                    m.ns = t1 &- t0
                    m.allocated = a1 &- a0
                    if h.firstPhaseEnd > 0 {
                        m.firstPhaseNs = h.firstPhaseEnd &- t0
                        m.secondPhaseNs = t1 &- h.firstPhaseEnd
                    }
                    m.harvest = h
                    return m
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

/// One timed harvest and what came with it.
struct Measurement {
    var ns: UInt64 = 0
    var allocated: UInt64 = 0
    var firstPhaseNs: UInt64 = 0
    var secondPhaseNs: UInt64 = 0
    var ringNs: UInt64 = 0
    var ringStops = 0
    var harvest: Harvest!

    static var zero: Measurement { Measurement() }

    /// Adds a round's measurement to a migration total.
    mutating func accumulate(_ m: Measurement) {
        ns &+= m.ns
        allocated &+= m.allocated
        firstPhaseNs &+= m.firstPhaseNs
        secondPhaseNs &+= m.secondPhaseNs
        ringNs &+= m.ringNs
        ringStops += m.ringStops
        harvest = m.harvest
    }
}

/// What a point's repetitions gathered, per strategy.
struct Record {
    var samples: [[Double]]
    var counters: [ProtectCounters]
    var chose: [String]
    var allocated: [UInt64]
    var reports: [InvariantReport]
    var phases: [PhaseExtras]

    init(_ n: Int) {
        samples = Array(repeating: [], count: n)
        counters = Array(repeating: ProtectCounters(), count: n)
        chose = Array(repeating: "", count: n)
        allocated = Array(repeating: 0, count: n)
        reports = Array(repeating: InvariantReport(), count: n)
        phases = Array(repeating: PhaseExtras(), count: n)
    }

    mutating func add(_ si: Int, _ m: Measurement, timed: Bool) {
        counters[si] = m.harvest.counters
        if let c = m.harvest.choice { chose[si] = c.rawValue }
        guard timed else { return }
        samples[si].append(Double(m.ns))
        allocated[si] += m.allocated
        if m.firstPhaseNs > 0 {
            phases[si].getNs.append(Double(m.firstPhaseNs))
            phases[si].clearNs.append(Double(m.secondPhaseNs))
        }
        phases[si].ringFullExits += m.ringStops
        phases[si].ringHarvestsDuringWrites += m.ringStops
        phases[si].ringNsDuringWrites.append(Double(m.ringNs))
    }

    func rows(series: SeriesKey, strategies: [Strategy], dirtyPages d: Int, nUsed: Int, full: InvariantReport, cache: CacheMode) -> [PointRow] {
        let seedChoice = Strategy.seedChoice(nrDirtyPages: d, nUsedMMUPages: nUsed).rawValue
        return strategies.indices.map { si in
            var report = reports[si]
            report.merge(full)
            let s = strategies[si]
            var ph = phases[si]
            if !s.usesRing { ph.ringNsDuringWrites = [] }
            return PointRow(
                series: series, backend: "model", nUsedMMUPages: nUsed, dirtyPages: d,
                strategy: s.rawValue, seedChoice: seedChoice, chose: chose[si],
                samples: samples[si], counters: counters[si], allocatedBytesInTimedRegion: allocated[si],
                verified: report.ok, violations: report.ok ? "" : report.description, cache: cache.rawValue,
                phases: ph.getNs.isEmpty && ph.ringNsDuringWrites.isEmpty ? nil : ph
            )
        }
    }
}
