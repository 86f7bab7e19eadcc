import ArgumentParser
import BenchAnalysis
import BenchMeasure
import Foundation
import DirtyLogCore

/// The options every run shares, the default sweep and its presets alike:
/// how hard each point is measured, where the files go, the backends, the
/// model's knobs.
struct MeasurementOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Exactly this many timed repetitions per point and strategy, 1 to 1000. (default: as many as the median needs: "
        + RepetitionPolicy.standard.description + ". --quick and the concurrent scenario: " + RepetitionPolicy.quick.description
        + ". The kernel: " + RepetitionPolicy.kernel.description + ")", valueName: "n"))
    var reps: Int?

    @Option(help: ArgumentHelp("Untimed repetitions before them, 0 to 100; with adaptive repetitions only for harvests under 2 ms. (default: 1)", valueName: "n"))
    var warmup: Int?

    @Option(help: ArgumentHelp("cold: evict what each harvest will touch from the caches before timing it (clflushopt of its lines, however many, and of the executable's code); full: a read of twice the last-level cache instead, the slow way cold is checked against (bench check-eviction); warm: evict nothing.", valueName: "mode"))
    var cache = Defaults.cache

    @Option(help: ArgumentHelp("Seed of random patterns, shadow layouts and strategy order.", valueName: "n"))
    var seed = Defaults.seed

    @Option(help: ArgumentHelp("Where run folders go.", valueName: "dir"))
    var output = Defaults.output

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @Flag(help: "After each series, where its time went (VM build, calibration, writes, eviction, harvests, checks).")
    var verbose = false

    @Option(help: ArgumentHelp("model, kvm or both: kvm runs the same series on the real kernel through /dev/kvm. (default: both, the kernel when /dev/kvm opens)", valueName: "name"))
    var backend: BackendChoice?

    @Option(name: .customLong("kvm-reps"), help: ArgumentHelp("Exactly this many timed repetitions per kernel point and strategy, 1 to 1000. (default: 3 to 5, until the median's interval is within 20%)", valueName: "n"))
    var kvmReps: Int?

    @Option(name: .customLong("kvm-budget"), help: ArgumentHelp("Seconds one kernel series may take, 1 to 86400; the points that would exceed it are skipped and listed in skipped.csv. (default: \(Defaults.kvmBudgetSeconds))", valueName: "seconds"))
    var kvmBudget: Int?

    @Option(help: ArgumentHelp("vCPUs writing; each has a dirty ring and a PML buffer, 1 to 64. (default: 2)", valueName: "n"))
    var vcpus: Int?

    @Option(name: .customLong("ring-entries"), help: ArgumentHelp("Entries of each vCPU's dirty ring for ring, a power of two from 128 to 1048576. (default: 65536)", valueName: "n"))
    var ringEntries: Int?

    @Option(name: .customLong("clear-chunk-pages"), help: ArgumentHelp("clear-chunked's KVM_CLEAR_DIRTY_LOG size, a multiple of 64 pages. (default: 262144, QEMU's 1 GiB)", valueName: "size"))
    var clearChunkPages: PageCount?

    @Option(help: ArgumentHelp("Strategies: \(Strategy.allCases.map(\.rawValue).joined(separator: ", ")). (default: all but rmap-fixed; concurrent: \(Strategy.concurrentDefaults.map(\.rawValue).joined(separator: ",")))", valueName: "names"))
    var strategy: CommaList<Strategy>?

    /// The defaults these options fall back to.
    enum Defaults {
        static let cache = CacheMode.cold
        static let seed: UInt64 = 1
        static let output = "results"
        static let kvmBudgetSeconds = 2
    }

    /// Bounds the options accept.
    enum Limits {
        static let reps = 1...1000
        static let warmup = 0...100
        static let kvmBudgetSeconds = 1...86400
        static let vcpus = 1...64
        static let ringEntries = 128...(1 << 20)
        static let clearChunkPages = 64...(1 << 28)
    }

    /// The measurement settings and the kernel's, every value checked
    /// against its bounds; `quick` asks for the small sweep's repetitions.
    func settings(quick: Bool) throws -> (MeasureSettings, KernelSettings) {
        var s = MeasureSettings()
        let warm = try warmup.map { try Check.int($0, "--warmup", Limits.warmup) } ?? 1
        if let n = reps {
            s.repetitions = .fixed(try Check.int(n, "--reps", Limits.reps), warmup: warm)
        } else {
            s.repetitions = quick ? .quick : .standard
            s.repetitions.warmup = warm
        }
        s.cache = cache
        s.seed = seed
        s.vcpus = try vcpus.map { try Check.int($0, "--vcpus", Limits.vcpus) } ?? s.vcpus
        s.ringEntries = try ringEntries.map {
            let v = try Check.int($0, "--ring-entries", Limits.ringEntries, unit: "entries, a power of two")
            guard v & (v - 1) == 0 else { throw BenchError.usage("--ring-entries: \(v) is not a power of two; accepted: 128 to 1048576 entries, a power of two") }
            return v
        } ?? s.ringEntries
        s.clearChunkPages = try clearChunkPages.map {
            let v = try Check.int($0.pages, "--clear-chunk-pages", Limits.clearChunkPages, unit: "pages")
            guard v % 64 == 0 else { throw BenchError.usage("--clear-chunk-pages: \(v) pages is not a multiple of 64; accepted: 64 to 268435456 pages, a multiple of 64") }
            return v
        } ?? s.clearChunkPages
        guard !output.isEmpty else { throw BenchError.usage("--output: empty path; give a directory") }
        var k = KernelSettings(
            repetitions: try kvmReps.map { .fixed(try Check.int($0, "--kvm-reps", Limits.reps), warmup: warm) } ?? .kernel,
            budgetSeconds: Double(try kvmBudget.map { try Check.int($0, "--kvm-budget", Limits.kvmBudgetSeconds, unit: "seconds") }
                ?? Defaults.kvmBudgetSeconds))
        if kvmReps == nil { k.repetitions.warmup = warm }
        k.clock = KernelClock.fromEnvironment(ProcessInfo.processInfo.environment)
        return (s, k)
    }

    /// The options given a value other than their default, by name: for the
    /// subcommands that take only some of them.
    var optionsGiven: [String] {
        var given: [String] = []
        if reps != nil { given.append("--reps") }
        if warmup != nil { given.append("--warmup") }
        if cache != Defaults.cache { given.append("--cache") }
        if seed != Defaults.seed { given.append("--seed") }
        if output != Defaults.output { given.append("--output") }
        if quiet { given.append("--quiet") }
        if verbose { given.append("--verbose") }
        if backend != nil { given.append("--backend") }
        if kvmReps != nil { given.append("--kvm-reps") }
        if kvmBudget != nil { given.append("--kvm-budget") }
        if vcpus != nil { given.append("--vcpus") }
        if ringEntries != nil { given.append("--ring-entries") }
        if clearChunkPages != nil { given.append("--clear-chunk-pages") }
        if strategy != nil { given.append("--strategy") }
        return given
    }

    /// The strategies asked for; by default all but rmap-fixed, which
    /// differs from rmap only with vCPUs running through the harvest.
    var strategies: [Strategy] { strategy?.values ?? Strategy.sweepDefaults }
}

/// Range checks with one-line usage errors naming the option and what it accepts.
enum Check {
    static func int(_ v: Int, _ option: String, _ range: ClosedRange<Int>, unit: String = "") throws -> Int {
        guard range.contains(v) else {
            throw BenchError.usage("\(option): \(v) is out of range; accepted: \(range.lowerBound) to \(range.upperBound)" + (unit.isEmpty ? "" : " \(unit)"))
        }
        return v
    }

    /// A cost in ns: 0 to a millisecond.
    static func nanoseconds(_ v: Double, _ option: String) throws -> Double {
        guard v.isFinite, v >= 0, v <= 1e6 else {
            throw BenchError.usage("\(option): \(v) is out of range; accepted: 0 to 1000000 ns")
        }
        return v
    }

    static func pages(_ p: PageCount, _ option: String, _ range: ClosedRange<Int>) throws -> Int {
        guard range.contains(p.pages) else {
            throw BenchError.usage("\(option): \(p.pages) pages is out of range; accepted: \(range.lowerBound) to \(range.upperBound) pages "
                + "(\(Bytes.pages(range.lowerBound)) to \(Bytes.pages(range.upperBound))), as a page count or a size such as 1GiB")
        }
        return p.pages
    }
}
