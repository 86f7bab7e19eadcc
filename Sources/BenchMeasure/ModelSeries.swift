import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// One series on the model: a VM layout, a dirty pattern, the counts, the strategies.
public struct ModelSeriesSpec: Sendable, Hashable {
    public var scenario: Scenario
    public var layout: VMLayout
    public var pattern: DirtyPattern
    public var counts: CountPlan
    public var strategies: [Strategy]
    /// The concurrent scenario: how the vCPUs' write faults are handled.
    public var faultPath: FaultPath?
    /// The concurrent scenario: whether the series also measures the cache
    /// pollution of slot-walk and rmap at its fewest dirty pages
    /// (`PollutionProbe`; once per layout, since it does not depend on the
    /// fault path).
    public var measuresPollution = false

    public init(scenario: Scenario, layout: VMLayout, pattern: DirtyPattern, counts: CountPlan, strategies: [Strategy],
                faultPath: FaultPath? = nil, measuresPollution: Bool = false) {
        self.scenario = scenario
        self.layout = layout
        self.pattern = pattern
        self.counts = counts
        self.strategies = strategies
        self.faultPath = faultPath
        self.measuresPollution = measuresPollution
    }

    public var key: SeriesKey {
        SeriesKey(scenario: scenario, paging: layout.paging.mode, sptesPerGFN: layout.paging.sptesPerGFN,
                  slotPages: layout.slotPages, vmPages: layout.vmPages, pattern: pattern, faultPath: faultPath)
    }

    /// The strategies this layout can run: the tdp ones need the
    /// two-dimensional paging structure; vCPUs run through the
    /// write-protecting ones only; with fast faults, only those of an era
    /// that had the fast path.
    public var runnable: [Strategy] {
        strategies.filter { layout.runs($0) && skipReason($0) == nil }
    }

    /// Why the concurrent scenario does not run `s` in this series, or nil.
    func skipReason(_ s: Strategy) -> String? {
        guard scenario == .concurrent else { return nil }
        if !s.runsConcurrently { return "vCPUs run through the write-protecting KVM_GET_DIRTY_LOG strategies only" }
        if faultPath == .fast && !s.era.hasFastPageFault {
            return "\(s.era.label), \(s.rawValue)'s kernel, had no fast page fault (c7ba5b48, 3.6): its faults are the locked series'"
        }
        return nil
    }

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

    /// Points the series plans (migration: one), for progress.
    public var plannedPoints: Int {
        counts == .migration ? 1 : plannedCounts(nUsed: layout.expectedShadowPages).count + (refinesCrossover ? 2 : 0)
    }
}

/// What a model series produced.
public struct ModelOutcome {
    public var rows: [PointRow] = []
    public var skipped: [SkipNote] = []
    /// The adaptive rule's constants, when the series measured them.
    public var adaptiveFit: AdaptiveFitReport?
    /// The same, for a later series of the same layout to reuse.
    var fit: AdaptiveFit?
    public var phases = PhaseTimes()
    /// Set when a signal stopped the series: the point it abandoned.
    public var interruptedAt: String?
    /// The series' VM, as the next series of its layout may start from it.
    var vm: ParkedVM?
    /// The concurrent scenario's cache pollution, when the series measured it.
    public var pollution: [PollutionRow] = []
}

/// A VM a finished series left for the next one of the same layout: building
/// a 16 GiB shadow-paging VM again would cost seconds.
struct ParkedVM {
    let layout: VMLayout
    let vm: VirtualMachine
}

/// Runs one series on the model: builds its VM, measures the adaptive
/// rule's constants on it when adaptive is among the strategies, measures
/// every point (strategies in a seeded random order within each
/// repetition, grouped by how they log) through `TimedHarvest`, which
/// checks the invariant after every measured harvest, checks the whole
/// invariant after every point, and tears the VM down.
public final class ModelSeries {
    public let spec: ModelSeriesSpec
    public let settings: MeasureSettings
    let progress: Progress
    var timer: TimedHarvest
    let slotID = VMLayout.measuredSlotID
    /// Each strategy's median at the last point, for its warm-up.
    var lastMedian: [Strategy: Double] = [:]
    #if DEBUG
    /// See `PlantedBug`.
    public var plantedBug: PlantedBug?
    #endif
    /// The adaptive rule's constants measured by an earlier series on a VM
    /// of the same layout: built alike, it costs alike, so they are used
    /// instead of measuring again.
    var knownFit: AdaptiveFit?
    /// The VM the last series left, used if its layout is this one's.
    var reusable: ParkedVM?
    /// The concurrent scenario's guest, for its rows.
    var guestSetting: GuestSetting?

    public init(spec: ModelSeriesSpec, settings: MeasureSettings, eviction: CacheEviction?, progress: Progress) {
        self.spec = spec
        self.settings = settings
        self.progress = progress
        timer = TimedHarvest(eviction: settings.cache.evicts ? eviction : nil)
    }

