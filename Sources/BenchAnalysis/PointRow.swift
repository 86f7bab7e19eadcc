import DirtyLogCore

/// One strategy at one point of one series: a row of points.csv.
public struct PointRow: Sendable {
    public var series: SeriesKey
    public var strategy: MeasuredStrategy
    public var nUsedMMUPages: Int
    public var dirtyPages: Int
    /// For a rule (seed, adaptive): what it chose, with how many timed
    /// repetitions (or migration rounds) chose it.
    public var choices: [Strategy: Int] = [:]
    /// Timed repetitions, nanoseconds, warm-up excluded, in run order.
    public var samples: [Double]
    /// The model's counters (of the last repetition: each does the same
    /// work); nil for the kernel, which does not report them.
    public var counters: ProtectCounters?
    /// Bytes allocated by the measuring thread inside the timed regions, summed.
    public var allocatedBytesInTimedRegion: UInt64 = 0
    /// How many checks failed, and the first few messages.
    public var violationCount = 0
    public var violations: [String] = []
    public var cache: CacheMode
    /// Why the repetitions stopped where they did.
    public var stop: RepetitionStop = .fixed
    /// The confidence of the median's interval in points.csv: the run's
    /// repetition policy's (`RepetitionPolicy.confidence`).
    public var intervalConfidence = SampleSummary.intervalConfidence
    /// What only kernel rows have.
    public var kernel: KernelExtras? = nil
    public var phases: PhaseExtras? = nil
    /// The concurrent scenario: what the guest paid.
    public var guest: GuestExtras? = nil
    /// Harvest rounds each repetition's time adds up (the migration
    /// scenario); 1 for a sweep point.
    public var rounds = 1

    public init(series: SeriesKey, strategy: MeasuredStrategy, nUsedMMUPages: Int, dirtyPages: Int, samples: [Double],
                counters: ProtectCounters? = nil, cache: CacheMode) {
        self.series = series
        self.strategy = strategy
        self.nUsedMMUPages = nUsedMMUPages
        self.dirtyPages = dirtyPages
        self.samples = samples
        self.counters = counters
        self.cache = cache
    }

    public var backend: Backend { strategy.backend }
    public var verified: Bool { violationCount == 0 }
    /// What the seed's rule picks at this point.
    public var seedChoice: Strategy { Strategy.seedChoice(nrDirtyPages: dirtyPages, nUsedMMUPages: nUsedMMUPages) }
    /// A rule's most frequent choice (first by name on ties).
    public var chose: Strategy? {
        choices.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }?.key
    }

    public var summary: SampleSummary { SampleSummary(samples, confidence: intervalConfidence) }
    /// The whole protection work of each repetition's round: the timed
    /// harvest plus, for rings, the harvests full rings forced while the
    /// guest wrote. What plots and "best" compare.
    public var roundSummary: SampleSummary {
        guard let during = phases?.ringNsDuringWrites, during.count == samples.count else { return summary }
        return SampleSummary(zip(samples, during).map { $0 + $1 })
    }
    public var dirtyPerUsed: Double { Double(dirtyPages) / Double(max(1, nUsedMMUPages)) }
}

/// Why a point's repetitions stopped: the rule, named in points.csv's
/// reps_stop with what it claims of the row.
public enum RepetitionStop: Sendable, Equatable {
    /// `--reps` asked for a fixed count: "fixed".
    case fixed
    /// The median's interval at `confidence` within `width` of the median:
    /// "ci90<=10%".
    case interval(confidence: Double, width: Double)
    /// A long harvest's few samples within `width` of their median from
    /// lowest to highest: "range<=10%".
    case range(width: Double)
    /// Every sample above `factor` times the best other strategy's median
    /// at the point, once `RepetitionPolicy.separatedMinimum` are in: a
    /// strategy that cannot decide anything there, "separated>2x".
    case separated(factor: Double)
    /// The most repetitions the point allowed (more where it decides),
    /// before any rule held: "max-reps=9". It claims nothing.
    case maxReps(Int)

    public var name: String {
        switch self {
        case .fixed: "fixed"
        case .interval(let c, let w): String(format: "ci%.0f<=%.0f%%", c * 100, w * 100)
        case .range(let w): String(format: "range<=%.0f%%", w * 100)
        case .separated(let f): String(format: "separated>%gx", f)
        case .maxReps(let n): "max-reps=\(n)"
        }
    }

    /// Whether `samples` bear out the rule's claim (the interval or range
    /// it names is as narrow as it says): what every row must satisfy.
    public func holds(for samples: [Double]) -> Bool {
        let s = samples.sorted()
        guard !s.isEmpty else { return false }
        let median = Statistics.quantile(sorted: s, 0.5)
        switch self {
        case .interval(let c, let w):
            guard let i = Statistics.medianInterval(sorted: s, confidence: c) else { return false }
            return median <= 0 || (i.high - i.low) / median <= w + 1e-12
        case .range(let w):
            return median <= 0 || (s[s.count - 1] - s[0]) / median <= w + 1e-12
        case .fixed, .separated, .maxReps:
            return true
        }
    }
}

/// Two-phase harvests and dirty rings: what one median does not show.
public struct PhaseExtras: Sendable {
    /// Get-then-clear protocols (kvm-get+clear, clear-chunked): each
    /// phase's time, per repetition.
    public var getNs: [Double] = []
    public var clearNs: [Double] = []
    /// Rings: full-ring stops during the guest's writes, summed over
    /// repetitions, and the harvests that answered them (with untimed chunk
    /// harvests on the kernel), with their time per repetition.
    public var ringFullExits = 0
    public var ringHarvestsDuringWrites = 0
    public var ringNsDuringWrites: [Double] = []

