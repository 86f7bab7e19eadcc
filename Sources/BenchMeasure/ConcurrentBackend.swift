import BenchAnalysis
import CAtomics
import DirtyLogCore
import Histogram
import ShadowMMU

/// One thread's holds of one side of mmu_lock during a harvest, as
/// `ca_hold_stats` recorded them (ticks).
struct HoldSample {
    var kept: [UInt64] = []
    var count = 0
    var totalTicks: UInt64 = 0
    var maxTicks: UInt64 = 0

    init() {}

    init(_ h: ca_hold_stats) {
        kept = Array(UnsafeBufferPointer(start: h.holds, count: Int(h.n)))
        count = Int(h.count)
        totalTicks = h.ticks_total
        maxTicks = h.ticks_max
    }
}

/// What one repetition of the concurrent scenario cost the guest.
struct GuestCost {
    /// The vCPUs through the timed harvest: their window's faults.
    var plain = GuestRunResult()
    /// From the timed harvest's start until the last vCPU had logged its
    /// whole share anew, ns (nil when one had not).
    var relogNs: Double?
    /// The instrumented repetition's harvest time (not the reported one)
    /// and what its lock statistics saw: the harvesting thread's holds of
    /// each side, the vCPUs' waits per fault in its window.
    var instrumentedNs = 0.0
    var exclusiveHolds = HoldSample()
    var sharedHolds = HoldSample()
    var lockWaitTicks: [UInt64] = []
    /// Over both runs.
    var raceViolations = 0
    var shadowings = 0
    var shadowFlushes = 0
}

extension Histogram where Count == UInt64 {
    /// The concurrent scenario's latencies and holds: 1 ns to 10 minutes,
    /// three significant digits.
    static func nanoseconds() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// The model with vCPU threads running through the harvest (the
/// concurrent scenario), as `TimedHarvest` drives it. A repetition:
///
/// 1. `write`: the vCPUs write their pages (each faults: the round's dirty
///    set), unless the last repetition left them dirty; then they start
///    running through the harvest, which waits until each has finished one
///    pass, its translations cached;
/// 2. `harvest`, timed, with nothing in it that a harvest without vCPUs
///    lacks but what the vCPUs make it wait for: their faults, measured in
///    its window, and their flush IPIs. No lock statistics.
/// 3. `verify`: the vCPUs run on until each has logged its whole share
///    anew (the relog time); the log handed out must be the round's
///    pages. Then the same harvest again with the vCPUs running and the
///    lock statistics on (the instrumented repetition: its holds of
///    mmu_lock and the vCPUs' waits for it, its time kept apart); its log
///    must again be every page. Last, with the vCPUs idle, the harvest of
///    what they wrote since: every page, every one protected after it.
///
/// No cache eviction: the guest's caches are part of what is measured.
struct ConcurrentBackend: ModelHarvestBackend {
    let vm: VirtualMachine
    let mmu: MMU
    let slot: SlotView
    let guests: GuestThreads
    private var assigned: UnsafePointer<GFN>?
    /// The round's pages are dirty, not yet harvested.
    private var dirty = false
    private var handedOut: UnsafeMutablePointer<UInt64>?
    /// The harvesting thread's lock statistics, holds kept.
    private let lockStats: UnsafeMutablePointer<ca_lock_stats>
    private(set) var guestCost: GuestCost?

    static let holdCapacity = 1 << 20

    init(vm: VirtualMachine, mmu: MMU, guests: GuestThreads) {
        self.vm = vm
        self.mmu = mmu
        self.guests = guests
        slot = mmu.slot(id: VMLayout.measuredSlotID)
        lockStats = .allocate(capacity: 1)
        lockStats.initialize(to: ca_lock_stats())
        lockStats.pointee.exclusive.holds = .allocate(capacity: Self.holdCapacity)
        lockStats.pointee.shared.holds = .allocate(capacity: Self.holdCapacity)
    }

    func release() {
        lockStats.pointee.exclusive.holds.deallocate()
        lockStats.pointee.shared.holds.deallocate()
        lockStats.deallocate()
    }

    mutating func beginRound(_ strategy: Strategy, _ round: GuestRound) {
        vm.beginRound(slotID: slot.id, for: strategy)
        let first = round.gfns.withUnsafeBufferPointer { $0.baseAddress }
        if first != assigned {
            guests.assign(round)
            assigned = first
            dirty = false
        }
    }

    mutating func write(_ strategy: Strategy, _ round: GuestRound) throws -> Bool {
        if !dirty { try guests.command(.dirty) }
        dirty = true
        try guests.startRun(doneState: vm.harvestState &+ 2, instrumented: false)
        return true
    }

    func harvestFullRing() {}

    func evict(_ strategy: Strategy, _ round: GuestRound, with eviction: CacheEviction) {}

