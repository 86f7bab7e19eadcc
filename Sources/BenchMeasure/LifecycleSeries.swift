import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// One lifecycle series: dirty_log_perf_test's experiment on the model.
/// The guest (`vcpus` × `pagesPerVCPU` pages in one slot, backed by
/// `backing`) is populated by its vCPUs, logging enabled under each
/// policy, `iterations` rounds of its vCPUs' passes each followed by a
/// harvest, then logging disabled by each policy of the era.
public struct LifecycleSpec: Sendable, Hashable {
    public var paging: Paging
    public var pagesPerVCPU: Int
    public var vcpus: Int
    public var backing: Backing
    public var iterations: Int
    public var policies: [EnablePolicy]
    /// nil: every disable policy of each enable policy's kernel.
    public var disablePolicies: [DisablePolicy]?
    /// Harvests by KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG (manual
    /// protect), where the policy's kernel had it; split-on-clear always.
    public var manualProtect: Bool
    /// The test's -a: random pages, with replacement.
    public var randomAccess: Bool
    /// The test's -w.
    public var writePercent: Int
    /// The test's -e: the vCPUs keep writing while logging is disabled.
    public var vcpusRunDuringDisable: Bool

    public init(paging: Paging, pagesPerVCPU: Int, vcpus: Int = 1, backing: Backing = .page2M, iterations: Int = 2,
                policies: [EnablePolicy] = EnablePolicy.allCases, disablePolicies: [DisablePolicy]? = nil, manualProtect: Bool = false,
                randomAccess: Bool = false, writePercent: Int = 100, vcpusRunDuringDisable: Bool = true) {
        self.paging = paging
        self.pagesPerVCPU = pagesPerVCPU
        self.vcpus = vcpus
        self.backing = backing
        self.iterations = iterations
        self.policies = policies
        self.disablePolicies = disablePolicies
        self.manualProtect = manualProtect
        self.randomAccess = randomAccess
        self.writePercent = writePercent
        self.vcpusRunDuringDisable = vcpusRunDuringDisable
    }

    public var slotPages: Int { pagesPerVCPU * vcpus }

    public var layout: VMLayout { VMLayout(paging: paging, slotPages: slotPages, backing: backing) }

    public var key: LifecycleKey {
        LifecycleKey(paging: paging.mode, sptesPerGFN: paging.sptesPerGFN, slotPages: slotPages, backing: backing, vcpus: vcpus)
    }

    /// How the iterations of `policy` are harvested under `paging`: the
    /// seed's policy by its rule (each of its branches timed beside it on
    /// the same state, `LifecycleRun.harvest`); the others by their
    /// kernel's masked GET, or its GET and CLEAR under manual protect. The
    /// reason instead when no kernel ran it.
    public static func strategies(_ policy: EnablePolicy, paging: PagingMode, manualProtect: Bool) -> Result<[Strategy], Skip> {
        if let r = policy.skipReason(paging: paging) { return .failure(Skip(r)) }
        switch policy {
        case .drop:
            if manualProtect { return .failure(Skip("drop: 3.3 had no KVM_CLEAR_DIRTY_LOG (manual protect came in 5.0, 2a31b9db)")) }
            return .success([.seed])
        case .wrprot, .eagerSplit:
            if manualProtect { return .success([.clearChunked]) }
            return .success([paging == .tdp ? .tdpMasked : .masked])
        case .splitOnClear:
            return .success([.clearChunked])
        }
    }

    /// Why a lifecycle is not run.
    public struct Skip: Error, Sendable {
        public var reason: String
        init(_ r: String) { reason = r }
    }

    /// Bytes the series' largest VM takes: every page at 4 KiB twice over
    /// (the tables split, and under the shadow MMU the ones a disable
    /// leaves unlinked), the bitmaps and the vCPUs' expected log.
    public var estimatedBytes: Int { 2 * layout.estimatedBytes(vcpus: vcpus) }
}

/// What a lifecycle series produced.
public struct LifecycleOutcome {
    public var rows: [LifecycleRow] = []
    public var skipped: [SkipNote] = []
    public var phases = PhaseTimes()
    public var interruptedAt: String?
}