    public func run() throws -> ModelOutcome {
        var out = ModelOutcome()
        let layout = spec.layout
        let noTree = spec.strategies.filter { !layout.runs($0) }
        if !noTree.isEmpty {
            out.skipped.append(SkipNote(series: spec.key.label, backend: .model, strategy: noTree.map(\.rawValue).joined(separator: " "),
                                        reason: "shadow paging has no two-dimensional paging structure to walk"))
        }
        for s in spec.strategies where layout.runs(s) {
            if let reason = spec.skipReason(s) {
                out.skipped.append(SkipNote(series: spec.key.label, backend: .model, strategy: s.rawValue, reason: reason))
            }
        }
        let vm: VirtualMachine
        if let parked = reusable, parked.layout == layout {
            // The last series' VM, of this layout, left as a fresh one is:
            // every leaf of the slot protected, nothing pending, checked whole
            // after its last point.
            vm = parked.vm
            reusable = nil
        } else {
            reusable = nil
            let built = MonotonicClock.now()
            progress.point("building the VM")
            vm = VirtualMachine(layout: layout, vcpus: settings.vcpus, ringEntries: settings.ringEntries)
            out.phases.add(.vmBuild, MonotonicClock.seconds(since: built))
            let checked = MonotonicClock.now()
            let initial = vm.checkInvariants(slotID: slotID, at: .afterProtection)
            out.phases.add(.checks, MonotonicClock.seconds(since: checked))
            guard initial.ok else {
                throw BenchError.failed("\(spec.key.label): the freshly built VM breaks the invariant: \(initial)")
            }
        }
        vm.state.pointee.clearChunkPages = settings.clearChunkPages
        vm.faultInjection.flushWindowSpins = settings.flushWindowSpins
        #if DEBUG
        plantedBug?.plant(in: vm)
        #endif
        let nUsed = vm.nUsedMMUPages
        // Everything measured runs on one handle, hoisted here.
        if spec.scenario == .concurrent {
            try vm.withMMU { mmu in try measureConcurrent(vm: vm, mmu: mmu, nUsed: nUsed, out: &out) }
        } else {
            try vm.withMMU { mmu in try measure(vm: vm, mmu: mmu, nUsed: nUsed, out: &out) }
        }
        out.phases.merge(timer.phases)
        if out.interruptedAt == nil { out.vm = ParkedVM(layout: layout, vm: vm) }
        return out
    }

    func measure(vm: VirtualMachine, mmu: MMU, nUsed: Int, out: inout ModelOutcome) throws {
        let layout = spec.layout
        var backend = ModelBackend(vm: vm, mmu: mmu)
        #if DEBUG
        backend.plantedBug = plantedBug
        #endif
        var calibrationVerdicts: [Strategy: Verdict] = [:]
        if spec.runnable.contains(.adaptive), let known = knownFit {
            vm.install(known.model)
        } else if spec.runnable.contains(.adaptive) {
            progress.point("measuring the adaptive rule's constants")
            let began = MonotonicClock.now()
            let before = timer.phases
            var calibration = AdaptiveCalibration(backend: backend, seed: settings.seed, sptesPerGFN: layout.paging.sptesPerGFN,
                                                  repetitions: min(5, max(1, settings.repetitions.minimum)))
            let fit: AdaptiveFit
            do {
                fit = try calibration.fit(timer: &timer)
            } catch is Termination.Stopped {
                out.interruptedAt = "\(spec.key.label), measuring the adaptive rule's constants"
                return
            }
            calibrationVerdicts = calibration.verdicts
            vm.install(fit.model)
            out.adaptiveFit = fit.report(series: spec.key)
            out.fit = fit
            // The calibration's harvests count as calibration, not as the sweep's.
            timer.phases = before
            out.phases.add(.adaptiveCalibration, MonotonicClock.seconds(since: began))
        }
        let measured: [PointRow]
        if spec.counts == .migration {
            measured = try measureMigration(&backend, nUsed: nUsed, out: &out)
        } else {
            measured = try sweep(&backend, nUsed: nUsed, out: &out)
        }
        // A calibration harvest that failed its check fails its strategy's rows.
        out.rows = measured.map { row in
            guard let s = row.strategy.model, let v = calibrationVerdicts[s], !v.ok else { return row }
            var r = row
            r.violationCount += v.count
            r.violations = Array((r.violations + v.messages.map { "calibration: " + $0 }).prefix(Verdict.kept))
            return r
        }
    }

