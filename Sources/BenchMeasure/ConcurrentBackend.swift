import BenchAnalysis
import CAtomics
import DirtyLogCore
import Histogram
import ShadowMMU

/// What one repetition of the concurrent scenario cost the guest.
struct GuestCost {
    /// The timed harvest's holds of mmu_lock, in an HdrHistogram (ns).
    var holds = Histogram<UInt64>.nanoseconds()
    var holdCount = 0
    var holdTotalNs = 0.0
    var holdMaxNs = 0.0
    /// The vCPUs' passes: through the harvest, then the timed one after it.
    var stats = VCPUPassStats()
    /// Latencies (ns) of their faults begun while the harvest ran.
    var faultLatenciesNs: [UInt64] = []
    var dirtyMemoryNs = 0.0
    /// Re-read after the harvest minus after an idle interval as long (the latter).
    var pollutionNs = 0.0
    var idleRereadNs = 0.0
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
///    passing over them again, and the harvest waits until each has
///    finished one pass, its translations cached;
/// 2. `harvest`, timed: the strategy's harvest while they write, their
///    faults and mmu_lock waits measured in its window and its own holds
///    of the lock recorded;
/// 3. `verify`: the vCPUs, on seeing the harvest return, time one pass
///    over their pages (the dirty memory time) and stop. The log handed
///    out must be the round's pages; then, the vCPUs idle and the guest's
///    working set warm, the same strategy harvests again (what they wrote
///    since), which must hold every page written after the first harvest
///    returned and leave every page protected; the working set is re-read
///    after it and after an idle interval as long (the cache pollution).
///
/// No cache eviction: the guest's caches are what is measured.
struct ConcurrentBackend: ModelHarvestBackend {
    let vm: VirtualMachine
    let mmu: MMU
    let slot: SlotView
    let guests: GuestThreads
    /// Reading the working set from memory and from cache (`GuestThreads.readCosts`).
    let coldReadNs: Double
    let warmReadNs: Double
    /// Per line missed on re-reading it.
    var missNsPerLine: Double { max(0, coldReadNs - warmReadNs) / Double(max(1, guests.linesPerVCPU)) }
    private var assigned: UnsafePointer<GFN>?
    /// The round's pages are dirty, not yet harvested.
    private var dirty = false
    private var doneState: UInt64 = 0
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
        lockStats.pointee.holds = .allocate(capacity: Self.holdCapacity)
        lockStats.pointee.cap = UInt64(Self.holdCapacity)
        guests.command(.warm)
        (coldReadNs, warmReadNs) = guests.readCosts()
    }

    func release() {
        lockStats.pointee.holds.deallocate()
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

    mutating func write(_ strategy: Strategy, _ round: GuestRound) -> Bool {
        if !dirty { guests.command(.dirty) }
        dirty = true
        doneState = vm.harvestState &+ 2
        guests.command(.run, doneState: doneState, wait: false)
        guests.waitForFirstPass()
        // The harvest's holds start from nothing, set here, not in the timed region.
        lockStats.pointee.n = 0
        lockStats.pointee.count = 0
        lockStats.pointee.hold_ticks_total = 0
        lockStats.pointee.hold_ticks_max = 0
        return true
    }

    func harvestFullRing() {}

    func evict(_ strategy: Strategy, _ round: GuestRound, with eviction: CacheEviction) {}

    @inline(__always)
    mutating func harvest(_ strategy: Strategy, phases: inout HarvestPhaseMarks) -> HarvestOutcome {
        mmu.openHarvestWindow()
        ca_lock_stats_set(lockStats)
        let h = mmu.harvest(slot: slot, strategy: strategy, phases: &phases)
        ca_lock_stats_set(nil)
        mmu.closeHarvestWindow()
        handedOut = h.bitmap
        return HarvestOutcome(choice: h.choice, counters: h.counters)
    }

    mutating func verify(_ strategy: Strategy, _ round: GuestRound, _ outcome: HarvestOutcome) -> Verdict {
        guests.waitAll()
        var cost = GuestCost()
        let run = guests.runResults(slot: slot)
        cost.stats = run.stats
        cost.faultLatenciesNs = run.latencies.map { UInt64(TickClock.ns($0)) }
        cost.dirtyMemoryNs = run.dirtyMemoryNs
        let ls = lockStats.pointee
        for i in 0..<Int(ls.n) { cost.holds.record(UInt64(TickClock.ns(ls.holds[i]))) }
        cost.holdCount = Int(ls.count)
        cost.holdTotalNs = TickClock.ns(ls.hold_ticks_total)
        cost.holdMaxNs = TickClock.ns(ls.hold_ticks_max)

        var verdict = Verdict()
        round.expected.bitmap.withUnsafeBufferPointer { expected in
            verdict.merge(Verdict(vm.checkHandedOut(slotID: slot.id, harvested: handedOut!, expected: expected.baseAddress!)))
        }
        if run.stats.staleWrites > 0 {
            verdict.fail("\(run.stats.staleWrites) writes through a cached writable translation after the harvest returned with the spte protected")
        }
        if run.stats.raceViolations > 0 && !strategy.racesWithShadowing {
            verdict.fail("\(run.stats.raceViolations) writes to a guest page table its shadower had returned believing write-protected")
        }

        // What the vCPUs wrote since, harvested with them idle and the
        // working set warm: the next log, and the cache pollution.
        guests.command(.warm)
        let t0 = MonotonicClock.now()
        let next = mmu.harvest(slot: slot, strategy: strategy)
        let harvestNs = MonotonicClock.now() &- t0
        guests.command(.reread)
        let afterHarvest = guests.readNs
        let t1 = MonotonicClock.now()
        while MonotonicClock.now() &- t1 < harvestNs { ca_cpu_relax() }
        guests.command(.reread)
        cost.idleRereadNs = guests.readNs
        cost.pollutionNs = afterHarvest - guests.readNs
        dirty = false

        round.expected.pages.withUnsafeBufferPointer { pages in
            run.writtenAfter.withUnsafeBufferPointer { after in
                verdict.merge(Verdict(vm.checkNextHarvest(slotID: slot.id, written: pages, next: next.bitmap, writtenAfterFirst: after)))
            }
        }
        guestCost = cost
        return verdict
    }
}