/// Runs a lifecycle series on the model: a fresh VM per lifecycle (enable
/// policy and harvest strategy), its vCPU threads (`GuestThreads`) doing
/// the guest's passes, each phase timed once (TimedRegion) as the test
/// times it and checked after: the invariant, the leaves per level the
/// policy implies, the log against the pages the vCPUs touched.
public final class LifecycleSeries {
    public let spec: LifecycleSpec
    public let settings: MeasureSettings
    private let progress: Progress
    private let allocations = ThreadAllocationCounter()
    #if DEBUG
    /// See `PlantedBug`.
    public var plantedBug: PlantedBug?
    #endif

    public init(spec: LifecycleSpec, settings: MeasureSettings, progress: Progress) {
        self.spec = spec
        self.settings = settings
        self.progress = progress
    }

    /// The lifecycles the series runs, and the skipped ones.
    public var lifecycles: (runs: [(EnablePolicy, Strategy)], skipped: [SkipNote]) {
        var runs: [(EnablePolicy, Strategy)] = [], skipped: [SkipNote] = []
        for p in spec.policies {
            switch LifecycleSpec.strategies(p, paging: spec.paging.mode, manualProtect: spec.manualProtect) {
            case .success(let s): runs += s.map { (p, $0) }
            case .failure(let skip): skipped.append(SkipNote(series: spec.key.label, backend: .model, strategy: p.rawValue, reason: skip.reason))
            }
        }
        return (runs, skipped)
    }

    public func run() throws -> LifecycleOutcome {
        var out = LifecycleOutcome()
        let (runs, skipped) = lifecycles
        out.skipped = skipped
        for (i, (policy, strategy)) in runs.enumerated() {
            if let s = Termination.requested {
                out.interruptedAt = "\(spec.key.label) \(policy.rawValue)/\(strategy.rawValue) (\(Termination.name(s)))"
                break
            }
            progress.point("\(policy.rawValue)/\(strategy.rawValue)")
            let t0 = MonotonicClock.now()
            out.rows += try runLifecycle(policy: policy, strategy: strategy)
            out.phases.add(.lifecycle, MonotonicClock.seconds(since: t0))
            progress.pointDone()
            _ = i
        }
        return out
    }

    /// One lifecycle, start to end.
    private func runLifecycle(policy: EnablePolicy, strategy: Strategy) throws -> [LifecycleRow] {
        let paging = spec.paging.mode
        let era = policy.era(paging: paging)!
        let tdpMMU = era == .linux5_14on && paging == .tdp
        let layout = spec.layout
        let vm = VirtualMachine(unloggedLayout: layout, vcpus: spec.vcpus, reserve: 2 * layout.expectedShadowPages + 64,
                                rmaps: !tdpMMU, populate: false)
        vm.enterEra(era)
        let costs = settings.exitCosts
        vm.setExitCosts(exitTicks: TickClock.ticks(costs.exitNs), ipiTicks: TickClock.ticks(costs.ipiNs))
        vm.state.pointee.clearChunkPages = settings.clearChunkPages
        #if DEBUG
        plantedBug?.plant(in: vm)
        #endif
        return try vm.withMMU { mmu in
            let guests = GuestThreads(vm: vm, mmu: mmu, count: spec.vcpus, faultPath: .fast, shadowing: false,
                                      maxPages: spec.pagesPerVCPU)
            defer { guests.shutdown(vm: vm) }
            var run = LifecycleRun(spec: spec, vm: vm, mmu: mmu, guests: guests, policy: policy, strategy: strategy, era: era,
                                   allocations: allocations)
            defer { run.release() }
            return try run.all()
        }
    }
}

/// The state of one lifecycle as it runs.
private struct LifecycleRun {
    let spec: LifecycleSpec
    let vm: VirtualMachine
    let mmu: MMU
    let guests: GuestThreads
    let policy: EnablePolicy
    let strategy: Strategy
    let era: KernelEra
    let allocations: ThreadAllocationCounter
    let slot: SlotView
    /// The pages the vCPUs logged since the last harvest, as they report them.
    let expected: UnsafeMutablePointer<UInt64>
    var rows: [LifecycleRow] = []