    /// Every planned count, then the bisection around the rmap/slot-walk crossover.
    func sweep<B: ModelHarvestBackend>(_ backend: inout B, nUsed: Int, out: inout ModelOutcome) throws -> [PointRow] {
        var rows: [PointRow] = []
        let counts = spec.plannedCounts(nUsed: nUsed)
        for (i, d) in counts.enumerated() {
            guard let point = try measurePoint(&backend, dirtyPages: d, nUsed: nUsed, last: i == counts.count - 1 && !spec.refinesCrossover,
                                               out: &out) else { return rows }
            rows += point
        }
        if spec.refinesCrossover, case .thresholdSweep(let density) = spec.counts {
            // The crossover need not lie where the sweep is dense: bisect the
            // bracket (in log space) until it is a quarter octave wide.
            for _ in 0..<density.refinements {
                let pairs = Crossover.pairs(rows)
                guard let (lo, hi) = Crossover.bracket(pairs), let mid = SweepPlan.refinement(between: lo, and: hi) else { break }
                progress.addPoints(1)
                guard let point = try measurePoint(&backend, dirtyPages: mid, nUsed: nUsed, last: true, out: &out) else { return rows }
                rows += point
            }
        }
        return rows
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

    /// Every strategy at one dirty count, interleaved, each until its
    /// repetitions stop (`RepetitionPolicy.stop`). Nil when a signal asked
    /// the run to stop: the point is abandoned.
    ///
    /// The whole invariant is checked after the point's last harvest; in the
    /// concurrent scenario, whose every repetition checks the log and the
    /// protection of each page written and whose vCPUs change no rmap, only
    /// after the series' `last` point.
    func measurePoint<B: ModelHarvestBackend>(_ backend: inout B, dirtyPages d: Int, nUsed: Int, last: Bool,
                                                      out: inout ModelOutcome) throws -> [PointRow]? {
        progress.point("\(d) dirty")
        let set = spec.pattern.dirtySet(count: d, slotPages: spec.layout.slotPages, seed: settings.seed, parameters: settings.patterns)
        let round = GuestRound(vm: backend.vm, set: set, sptesPerGFN: spec.layout.paging.sptesPerGFN, seed: settings.seed)
        let strategies = spec.runnable
        var record = PointRecord(strategies.map { .model($0) })
        let policy = spec.scenario == .concurrent && settings.repetitions.fixed == nil ? .concurrent : settings.repetitions
        let warmups = strategies.map { policy.warmups(lastMedianNs: lastMedian[$0]) }
        let finished = try interleave(strategies, &record, policy: policy, warmups: warmups, seed: settings.seed ^ mix64(UInt64(d)),
                                      nearThreshold: 2 * d >= nUsed && d <= 2 * nUsed) { si in
            let m = try timer.measure(&backend, strategies[si], round)
            return (m, backend.guestCost, nil)
        }
        guard finished else {
            out.interruptedAt = "\(spec.key.label), \(d) dirty pages"
            return nil
        }
        for (si, s) in strategies.enumerated() { lastMedian[s] = Statistics.median(record.samples[si]) }
        // The whole invariant once per point, after the last harvest.
        let checked = MonotonicClock.now()
        let full = spec.scenario != .concurrent || last ? Verdict(backend.vm.checkInvariants(slotID: slotID, at: .afterProtection)) : Verdict()
        out.phases.add(.checks, MonotonicClock.seconds(since: checked))
        progress.pointDone()
        return record.rows(series: spec.key, nUsed: nUsed, dirtyPages: d, cache: spec.scenario == .concurrent ? .warm : settings.cache,
                           extra: full, guests: guestSetting, confidence: policy.confidence)
    }

    /// The repetitions of one point: each visits the strategies whose
    /// repetitions have not stopped, in `sequence` order, `measure`ing each
    /// (a migration total, with its rounds' choices); a strategy stops when
    /// the policy says so after its warm-ups. False when a signal asked the
    /// run to stop (or `measure` returned nil): the point is abandoned.
    func interleave(_ strategies: [Strategy], _ record: inout PointRecord, policy: RepetitionPolicy, warmups: [Int], seed: UInt64,
                            nearThreshold: Bool = false,
                            _ measure: (Int) throws -> (Measurement, GuestCost?, [Strategy: Int]?)?) throws -> Bool {
        var order = SeededGenerator(seed: seed)
        var done = [Int](repeating: 0, count: strategies.count)
        var rep = 0
        while record.stops.contains(where: { $0 == nil }) {
            let active = strategies.indices.filter { record.stops[$0] == nil }
            for j in Self.sequence(active.map { strategies[$0] }, rep: rep, using: &order) {
                let si = active[j]
                guard Termination.requested == nil, let (m, guest, choices) = try measure(si) else { return false }
                record.add(si, m, timed: done[si] >= warmups[si], roundChoices: choices, guestCost: guest)
                done[si] += 1
                if done[si] > warmups[si] {
                    // A concurrent repetition also runs the vCPUs' passes, an
                    // instrumented repetition and a harvest after them: what
                    // makes a repetition long is its harvest alone.
                    let cost = spec.scenario == .concurrent ? m.ns : m.repetitionNs
                    record.stops[si] = record.judge(si, policy: policy, repetitionNs: Double(cost), nearThreshold: nearThreshold)
                }
            }
            rep += 1
            // A separation is judged against the best other median of its
            // moment; once every strategy has stopped, one that no longer
            // holds, or that the point's end shows deciding, goes on.
            if !record.stops.contains(where: { $0 == nil }) { record.reopenSeparations(confidence: policy.confidence) }
        }
        return true
    }
}
