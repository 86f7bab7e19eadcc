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
    /// clear-chunked's KVM_CLEAR_DIRTY_LOG size in pages (a multiple of 64).
    public var clearChunkPages = 1 << 18
    public var patterns = PatternParameters()
    /// Rounds of the migration scenario.
    public var migrationRounds = 10
    /// The concurrent scenario: vCPU threads running through each harvest.
    public var guestThreads = 1
    /// What a VM exit and entry cost a vCPU together, and a flush IPI per
    /// vCPU in guest mode, ns; nil: the published figures (`PublishedExitCosts`).
    public var exitCostNs: Double?
    public var ipiCostNs: Double?
    /// Cache pollution: where the guest's working set is re-read after a
    /// harvest, and its sizes (by default one within the level-2 cache,
    /// `levelTwoWorkingSetBytes`).
    public var guestCPUs: [GuestCPU] = GuestCPU.allCases.sorted()
    public var pollutionWorkingSets = [levelTwoWorkingSetBytes]

    /// The pollution's working set by default: 1 MiB, within this machine's
    /// level-2 cache. Half the last-level cache the machine keeps was the
    /// second until 2026-12-07: what the machine keeps swung between 2 and
    /// 64 MiB from run to run (so runs measured different working sets),
    /// its rows took 18 s of a default run where the 1 MiB ones took 3, and
    /// their 95% intervals stayed milliseconds wide (a re-read of 32 MiB
    /// varies by more than a harvest pollutes): `--guest-wss` still asks for it.
    public static let levelTwoWorkingSetBytes = min(1 << 20, CacheGeometry.levelTwoCacheBytes)
    /// Pauses before each TLB flush with vCPUs running (`FaultInjection.flushWindowSpins`):
    /// the flush-placement tests' injection point, 0 in every run.
    var flushWindowSpins = 0

    /// The VM exit and IPI costs the concurrent scenario charges, with
    /// their sources.
    public var exitCosts: ExitCosts {
        ExitCosts(exitNs: exitCostNs ?? PublishedExitCosts.exitNs, ipiNs: ipiCostNs ?? PublishedExitCosts.ipiNs,
                  exitSource: exitCostNs == nil ? PublishedExitCosts.exitSource : "--exit-cost",
                  ipiSource: ipiCostNs == nil ? PublishedExitCosts.ipiSource : "--ipi-cost")
    }

    public init() {}
}

/// The published measurements the concurrent scenario charges a VM exit
/// and a flush IPI by, unless `--exit-cost` and `--ipi-cost` say otherwise.
public enum PublishedExitCosts {
    /// A VM exit and the entry after it: 1,344 to 1,376 time-stamp cycles
    /// on an AMD EPYC host from VMRUN to the #VMEXIT of a guest that exits
    /// at once (M. Roth, "[PATCH v2] KVM: SVM: use vmsave/vmload for
    /// saving/restoring additional host state", LKML, December 2020), taken
    /// as 1,360 and converted at this host's time-stamp rate. The hardware
    /// world switch alone: KVM's exit dispatch adds to it.
    public static let exitCycles = 1360.0
    public static var exitNs: Double { (exitCycles * TickClock.nsPerTick).rounded() }
    public static let exitSource = "1360 TSC cycles, VMRUN to #VMEXIT on AMD EPYC (M. Roth, LKML, 2020-12, \"KVM: SVM: use vmsave/vmload for saving/restoring additional host state\")"
    /// A flush IPI, per vCPU in guest mode: 35ef80eb's dirty_log_perf_test
    /// (64 vCPUs × 4 GiB, disabling logging with the vCPUs running) took
    /// 14.33 s with 131072 TLB flushes and 4.79 s with 76: (14.33 − 4.79) s
    /// over 130996 flushes is 72.8 µs a flush to 64 running vCPUs, 1.14 µs
    /// per vCPU.
    public static let ipiNs = 1140.0
    public static let ipiSource = "1.14 us per running vCPU: 35ef80eb's dirty_log_perf_test, (14.33 s - 4.79 s) / (131072 - 76) flushes to 64 vCPUs"
}

extension RepetitionPolicy {
    /// The default: 5 timed repetitions, up to 13 where the point decides,
    /// until the median's 90% interval is within 10% of it (the interval's
    /// order statistics move inwards only at 5, 8, 11 and 13 samples: 6, 7,
    /// 9, 10, 12, 14 and 15 give it no better chance, so the caps sit
    /// there); 2 for a strategy whose every sample is above twice the best
    /// other's median (1 when a repetition is long); repetitions over 10 ms
    /// each (walks of the 16 GiB VMs, millions of pages written) 2, 3 where
    /// the point decides (a 90% interval would take 5 of each, more than
    /// the run's two minutes allow: compare judges them by series); one
    /// warm-up per strategy at a series' first point.
    public static let standard = RepetitionPolicy(fixed: nil, minimum: 5, maximum: 5, decidingMaximum: 13, relativeWidth: 0.10, confidence: 0.90,
                                                  longNs: 10e6, longMinimum: 2, longMaximum: 2, longDecidingMaximum: 3,
                                                  warmup: 1, warmupBelowNs: 0)

    /// `--quick`: from 3 to 6 (9 where the point decides), until the
    /// median's 75% interval (the range of three) is within 20% of it
    /// (its order statistics move inwards at 3, 6 and 9 samples).
    public static let quick = RepetitionPolicy(fixed: nil, minimum: 3, maximum: 6, decidingMaximum: 9, relativeWidth: 0.20, confidence: 0.75,
                                               longNs: 10e6, longMinimum: 2, longMaximum: 3, longDecidingMaximum: 3, warmup: 1, warmupBelowNs: 2e6)

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