    init(spec: LifecycleSpec, vm: VirtualMachine, mmu: MMU, guests: GuestThreads, policy: EnablePolicy, strategy: Strategy,
         era: KernelEra, allocations: ThreadAllocationCounter) {
        self.spec = spec
        self.vm = vm
        self.mmu = mmu
        self.guests = guests
        self.policy = policy
        self.strategy = strategy
        self.era = era
        self.allocations = allocations
        slot = mmu.slot(id: VMLayout.measuredSlotID)
        expected = .allocate(capacity: slot.bitmapWords)
        expected.initialize(repeating: 0, count: slot.bitmapWords)
    }

    func release() { expected.deallocate() }

    /// What the counters read before a phase.
    struct Before {
        var allocated: Int, freed: Int, flushes: Int
    }

    func before() -> Before { Before(allocated: vm.shadowPagesAllocatedTotal, freed: vm.shadowPagesFreedTotal, flushes: vm.tlbFlushes) }

    /// A row for a phase just measured: the MMU's state now, the counters' change.
    func row(_ phase: LifecyclePhase, ns: UInt64, since b: Before, iteration: Int? = nil, disable: DisablePolicy? = nil,
             counters: ProtectCounters? = nil, pass: LifecyclePassStats? = nil) -> LifecycleRow {
        var r = LifecycleRow(series: spec.key, policy: policy, strategy: strategy, era: era, phase: phase, ns: Double(ns))
        r.iteration = iteration
        r.disable = disable
        let census = vm.leafCensus(slotID: VMLayout.measuredSlotID)
        let leaves = vm.leafPages
        r.nUsedMMUPages = vm.nUsedMMUPages
        r.pages4K = leaves.pages4K
        r.pages2M = leaves.pages2M
        r.pages1G = leaves.pages1G
        r.hugeRegions = census.hugeRegions
        r.splitRegions = census.splitRegions
        r.eligibleRegions = census.eligibleRegions
        r.tablesAllocated = vm.shadowPagesAllocatedTotal - b.allocated
        r.tablesFreed = vm.shadowPagesFreedTotal - b.freed
        r.tlbFlushes = vm.tlbFlushes - b.flushes
        r.lockHolds = counters?.lockAcquisitions ?? 0
        if let p = pass {
            r.faults = p.faults
            r.fastFaults = p.fastFaults
            r.mappingFaults = p.mappingFaults
            r.splitFaults = p.splitFaults
            r.lockHolds += p.faults - p.fastFaults
            r.faultMeanNs = p.faults > 0 ? TickClock.ns(p.faultTicks) / Double(p.faults) : nil
        }
        return r
    }

    /// The vCPUs' pass, timed from the command to the last vCPU's answer;
    /// `round` seeds its random pages, so that a round's pass can be run
    /// again over the same pages.
    func pass(writePercent: Int, random: Bool, round: Int = 0) throws -> (ns: UInt64, stats: LifecyclePassStats) {
        var t = LifecyclePass()
        t.writePercent = writePercent
        t.random = random
        t.seed = UInt64(round &+ 1) &* 0x2545_F491_4F6C_DD1D
        t.expected = expected
        let (_, _, ns, _) = try TimedRegion.time(allocations) { try guests.lifecycle(.pass, pages: spec.slotPages, template: t) }
        return (ns, guests.lifecycleStats)
    }

    /// Adds the checks' findings to a row.
    func verified(_ r: LifecycleRow, _ report: InvariantReport, _ extra: [String] = []) -> LifecycleRow {
        var r = r
        r.violations = report.violations + extra
        r.violationCount = report.count + extra.count
        return r
    }

