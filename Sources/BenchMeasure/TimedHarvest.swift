import BenchAnalysis
import CAtomics
import DirtyLogCore
import ShadowMMU

/// Something a harvest can be measured on: the model (`ModelBackend`), the
/// real kernel (`KernelBackend`), the model with vCPUs running through the
/// harvest. `TimedHarvest.measure` drives every one of them the same way.
protocol HarvestBackend {
    /// How it harvests: a model `Strategy`, a `KernelStrategy`.
    associatedtype Method
    /// What the guest writes in a round, and what the harvest must hand out.
    associatedtype Round

    /// Before the writes: the logging mode the method needs.
    mutating func beginRound(_ method: Method, _ round: Round) throws
    /// The guest writes (the rest of) the round. Returns false when a full
    /// dirty ring stopped it: `harvestFullRing` is then timed, and writing
    /// resumes.
    mutating func write(_ method: Method, _ round: Round) throws -> Bool
    /// Harvests the full rings that stopped the writes.
    mutating func harvestFullRing() throws
    /// Empties the caches of what the harvest will touch.
    func evict(_ method: Method, _ round: Round, with eviction: CacheEviction)
    /// Just before and just after the timed region: what must happen at
    /// the harvest's edges without being inside it (the concurrent
    /// scenario's window markers).
    func harvestWillBegin()
    func harvestDidEnd()
    /// The harvest, inside the timed region; a two-phase one marks its phases.
    mutating func harvest(_ method: Method, phases: inout HarvestPhaseMarks) throws -> HarvestOutcome
    /// Checks what the harvest left and handed out against the round.
    mutating func verify(_ method: Method, _ round: Round, _ outcome: HarvestOutcome) throws -> Verdict
    /// With vCPUs running through it: what the last harvest cost them.
    var guestCost: GuestCost? { get }
}

extension HarvestBackend {
    var guestCost: GuestCost? { nil }
    func harvestWillBegin() {}
    func harvestDidEnd() {}
}

/// A backend measuring the model's strategies on rounds of guest writes:
/// what a model series can drive.
protocol ModelHarvestBackend: HarvestBackend where Method == Strategy, Round == GuestRound {
    var vm: VirtualMachine { get }
}

/// What a harvest says about itself.
struct HarvestOutcome {
    /// For a rule (seed, adaptive): what it chose.
    var choice: Strategy?
    /// The model's counters; nil for the kernel.
    var counters: ProtectCounters?
}

/// What the checks found: nothing, or how many violations and the first few.
struct Verdict: Sendable {
    var count = 0
    var messages: [String] = []
    static let kept = 8

    var ok: Bool { count == 0 }

    mutating func fail(_ message: String) {
        if messages.count < Self.kept { messages.append(message) }
        count += 1
    }

    mutating func merge(_ other: Verdict) {
        for m in other.messages where messages.count < Self.kept { messages.append(m) }
        count += other.count
    }

    init() {}

    init(_ report: InvariantReport) {
        count = report.count
        messages = report.violations
    }
}

/// The harness's one timed region. Every nanosecond a harvest is reported
/// to take was read here: between a compiler barrier and a clock read on
/// each side, with the measuring thread's allocation counter read just
/// outside them, so that a region that allocates is caught.
enum TimedRegion {
    @inline(__always)
    static func time<R>(_ allocations: ThreadAllocationCounter, _ body: () throws -> R) rethrows
        -> (result: R, start: UInt64, ns: UInt64, allocated: UInt64) {
        let a0 = allocations.allocatedBytes
        ca_compiler_barrier()
        let t0 = MonotonicClock.now()
        let r = try body()
        let t1 = MonotonicClock.now()
        ca_compiler_barrier()
        let a1 = allocations.allocatedBytes
        return (r, t0, t1 &- t0, a1 &- a0)
    }
}

/// One measured harvest and what came with it.
struct Measurement {
    var ns: UInt64 = 0
    var allocated: UInt64 = 0
    /// Two-phase harvests: each phase.
    var getNs: UInt64 = 0
    var clearNs: UInt64 = 0
    /// Harvests full rings forced during the writes, and their time.
    var ringStops = 0
    var ringNs: UInt64 = 0
    var outcome = HarvestOutcome()
    var verdict = Verdict()
    /// The whole repetition: writes, eviction, harvest and checks.
    var repetitionNs: UInt64 = 0

    /// Adds a round's measurement to a migration total.
    mutating func accumulate(_ m: Measurement) {
        ns &+= m.ns
        allocated &+= m.allocated
        getNs &+= m.getNs
        clearNs &+= m.clearNs
        ringNs &+= m.ringNs
        ringStops += m.ringStops
        repetitionNs &+= m.repetitionNs
        outcome = m.outcome
        verdict.merge(m.verdict)
    }
}

/// The one timed path: every harvest the harness times (sweep points,
/// migration rounds, the adaptive rule's calibration, the kernel's) is
/// measured by `measure`, which prepares the round, evicts, times and
/// verifies, and accounts the time of each step to its phase.
struct TimedHarvest {
    let eviction: CacheEviction?
    let allocations = ThreadAllocationCounter()
    /// Where the time went, step by step.
    var phases = PhaseTimes()

    init(eviction: CacheEviction?) {
        self.eviction = eviction
    }

    /// One measurement of `method` on `backend` after `round`'s writes.
    mutating func measure<B: HarvestBackend>(_ backend: inout B, _ method: B.Method, _ round: B.Round) throws -> Measurement {
        var m = Measurement()
        let started = MonotonicClock.now()
        try backend.beginRound(method, round)
        while try !backend.write(method, round) {
            let (_, _, ns, _) = try TimedRegion.time(allocations) { try backend.harvestFullRing() }
            m.ringNs &+= ns
            m.ringStops += 1
        }
        let written = MonotonicClock.now()
        if let eviction { backend.evict(method, round, with: eviction) }
        let evicted = MonotonicClock.now()

        var marks = HarvestPhaseMarks()
        backend.harvestWillBegin()
        let (outcome, start, ns, allocated) = try TimedRegion.time(allocations) { try backend.harvest(method, phases: &marks) }
        backend.harvestDidEnd()
        m.ns = ns
        m.allocated = allocated
        m.outcome = outcome
        if marks.firstPhaseEnd > 0 {
            // Both phases lie within the region; the clock read between them
            // is counted in the second.
            m.getNs = marks.firstPhaseEnd &- start
            m.clearNs = ns &- m.getNs
        }
        let timed = MonotonicClock.now()
        m.verdict = try backend.verify(method, round, outcome)
        let verified = MonotonicClock.now()
        m.repetitionNs = verified &- started

        phases.add(.guestWrites, Double(written &- started) / 1e9)
        phases.add(.eviction, Double(evicted &- written) / 1e9)
        phases.add(.timedHarvests, Double(timed &- evicted) / 1e9)
        phases.add(.checks, Double(verified &- timed) / 1e9)
        return m
    }
}
