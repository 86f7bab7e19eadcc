import DirtyLogCore
import Foundation

/// The machine and software a run measured on.
public struct Environment: Codable, Sendable {
    public var cpuModel: String
    public var cores: Int
    public var memoryBytes: Int
    public var kernel: String
    public var swiftVersion: String
    public var jemallocVersion: String
    public var transparentHugePages: String
    public var lastLevelCacheBytes: Int
    public var gitCommit: String
    public var gitDirty: Bool
    public var commandLine: [String]
    public var kvm: String

    public init(cpuModel: String, cores: Int, memoryBytes: Int, kernel: String, swiftVersion: String, jemallocVersion: String,
                transparentHugePages: String, lastLevelCacheBytes: Int, gitCommit: String, gitDirty: Bool,
                commandLine: [String], kvm: String) {
        self.cpuModel = cpuModel
        self.cores = cores
        self.memoryBytes = memoryBytes
        self.kernel = kernel
        self.swiftVersion = swiftVersion
        self.jemallocVersion = jemallocVersion
        self.transparentHugePages = transparentHugePages
        self.lastLevelCacheBytes = lastLevelCacheBytes
        self.gitCommit = gitCommit
        self.gitDirty = gitDirty
        self.commandLine = commandLine
        self.kvm = kvm
    }
}

/// The machine's limits, measured at the start of every run the way the
/// strategies use memory: efficiency columns in points.csv are relative to
/// these (BenchMeasure's `MachineProbe` measures them).
public struct MachineCalibration: Sendable, Codable {
    /// Sequential read bandwidth over a buffer far larger than the
    /// last-level cache, bytes per nanosecond (= GB/s).
    public var readBandwidthGBps: Double
    /// A dependent load that misses the caches, nanoseconds.
    public var missLatencyNs: Double
    /// Two back-to-back clock reads, nanoseconds: inside every measurement.
    public var timerOverheadNs: Double
    public var bufferBytes: Int
    /// The last-level cache the run found the machine keeps (measured when
    /// the concurrent scenario runs; see BenchMeasure's
    /// `MachineProbe.effectiveLastLevelCacheBytes`).
    public var effectiveLastLevelCacheBytes: Int?
    /// The last-level cache the full reads were sized by (the kernel's harvests, `--cache full`): sysfs's, at most
    /// 128 MiB (BenchMeasure's `CacheGeometry.lastLevelCacheBytes`). Nil
    /// when nothing was evicted.
    public var evictionLastLevelCacheBytes: Int?
    /// How many evictions of each kind the run made ("footprint": a model
    /// harvest's lines and the executable's code flushed; "full": a read of twice
    /// the last-level cache, for `--cache full` and the kernel's harvests).
    /// Nil when nothing was evicted.
    public var evictions: [String: Int]?

    public init(readBandwidthGBps: Double, missLatencyNs: Double, timerOverheadNs: Double, bufferBytes: Int) {
        self.readBandwidthGBps = readBandwidthGBps
        self.missLatencyNs = missLatencyNs
        self.timerOverheadNs = timerOverheadNs
        self.bufferBytes = bufferBytes
    }
}

extension MachineCalibration {
    /// The calibration in `folder`'s meta.json; nil when it has none.
    public static func load(runFolder folder: String) -> MachineCalibration? {
        struct Meta: Decodable { var calibration: MachineCalibration }
        let url = URL(fileURLWithPath: folder).appendingPathComponent("meta.json")
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(Meta.self, from: data).calibration
    }

    /// "12.2 GB/s, 55 ns a miss": what `bench compare` shows of each run.
    public var summary: String {
        String(format: "%.1f GB/s, %.0f ns a miss", readBandwidthGBps, missLatencyNs)
    }
}

/// How a run decided how many repetitions each point gets: repetitions go
/// where a decision depends on them. Each strategy at a point repeats until
/// one of these rules holds, checked in this order after each repetition
/// (the first that holds is the row's reps_stop, `RepetitionStop`):
///
/// - separated: every sample above `separation` times the best other
///   strategy's median at the point, after `separatedMinimum` repetitions,
///   or one when a repetition is long (over `longNs`, writes and checks
///   included): it decides nothing there;
/// - long repetitions where the point does not decide: `longMinimum` to
///   `longMaximum`, until their range is within `relativeWidth`;
/// - converged: after `minimum`, the median's interval at `confidence`
///   within `relativeWidth` of it;
/// - the cap: `maximum` repetitions, or `decidingMaximum` where the point
///   decides (within an octave of n_used_mmu_pages or of the rmap/slot-walk
///   crossover, or its interval overlapping the best other strategy's);
///   `longDecidingMaximum` there for a long repetition.
public struct RepetitionPolicy: Codable, Sendable, Equatable {
    /// `--reps N`: exactly N timed repetitions everywhere; nil when adaptive.
    public var fixed: Int?
    /// Adaptive: at least and at most this many timed repetitions...
    public var minimum: Int
    public var maximum: Int
    /// ... and at most this many where the point decides.
    public var decidingMaximum: Int
    /// ... stopping once the median's interval at `confidence` is at most
    /// this wide, relative to the median.
    public var relativeWidth: Double
    public var confidence: Double
    /// A strategy all of whose samples exceed this many times the best
    /// other strategy's median stops after `separatedMinimum` repetitions.
    public var separation: Double
    public var separatedMinimum: Int
    /// Repetitions that take longer than this many nanoseconds each, guest
    /// writes and checks included (whole-slot walks of large VMs, rounds of
    /// millions of pages: few, stable, costly), stop at `longMinimum` to
    /// `longMaximum`, once their range is within `relativeWidth`.
    public var longNs: Double
    public var longMinimum: Int
    public var longMaximum: Int
    /// Where the point decides, a long repetition too repeats until its
    /// median's interval is narrow enough, but at most this many times.
    public var longDecidingMaximum: Int
    /// Untimed repetitions first: at a series' first point, and at later
    /// ones for harvests shorter than `warmupBelowNs` (0: never; the
    /// previous point's repetitions trained the strategy's predictors, and
    /// the eviction empties the caches before every timed one anyway).
    public var warmup: Int
    public var warmupBelowNs: Double