    mutating func all() throws -> [LifecycleRow] {
        let sid = VMLayout.measuredSlotID
        // Populate.
        var b = before()
        var (ns, st) = try pass(writePercent: 100, random: false)
        var r = row(.populate, ns: ns, since: b, pass: st)
        rows.append(verified(r, vm.checkInvariants(slotID: sid, at: .afterProtection), Self.expectHuge(r, "populating")))

        // Enable.
        b = before()
        var counters = ProtectCounters()
        let slot = self.slot, mmu = self.mmu, policy = self.policy
        (_, _, ns, _) = TimedRegion.time(allocations) { mmu.enableLogging(slot: slot, policy: policy, counters: &counters) }
        r = row(.enable, ns: ns, since: b, counters: counters)
        rows.append(verified(r, vm.checkInvariants(slotID: sid, at: policy.initiallySet ? .betweenProtections : .afterProtection),
                             enableRule(r)))
        if policy.initiallySet { setAll(expected) }

        // Iterations.
        for k in 1...spec.iterations {
            if Termination.requested != nil { return rows }
            b = before()
            (ns, st) = try pass(writePercent: spec.writePercent, random: spec.randomAccess, round: k)
            r = row(.dirty, ns: ns, since: b, iteration: k, pass: st)
            rows.append(verified(r, vm.checkInvariants(slotID: sid, at: .betweenProtections)))
            // The seed's rule and its two branches on the same state, in an
            // order that turns with the iteration: after the rule's harvest,
            // the round's pass again (untimed) dirties the same pages.
            let order: [Strategy] = strategy == .seed ? [.seed, .rmap, .slotWalk] : [strategy]
            let first = rows.count
            for (j, s) in (order.dropFirst(k % order.count) + order.prefix(k % order.count)).enumerated() {
                if j > 0 { _ = try pass(writePercent: spec.writePercent, random: spec.randomAccess, round: k) }
                try harvest(iteration: k, by: s)
            }
            // The rule's own harvest first among the iteration's rows.
            let mine = rows[first...].filter { $0.alternative == nil }, others = rows[first...].filter { $0.alternative != nil }
            rows.replaceSubrange(first..., with: mine + others)
        }

        // Disable, by each policy of the era, from the same state.
        let disables = (spec.disablePolicies ?? DisablePolicy.allCases)
            .filter { DisablePolicy.policies(for: policy, paging: spec.paging.mode).contains($0) }
        let snapshot = disables.count > 1 ? vm.snapshotGuestLeaves(slotID: sid) : nil
        for (i, d) in disables.enumerated() {
            if i > 0, let s = snapshot {
                vm.restoreGuestLeaves(s, slotID: sid)
                slot.state.pointee.dirtyLogging = true
            }
            try disable(d)
        }
        return rows
    }

    /// One iteration's harvest by `by` (the lifecycle's strategy, or a
    /// branch of the seed's rule beside it): GET, or GET and CLEAR, each
    /// timed; the log must be what the vCPUs logged, every page protected
    /// after it.
    mutating func harvest(iteration k: Int, by strategy: Strategy) throws {
        let sid = VMLayout.measuredSlotID
        let b = before()
        let nrDirty = slot.state.pointee.nrDirtyPages
        let alternative = strategy == self.strategy ? nil : strategy
        let slot = self.slot, mmu = self.mmu
        var marks = HarvestPhaseMarks()
        let (h, start, ns, _) = TimedRegion.time(allocations) { mmu.harvest(slot: slot, strategy: strategy, phases: &marks) }
        let report = vm.checkInvariants(slotID: sid, at: .afterProtection, harvested: h.bitmap, expected: expected)
        var extra: [String] = []
        let census = vm.leafCensus(slotID: sid)
        if census.writable != LeafCounts() { extra.append("writable leaves after the harvest: \(census.writable)") }
        expected.update(repeating: 0, count: slot.bitmapWords)
        if marks.firstPhaseEnd > 0 {
            let getNs = marks.firstPhaseEnd &- start
            var g = row(.get, ns: getNs, since: b, iteration: k)
            g.nrDirtyPages = nrDirty
            rows.append(verified(g, InvariantReport()))
            var c = row(.clear, ns: ns &- getNs, since: b, iteration: k, counters: h.counters)
            c.nrDirtyPages = nrDirty
            rows.append(verified(c, report, extra))
        } else {
            var g = row(.get, ns: ns, since: b, iteration: k, counters: h.counters)
            g.nrDirtyPages = nrDirty
            g.seedChoice = strategy == .seed ? h.choice : nil
            g.alternative = alternative
            rows.append(verified(g, report, extra))
        }
    }