    func harvestWillBegin() {
        guests.markHarvestStart()
        mmu.openHarvestWindow()
    }

    func harvestDidEnd() { mmu.closeHarvestWindow() }

    @inline(__always)
    mutating func harvest(_ strategy: Strategy, phases: inout HarvestPhaseMarks) -> HarvestOutcome {
        let h = mmu.harvest(slot: slot, strategy: strategy, phases: &phases)
        handedOut = h.bitmap
        return HarvestOutcome(choice: h.choice, counters: h.counters)
    }

    mutating func verify(_ strategy: Strategy, _ round: GuestRound, _ outcome: HarvestOutcome) throws -> Verdict {
        var cost = GuestCost()
        var verdict = Verdict()
        let racy = strategy.racesWithShadowing(choice: outcome.choice)
        round.expected.bitmap.withUnsafeBufferPointer { expected in
            verdict.merge(Verdict(vm.checkHandedOut(slotID: slot.id, harvested: handedOut!, expected: expected.baseAddress!)))
        }
        cost.plain = try guests.finishRun()
        if cost.plain.complete {
            cost.relogNs = TickClock.ns(cost.plain.stats.reloggedAt &- guests.harvestStartTicks)
        }
        check(cost.plain, racy: racy, "", into: &verdict)

        // The instrumented repetition: the same harvest of the pages the
        // vCPUs logged anew, its lock statistics on.
        reset(&lockStats.pointee.exclusive)
        reset(&lockStats.pointee.shared)
        lockStats.pointee.wait_ticks = 0
        try guests.startRun(doneState: vm.harvestState &+ 2, instrumented: true)
        var marks = HarvestPhaseMarks()
        harvestWillBegin()
        ca_lock_stats_set(lockStats)
        let t0 = MonotonicClock.now()
        let instrumented = mmu.harvest(slot: slot, strategy: strategy, phases: &marks)
        let t1 = MonotonicClock.now()
        ca_lock_stats_set(nil)
        harvestDidEnd()
        cost.instrumentedNs = Double(t1 &- t0)
        cost.exclusiveHolds = HoldSample(lockStats.pointee.exclusive)
        cost.sharedHolds = HoldSample(lockStats.pointee.shared)
        let run = try guests.finishRun()
        cost.lockWaitTicks = run.lockWaitTicks
        round.expected.bitmap.withUnsafeBufferPointer { expected in
            verdict.merge(Verdict(vm.checkHandedOut(slotID: slot.id, harvested: instrumented.bitmap, expected: expected.baseAddress!))
                .prefixed("instrumented repetition: "))
        }
        check(run, racy: racy, "instrumented repetition: ", into: &verdict)

        // With the vCPUs idle: what they wrote since, every page protected after it.
        let next = mmu.harvest(slot: slot, strategy: strategy)
        round.expected.pages.withUnsafeBufferPointer { pages in
            round.expected.bitmap.withUnsafeBufferPointer { expected in
                verdict.merge(Verdict(vm.checkProtected(slotID: slot.id, written: pages, harvested: next.bitmap,
                                                        expected: expected.baseAddress!)).prefixed("after the vCPUs stopped: "))
            }
        }
        dirty = false
        cost.raceViolations = cost.plain.stats.raceViolations + run.stats.raceViolations
        cost.shadowings = cost.plain.stats.shadowings + run.stats.shadowings
        cost.shadowFlushes = cost.plain.stats.shadowFlushes + run.stats.shadowFlushes
        guestCost = cost
        return verdict
    }

    /// What a run through a harvest must show: no write through a stale
    /// translation after the harvest returned, every page logged anew, no
    /// race but the seed's own.
    private func check(_ run: GuestRunResult, racy: Bool, _ prefix: String, into verdict: inout Verdict) {
        if run.stats.staleWrites > 0 {
            verdict.fail(prefix + "\(run.stats.staleWrites) writes through a cached writable translation after the harvest returned with the spte protected")
        }
        if !run.complete {
            verdict.fail(prefix + "the vCPUs logged \(run.stats.relogged) of their \(run.stats.pages) pages anew within two passes after the harvest returned")
        }
        if run.stats.raceViolations > 0 && !racy {
            verdict.fail(prefix + "\(run.stats.raceViolations) writes to a guest page table its shadower had returned believing write-protected")
        }
    }

    private func reset(_ h: inout ca_hold_stats) {
        h.n = 0
        h.count = 0
        h.ticks_total = 0
        h.ticks_max = 0
        h.cap = UInt64(Self.holdCapacity)
    }
}

extension Verdict {
    /// The same violations, each message prefixed.
    func prefixed(_ prefix: String) -> Verdict {
        var v = self
        v.messages = messages.map { prefix + $0 }
        return v
    }
}