    public init(fixed: Int?, minimum: Int, maximum: Int, decidingMaximum: Int? = nil, relativeWidth: Double, confidence: Double,
                separation: Double = 2, separatedMinimum: Int = 2,
                longNs: Double = 1e18, longMinimum: Int = 3, longMaximum: Int = 5, longDecidingMaximum: Int = 5,
                warmup: Int, warmupBelowNs: Double) {
        self.fixed = fixed
        self.minimum = minimum
        self.maximum = maximum
        self.decidingMaximum = decidingMaximum ?? maximum
        self.relativeWidth = relativeWidth
        self.confidence = confidence
        self.separation = separation
        self.separatedMinimum = min(separatedMinimum, minimum)
        self.longNs = longNs
        self.longMinimum = longMinimum
        self.longMaximum = longMaximum
        self.longDecidingMaximum = longDecidingMaximum
        self.warmup = warmup
        self.warmupBelowNs = warmupBelowNs
    }

    /// For reports: "5-9 repetitions (15 where the point decides) until ...".
    public var description: String {
        if let n = fixed { return "\(n) repetitions (+\(warmup) warm-up)" }
        var s = String(format: "%@ repetitions (%d where the point decides) until the median's %.0f%% interval is within %.0f%% of it",
                       minimum == maximum ? "\(minimum)" : "\(minimum)-\(maximum)", decidingMaximum, confidence * 100, relativeWidth * 100)
        s += String(format: "; %d where every sample is above %gx the best other strategy's median and the point decides nothing for it",
                    separatedMinimum, separation)
        if longNs < 1e17 {
            let long = longMinimum == longMaximum ? "\(longMinimum)" : "\(longMinimum)-\(longMaximum)"
            s += String(format: "; repetitions over %@ each: 1 as far from the best, else %@ until their range is within %.0f%% (%d where the point decides)",
                        Reports.duration(longNs), long, relativeWidth * 100, longDecidingMaximum)
        }
        return s + (warmupBelowNs > 0 ? " (+\(warmup) warm-up below \(Reports.duration(warmupBelowNs)))"
                                      : " (+\(warmup) warm-up at a series' first point)")
    }

    /// Untimed repetitions before the timed ones, given what the strategy
    /// took at the last point (nil before the first).
    public func warmups(lastMedianNs: Double?) -> Int {
        guard let last = lastMedianNs else { return warmup }
        return last < warmupBelowNs ? warmup : 0
    }

    /// Why to stop after these timed samples, each repetition having taken
    /// `repetitionNs` in all, or nil to go on. `deciding`: the point decides
    /// something for this strategy; `bestOther`: the best median of the
    /// other strategies at the point, if any has `separatedMinimum` samples.
    public func stop(after samples: [Double], repetitionNs: Double, deciding: Bool = false, bestOther: Double? = nil) -> RepetitionStop? {
        if let n = fixed { return samples.count >= n ? .fixed : nil }
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        // Twice the best other strategy's median: nothing turns on its
        // precision; one long repetition is enough for that (a walk of the
        // 16 GiB slot under shadow paging takes a quarter of a second).
        let long = repetitionNs >= longNs
        // Not where the point decides: a sentence of the report reads its
        // median there, and a test of it needs the samples to reject it.
        if !deciding, samples.count >= (long ? 1 : separatedMinimum), let best = bestOther, sorted[0] > separation * best {
            return .separated(factor: separation)
        }
        // A long repetition where the point decides nothing: few.
        if long && !deciding {
            if samples.count >= longMinimum, RepetitionStop.range(width: relativeWidth).holds(for: sorted) { return .range(width: relativeWidth) }
            return samples.count >= longMaximum ? .maxReps(samples.count) : nil
        }
        let converged = RepetitionStop.interval(confidence: confidence, width: relativeWidth)
        if samples.count >= minimum, converged.holds(for: sorted) { return converged }
        // The cap in force depends on this repetition's length too (a
        // repetition may cross `longNs` between samples): the rule names
        // the count it stopped at, which is at least that cap.
        let cap = !deciding ? maximum : long ? longDecidingMaximum : decidingMaximum
        return samples.count >= cap ? .maxReps(samples.count) : nil
    }
}