    /// Logging off by `d`, the vCPUs writing through it if the spec says
    /// so; then their pass, which must find every huge region mapped huge.
    mutating func disable(_ d: DisablePolicy) throws {
        let sid = VMLayout.measuredSlotID
        var b = before()
        var counters = ProtectCounters()
        if spec.vcpusRunDuringDisable {
            var t = LifecyclePass()
            t.writePercent = 100
            try guests.lifecycle(.runUntilStopped, pages: spec.slotPages, template: t, wait: false)
            try guests.waitRunning()
        }
        let slot = self.slot, mmu = self.mmu
        let (_, _, ns, _) = TimedRegion.time(allocations) { mmu.disableLogging(slot: slot, policy: d, counters: &counters) }
        var during: LifecyclePassStats?
        if spec.vcpusRunDuringDisable {
            try guests.stopRunning()
            during = guests.lifecycleStats
        }
        vm.reclaimZappedPages()
        var r = row(.disable, ns: ns, since: b, disable: d, counters: counters, pass: during)
        r.vcpusRunning = spec.vcpusRunDuringDisable
        rows.append(verified(r, vm.checkInvariants(slotID: sid, at: .afterProtection), disableRule(r, d)))

        b = before()
        let (pns, st) = try pass(writePercent: 100, random: false)
        vm.reclaimZappedPages()
        var f = row(.refault, ns: pns, since: b, disable: d, pass: st)
        f.vcpusRunning = false
        rows.append(verified(f, vm.checkInvariants(slotID: sid, at: .afterProtection), Self.expectHuge(f, "the pass after \(d.rawValue)")))
    }

    func setAll(_ bitmap: UnsafeMutablePointer<UInt64>) {
        bitmap.update(repeating: ~0, count: slot.bitmapWords)
        if slot.npages & 63 != 0 { bitmap[slot.bitmapWords - 1] = (1 << UInt64(slot.npages & 63)) - 1 }
    }

    /// Every region the host maps huge is mapped by one huge leaf.
    static func expectHuge(_ r: LifecycleRow, _ when: String) -> [String] {
        r.hugeRegions == r.eligibleRegions ? [] : ["after \(when), \(r.hugeRegions) of \(r.eligibleRegions) huge regions mapped huge (\(r.splitRegions) split)"]
    }

    /// What enabling under the policy leaves: the seed drops every large
    /// leaf; wrprot keeps them, read-only; eager-split maps every region
    /// at 4 KiB; split-on-clear changes nothing. Nothing writable but in
    /// initially-set mode.
    func enableRule(_ r: LifecycleRow) -> [String] {
        var out: [String] = []
        let census = vm.leafCensus(slotID: VMLayout.measuredSlotID)
        let writable = census.writable.pages4K + census.writable.pages2M + census.writable.pages1G
        switch policy {
        case .drop:
            if r.hugeRegions != 0 { out.append("drop left \(r.hugeRegions) huge regions mapped") }
        case .wrprot:
            if r.hugeRegions != r.eligibleRegions { out.append("wrprot kept \(r.hugeRegions) of \(r.eligibleRegions) huge regions") }
        case .eagerSplit:
            if r.hugeRegions != 0 || r.splitRegions != r.eligibleRegions {
                out.append("eager-split left \(r.hugeRegions) huge and \(r.splitRegions) split of \(r.eligibleRegions) regions")
            }
        case .splitOnClear:
            if r.hugeRegions != r.eligibleRegions { out.append("split-on-clear changed \(r.eligibleRegions - r.hugeRegions) huge regions at enable") }
        }
        if !policy.initiallySet && writable != 0 { out.append("\(writable) leaves writable after enable (\(census.writable))") }
        return out
    }

    /// What disabling leaves before the next pass: no region split (each
    /// zapped, recovered, or mapped huge again by a running vCPU), but
    /// 3.3's walk, which keeps the 4 KiB leaves, write-protected, until a
    /// write maps the region huge.
    func disableRule(_ r: LifecycleRow, _ d: DisablePolicy) -> [String] {
        if d == .wrprotWalk {
            let census = vm.leafCensus(slotID: VMLayout.measuredSlotID)
            return census.writable.pages4K == 0 ? [] : ["\(census.writable.pages4K) 4 KiB leaves writable after 3.3's walk"]
        }
        var out: [String] = []
        if r.splitRegions != 0 { out.append("\(d.rawValue) left \(r.splitRegions) of \(r.eligibleRegions) huge regions split") }
        if d == .recover && !spec.vcpusRunDuringDisable && r.hugeRegions != r.eligibleRegions {
            out.append("recover mapped \(r.hugeRegions) of \(r.eligibleRegions) regions huge")
        }
        return out
    }
}