    public init() {}
}

/// Whose clock a kernel time was read on: this host's, or a guest's under
/// QEMU's software emulation (the kernel lab), where the kernel's counts
/// are exact but every time is the emulator's.
public enum KernelClock: String, Sendable, Codable {
    case host
    case emulated

    /// The environment variable the kernel lab sets inside its guest.
    public static let environmentVariable = "DIRTY_LOG_BENCH_CLOCK"

    /// The clock the environment says this run reads: emulated when the
    /// kernel lab set `DIRTY_LOG_BENCH_CLOCK=emulated`.
    public static func fromEnvironment(_ env: [String: String]) -> KernelClock {
        env[environmentVariable] == KernelClock.emulated.rawValue ? .emulated : .host
    }

    /// What a reader must know of the kernel's times.
    public var note: String? {
        self == .emulated
            ? "kvm: every kernel time of this run was read inside QEMU's software emulation (the kernel lab): the kernel's counts are its own, exactly; its times are the emulator's, not a host's, and are set against nothing measured outside that boot"
            : nil
    }
}

/// The parts of a kernel row the model has no counterpart for.
public struct KernelExtras: Sendable {
    /// Whose clock the row's times were read on.
    public var clock = KernelClock.host
    /// `flat32` or `long64`: how the test guest ran.
    public var guestMode: String
    /// VM statistic pages_4k after the point: 4 KiB sptes the kernel holds.
    public var sptes4k: UInt64 = 0
    /// vCPU statistic insn_emulation over the point's guest writes, per write.
    public var emulatedInstructionsPerWrite: Double = 0

    public init(guestMode: String) { self.guestMode = guestMode }
}

/// One side of mmu_lock as the harvest held it over the instrumented
/// repetitions: the holds in all, the median and 99th percentile of them
/// pooled, the longest, their sum (nil without holds).
public struct LockHoldFigures: Sendable {
    public var count = 0
    public var p50Ns: Double?
    public var p99Ns: Double?
    public var maxNs: Double?
    public var totalNs: Double?

    public init() {}
}

/// What vCPUs running through the harvest paid, per point and strategy
/// (the concurrent scenario). Every count is a total over the repetitions
/// it comes from; every percentile is pooled over exactly the items that
/// count counts (an HdrHistogram, three significant digits).
///
/// The timed repetitions (the row's `reps`) run the harvest without lock
/// statistics: the vCPUs' faults. The instrumented repetitions, one after
/// each, run it with them: the harvest's holds of mmu_lock and the vCPUs'
/// waits for it; their harvest time is kept apart.
public struct GuestExtras: Sendable {
    public var vcpus: Int
    /// Whether the harvesting thread and every vCPU thread got a CPU of its own.
    public var pinned: Bool
    /// Write faults the vCPUs began while the timed harvests ran, from the
    /// VM exit to the re-entry (a shadowing fault included), and their
    /// latency; nil percentiles when there were none.
    public var faultCount = 0
    public var faultP50Ns: Double?
    public var faultP99Ns: Double?
    public var faultP999Ns: Double?
    public var faultMaxNs: Double?
    /// Of those faults: fixed by the fast path, emulated writes to a
    /// shadowed guest page table, faults that shadowed one; and the exits
    /// the harvest's flush IPIs cost them.
    public var fastFaults = 0
    public var emulatedWrites = 0
    public var shadowingFaults = 0
    public var ipiExits = 0
    /// Writes the vCPUs began while the timed harvests ran.
    public var windowWrites = 0
    /// The relog time: from the harvest's start until every vCPU had
    /// written every page of its share once after the harvest protected it
    /// (logged it anew); median over the timed repetitions. It holds the
    /// harvest: not dirty_log_perf_test's "dirty memory time", which is a
    /// pass of the vCPUs alone.
    public var relogNs: Double?
    /// The instrumented repetitions, and their harvests' median time.
    public var instrumentedReps = 0
    public var instrumentedHarvestNs: Double?
    /// The harvest's holds of mmu_lock's exclusive side (the whole spinlock,
    /// or the rwlock's write side) and of its read side (the TDP MMU).
    public var exclusiveHolds = LockHoldFigures()
    public var sharedHolds = LockHoldFigures()
    /// The vCPUs' faults in the instrumented repetitions' windows: how
    /// many, their total wait for mmu_lock, and the wait per fault.
    public var lockWaitFaults = 0
    public var lockWaitTotalNs: Double?
    public var lockWaitP50Ns: Double?
    public var lockWaitP99Ns: Double?
    public var lockWaitMaxNs: Double?
    /// The seed's race: writes through a stale writable translation of a
    /// page a shadowing fault had returned believing write-protected, over
    /// every repetition.
    public var raceViolations = 0
    /// Guest page tables shadowed meanwhile, and how many of those flushed.
    public var shadowings = 0
    public var shadowFlushes = 0

    public init(vcpus: Int, pinned: Bool) {
        self.vcpus = vcpus
        self.pinned = pinned
    }
}

extension PointRow {
    /// The kernel a concurrent row ran as: its strategy's era, or, where
    /// that era's write faults tried c7ba5b48's fast path first (3.6 on,
    /// direct sptes: two-dimensional paging) but the series ran every
    /// fault under mmu_lock, that era as an ablation no kernel ran.
    public var eraLabel: String {
        guard let era = strategy.model?.era else { return "" }
        if series.faultPath == .locked, era.hasFastPageFault, series.paging == .tdp {
            return era.rawValue + " ablation: fast path off"
        }
        return era.rawValue
    }
}