/// Where a run spent its wall time, by phase, in seconds.
public struct PhaseTimes: Codable, Sendable, Equatable {
    public var seconds: [String: Double] = [:]

    public init() {}

    public mutating func add(_ phase: RunPhase, _ s: Double) { seconds[phase.rawValue, default: 0] += s }
    public mutating func merge(_ other: PhaseTimes) { for (k, v) in other.seconds { seconds[k, default: 0] += v } }
    public subscript(_ phase: RunPhase) -> Double { seconds[phase.rawValue] ?? 0 }
    public var total: Double { seconds.values.reduce(0, +) }
}

/// The phases a run's time is accounted to.
public enum RunPhase: String, CaseIterable, Codable, Sendable {
    case startup = "startup"                  // environment, machine probe, /dev/kvm
    case vmBuild = "vm-build"                 // building and populating model VMs
    case adaptiveCalibration = "adaptive-calibration"
    case guestWrites = "guest-writes"         // the rounds' writes (rings harvested during them included)
    case eviction = "eviction"
    case timedHarvests = "timed-harvests"
    case checks = "checks"                    // the invariant after every harvest and point
    case pollution = "pollution"              // the concurrent scenario's harvest/idle pairs
    case lifecycle = "lifecycle"              // the lifecycle's phases, its checks and restores
    case kernelSetup = "kernel-setup"         // kernel VMs, populating
    case kernelWrites = "kernel-writes"
    case kernelHarvests = "kernel-harvests"
    case output = "output"                    // writing the run folder
    case other = "other"
}

/// What the concurrent scenario charged a vCPU for the kernel's
/// transitions, and where the figures come from.
public struct ExitCosts: Codable, Sendable, Equatable {
    /// A VM exit and the entry after it, together (`--exit-cost`).
    public var exitNs: Double
    /// A flush IPI, from its sending to its target's exit, per vCPU in
    /// guest mode (`--ipi-cost`).
    public var ipiNs: Double
    /// Where each figure comes from: a published measurement, or the option.
    public var exitSource: String
    public var ipiSource: String
    /// This host's KVM, measured: a guest looping over an exiting
    /// instruction, per exit, and how (nil where /dev/kvm runs no guest).
    public var hostExitNs: Double?
    public var hostExitNote: String?

    public init(exitNs: Double, ipiNs: Double, exitSource: String, ipiSource: String, hostExitNs: Double? = nil, hostExitNote: String? = nil) {
        self.exitNs = exitNs
        self.ipiNs = ipiNs
        self.exitSource = exitSource
        self.ipiSource = ipiSource
        self.hostExitNs = hostExitNs
        self.hostExitNote = hostExitNote
    }
}

/// Why and where a run stopped early.
public struct Interruption: Codable, Sendable, Equatable {
    /// "SIGINT" or "SIGTERM".
    public var signal: String
    /// The series and point under way.
    public var during: String

    public init(signal: String, during: String) {
        self.signal = signal
        self.during = during
    }
}

/// meta.json: the run's environment, calibration and settings, for programs.
public struct RunMeta: Codable, Sendable {
    public var runID: String
    public var startedUTC: String
    public var wallSeconds: Double
    public var environment: Environment
    public var calibration: MachineCalibration
    public var repetitions: RepetitionPolicy
    public var cache: CacheMode
    public var seed: UInt64
    public var kvmReps: Int
    public var kvmBudgetSeconds: Double
    public var rows: Int
    public var rowsVerified: Int
    public var violations: Int
    public var rowsNoisy: Int
    public var noisyMADFraction: Double
    /// Where the wall time went.
    public var phases: PhaseTimes
    /// Set when a signal stopped the run before the end.
    public var interrupted: Interruption?
    /// The concurrent scenario's VM exit and IPI costs, when it ran.
    public var exitCosts: ExitCosts?
    public var files: [String]

    public init(runID: String, startedUTC: String, wallSeconds: Double, environment: Environment, calibration: MachineCalibration,
                repetitions: RepetitionPolicy, cache: CacheMode, seed: UInt64, kvmReps: Int, kvmBudgetSeconds: Double,
                rows: Int, rowsVerified: Int, violations: Int, rowsNoisy: Int, noisyMADFraction: Double,
                phases: PhaseTimes, interrupted: Interruption?, exitCosts: ExitCosts? = nil, files: [String]) {
        self.runID = runID
        self.startedUTC = startedUTC
        self.wallSeconds = wallSeconds
        self.environment = environment
        self.calibration = calibration
        self.repetitions = repetitions
        self.cache = cache
        self.seed = seed
        self.kvmReps = kvmReps
        self.kvmBudgetSeconds = kvmBudgetSeconds
        self.rows = rows
        self.rowsVerified = rowsVerified
        self.violations = violations
        self.rowsNoisy = rowsNoisy
        self.noisyMADFraction = noisyMADFraction
        self.phases = phases
        self.interrupted = interrupted
        self.exitCosts = exitCosts
        self.files = files
    }
}

extension CacheMode: Codable {}
