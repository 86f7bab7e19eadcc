import BenchAnalysis
import DirtyLogCore

/// How much effort each point gets, and the model's knobs.
public struct MeasureSettings: Sendable {
    public var repetitions: RepetitionPolicy = .standard
    public var cache: CacheMode = .cold
    /// Seeds random patterns, shadow-paging layouts and strategy order.
    public var seed: UInt64 = 1
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
    /// The concurrent scenario: vCPU threads running through each harvest,
    /// and the bytes of guest memory they keep warm and re-read (a quarter
    /// of the last-level cache).
    public var guestThreads = 1
    public var guestWorkingSetBytes = max(1 << 20, CacheGeometry.lastLevelCacheBytes / 4)
    /// Pauses after each of rmap's per-gfn unlocks (`VMState.raceWindowSpins`):
    /// the race test's injection point, 0 in every run.
    var raceWindowSpins = 0

    public init() {}
}

extension RepetitionPolicy {
    /// The default: from 5 to 9 timed repetitions, until the median's 90%
    /// interval is within 10% of it; repetitions over 10 ms each (walks
    /// of the 16 GiB VMs, millions of pages written) 2, whose cost barely
    /// varies (no single point of so few can be told apart anyway: compare
    /// judges them by series); one warm-up for harvests under 2 ms.
    public static let standard = RepetitionPolicy(fixed: nil, minimum: 5, maximum: 9, relativeWidth: 0.10, confidence: 0.90,
                                                  longNs: 10e6, longMinimum: 2, longMaximum: 2, warmup: 1, warmupBelowNs: 2e6)

    /// `--quick`: from 3 to 7, until the median's 75% interval (the range
    /// of three) is within 20% of it.
    public static let quick = RepetitionPolicy(fixed: nil, minimum: 3, maximum: 7, relativeWidth: 0.20, confidence: 0.75,
                                               longNs: 10e6, longMinimum: 2, longMaximum: 3, warmup: 1, warmupBelowNs: 2e6)

    /// The concurrent scenario's default, whose repetitions each run two
    /// harvests and the vCPUs' passes, and whose figures are medians of
    /// per-repetition values: `--quick`'s.
    public static let concurrent = quick

    /// The kernel's default, whose guest writes are slow: from 3 to 5, until
    /// the median's 75% interval is within 20% of it.
    public static let kernel = RepetitionPolicy(fixed: nil, minimum: 3, maximum: 5, relativeWidth: 0.20, confidence: 0.75,
                                                warmup: 1, warmupBelowNs: 1e18)

    /// Exactly `n` timed repetitions after `warmup` untimed ones, everywhere.
    public static func fixed(_ n: Int, warmup: Int = 1) -> RepetitionPolicy {
        RepetitionPolicy(fixed: n, minimum: n, maximum: n, relativeWidth: 0, confidence: SampleSummary.intervalConfidence,
                         warmup: warmup, warmupBelowNs: 1e18)
    }
}
