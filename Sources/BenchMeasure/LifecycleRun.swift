import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// The state of one lifecycle as it runs.
struct LifecycleRun {
    let spec: LifecycleSpec
    let vm: VirtualMachine
    let mmu: MMU
    let guests: GuestThreads
    let policy: EnablePolicy
    let strategy: Strategy
    /// The release whose enable, write fault and disable it runs.
    let kernel: LifecycleKernel
    let allocations: ThreadAllocationCounter
    let slot: SlotView
    /// The pages the vCPUs logged since the last harvest, as they report them.
    let expected: UnsafeMutablePointer<UInt64>
    var rows: [LifecycleRow] = []

    init(spec: LifecycleSpec, vm: VirtualMachine, mmu: MMU, guests: GuestThreads, policy: EnablePolicy, strategy: Strategy,
         kernel: LifecycleKernel, allocations: ThreadAllocationCounter) {
        self.spec = spec
        self.vm = vm
        self.mmu = mmu
        self.guests = guests
        self.policy = policy
        self.strategy = strategy
        self.kernel = kernel
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
        var r = LifecycleRow(series: spec.key, policy: policy, strategy: strategy, kernel: kernel, phase: phase, ns: Double(ns))
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
        guests.prepareLifecycle(pages: spec.slotPages, template: t, logging: slot.state.pointee.dirtyLogging)
        let (_, _, ns, _) = try TimedRegion.time(allocations) { try guests.lifecycle(.pass) }
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

        // Disable, by each policy of the kernel, from the same state.
        let disables = LifecycleSeries.disables(kernel, spec: spec)
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
            guests.prepareLifecycle(pages: spec.slotPages, template: t, logging: false)
            try guests.lifecycle(.runUntilStopped, wait: false)
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
}
