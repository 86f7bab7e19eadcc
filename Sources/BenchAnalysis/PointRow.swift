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

    public var summary: SampleSummary { SampleSummary(samples) }
    /// The whole protection work of each repetition's round: the timed
    /// harvest plus, for rings, the harvests full rings forced while the
    /// guest wrote. What plots and "best" compare.
    public var roundSummary: SampleSummary {
        guard let during = phases?.ringNsDuringWrites, during.count == samples.count else { return summary }
        return SampleSummary(zip(samples, during).map { $0 + $1 })
    }
    public var dirtyPerUsed: Double { Double(dirtyPages) / Double(max(1, nUsedMMUPages)) }
}

/// Why a point's repetitions stopped.
public enum RepetitionStop: String, Sendable, CaseIterable {
    /// `--reps` asked for a fixed count.
    case fixed
    /// The median's confidence interval became narrow enough.
    case converged
    /// The most repetitions allowed, before the interval was narrow enough.
    case maxReps = "max-reps"
    /// The point's time allowance ran out first.
    case timeCap = "time-cap"
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

/// The parts of a kernel row the model has no counterpart for.
public struct KernelExtras: Sendable {
    /// `flat32` or `long64`: how the test guest ran.
    public var guestMode: String
    /// VM statistic pages_4k after the point: 4 KiB sptes the kernel holds.
    public var sptes4k: UInt64 = 0
    /// vCPU statistic insn_emulation over the point's guest writes, per write.
    public var emulatedInstructionsPerWrite: Double = 0

    public init(guestMode: String) { self.guestMode = guestMode }
}

/// What vCPUs running through the harvest paid, per point and strategy
/// (the concurrent scenario): medians over the timed repetitions of each
/// repetition's figure, the fault latencies pooled over them.
public struct GuestExtras: Sendable {
    public var vcpus: Int
    /// The harvest's holds of mmu_lock: how many, their median, 99th
    /// percentile, longest and sum.
    public var lockHolds: Double = 0
    public var lockHoldP50Ns: Double = 0
    public var lockHoldP99Ns: Double = 0
    public var lockHoldMaxNs: Double = 0
    public var lockHoldTotalNs: Double = 0
    /// Writes the vCPUs began while the harvest ran, and how many faulted.
    public var windowWrites: Double = 0
    public var windowFaults: Double = 0
    /// Their faults' latency (pooled in an HdrHistogram, 3 significant
    /// digits); nil when none faulted during the harvest.
    public var faultP50Ns: Double?
    public var faultP99Ns: Double?
    public var faultP999Ns: Double?
    public var faultMaxNs: Double?
    /// Time the vCPUs' faults during the harvest waited for mmu_lock.
    public var lockWaitNs: Double = 0
    /// dirty_log_perf_test's "dirty memory time": the vCPUs' pass over their
    /// pages begun when the harvest returned (every one faults again).
    public var dirtyMemoryNs: Double = 0
    /// Re-reading the guest's working set after a harvest minus after an
    /// idle interval as long, and that as cache lines missed.
    public var pollutionNs: Double = 0
    public var pollutionLines: Double = 0
    /// Bytes of the working set re-read.
    public var workingSetBytes: Int = 0
    /// Its re-read after the idle interval; and, measured once per series,
    /// a read of it from memory (after flushing it) and from cache (right
    /// after another read). Pollution can show only as far as the idle
    /// re-read stays below the read from memory.
    public var idleRereadNs: Double = 0
    public var coldReadNs: Double = 0
    public var warmReadNs: Double = 0
    /// The seed's race: writes through a stale writable translation of a
    /// page a shadowing thread had returned believing write-protected,
    /// over every repetition.
    public var raceViolations = 0
    /// Guest page tables shadowed meanwhile, and how many of those flushed.
    public var shadowings = 0
    public var shadowFlushes = 0

    public init(vcpus: Int) { self.vcpus = vcpus }
}
