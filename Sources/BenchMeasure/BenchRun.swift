import BenchAnalysis
import DirtyLogCore
import Foundation
import HostKVM
import ShadowMMU

/// Everything one `bench` run measures and where it writes.
public struct RunPlan: Sendable {
    public var modelSeries: [ModelSeriesSpec]
    public var kernelSeries: [KernelSeriesSpec]
    /// The lifecycle scenario's series, run after the others, and the
    /// kernel's beside the two-dimensional-paging ones.
    public var lifecycleSeries: [LifecycleSpec] = []
    public var kernelLifecycleSeries: [LifecycleSpec] = []
    public var settings: MeasureSettings
    public var kernelSettings: KernelSettings
    /// Whether the kernel was asked for by name (`--backend kvm|both`): then
    /// an unusable /dev/kvm is an error rather than a note.
    public var kernelRequired: Bool
    /// The run folder goes under this directory.
    public var outputDirectory: String
    public var quiet: Bool
    public var verbose: Bool
    /// Lines for the terminal and report.md about what the plan left out.
    public var notes: [String] = []
    /// Whether to measure a VM exit on this host's KVM beside the
    /// concurrent scenario's charged cost (the kernel backend is asked for).
    public var measuresHostExits = false
    #if DEBUG
    /// See `PlantedBug`.
    public var plantedBug: PlantedBug?
    #endif

    public init(modelSeries: [ModelSeriesSpec], kernelSeries: [KernelSeriesSpec] = [], settings: MeasureSettings,
                kernelSettings: KernelSettings = KernelSettings(), kernelRequired: Bool = false,
                outputDirectory: String, quiet: Bool, verbose: Bool = false) {
        self.modelSeries = modelSeries
        self.kernelSeries = kernelSeries
        self.settings = settings
        self.kernelSettings = kernelSettings
        self.kernelRequired = kernelRequired
        self.outputDirectory = outputDirectory
        self.quiet = quiet
        self.verbose = verbose
    }

    /// The largest amount of memory one series needs at once, in bytes: the
    /// VM, the workload of its largest point, the eviction buffer.
    public var peakMemoryBytes: Int {
        let evict = settings.cache.evicts ? CacheGeometry.fullEvictionBytes : 0
        let model = modelSeries.map { s -> Int in
            let vm: Int = s.layout.estimatedBytes(vcpus: settings.vcpus, ringEntries: settings.ringEntries)
            let workload: Int = s.layout.slotPages * (4 + 8 + 8) + DirtyBitmap.words(pages: s.layout.slotPages) * 8
            return vm + workload
        }.max() ?? 0
        return max(model + evict, lifecycleSeries.map(\.estimatedBytes).max() ?? 0)
    }

    /// The order series run in: each kernel series right after the model
    /// series it sits beside, so an interrupted run keeps pairs together.
    /// Model series of one layout run one after another (stable otherwise),
    /// so that they share one VM.
    var jobs: [Job] {
        var out: [Job] = []
        var pending = kernelSeries
        var layouts: [VMLayout] = []
        for m in modelSeries where !layouts.contains(m.layout) { layouts.append(m.layout) }
        let grouped = layouts.flatMap { l in modelSeries.filter { $0.layout == l } }
        for m in grouped {
            out.append(.model(m))
            while let i = pending.firstIndex(where: { $0.key == m.key }) { out.append(.kernel(pending.remove(at: i))) }
        }
        var lifecycles: [Job] = []
        var kernelPending = kernelLifecycleSeries
        for l in lifecycleSeries {
            lifecycles.append(.lifecycle(l))
            if let i = kernelPending.firstIndex(where: { $0.slotPages == l.slotPages && $0.backing == l.backing }) {
                lifecycles.append(.kernelLifecycle(kernelPending.remove(at: i)))
            }
        }
        return out + pending.map(Job.kernel) + lifecycles + kernelPending.map(Job.kernelLifecycle)
    }

    enum Job {
        case model(ModelSeriesSpec)
        case kernel(KernelSeriesSpec)
        case lifecycle(LifecycleSpec)
        case kernelLifecycle(LifecycleSpec)

        var label: String {
            switch self {
            case .model(let s): s.key.label
            case .kernel(let s): s.key.label + " (kvm)"
            case .lifecycle(let s): s.key.label
            case .kernelLifecycle(let s): s.key.label + " (kvm)"
            }
        }

        var isKernel: Bool {
            switch self {
            case .kernel, .kernelLifecycle: true
            default: false
            }
        }
    }
}

/// What a finished (or interrupted) run produced.
public struct RunOutcome {
    public var folder: RunFolder
    public var results: RunResults
    public var meta: RunMeta
    public var seconds: Double { meta.wallSeconds }
    public var interrupted: Interruption? { meta.interrupted }
}

/// Runs a plan: makes the run folder first (so an unwritable output fails
/// before any work), opens /dev/kvm if the plan has kernel series, then
/// measures series after series, rewriting every file whole after each one
/// so that an interrupted run leaves complete files with every finished
/// point. SIGINT or SIGTERM stops it at the next measurement.
public final class BenchRun {
    public let plan: RunPlan
    public let progress: Progress

    public init(plan: RunPlan) {
        self.plan = plan
        progress = Progress(quiet: plan.quiet, verbose: plan.verbose)
    }

    /// A VM exit on this host's KVM (`KVMGuest.measureExitRoundTrip`), or
    /// why there is none, beside the cost the concurrent scenario charges.
    static func measureHostExit(device: KVMDevice?, into costs: inout ExitCosts) {
        do {
            let guest = try KVMGuest(device: try device ?? KVMDevice(), slotPages: 512)
            let r = try guest.measureExitRoundTrip()
            costs.hostExitNs = r.ns
            costs.hostExitNote = String(format: "a cpuid loop less the loop alone, %.2f exits and %.2f emulated instructions an iteration", r.exitsPerIteration, r.emulatedPerIteration)
                + (r.emulatedPerIteration >= 1 ? ": this kernel emulates the guest's instructions, so the figure is its emulator's per instruction, not a hardware world switch" : "")
        } catch {
            costs.hostExitNote = "\(error)"
        }
    }

    public func run() throws -> RunOutcome {
        Termination.watch()
        let began = MonotonicClock.now()
        var phases = PhaseTimes()
        let folder = try RunFolder.create(under: plan.outputDirectory)
        let startedUTC = ISO8601DateFormatter().string(from: Date())
        let environment = Environment.capture()
        var notes: [String] = plan.notes
        var skipped: [SkipNote] = []
        var device: KVMDevice? = nil
        if !plan.kernelSeries.isEmpty || !plan.kernelLifecycleSeries.isEmpty {
            do {
                device = try KVMDevice()
                notes.append("kvm: \(KVMDevice.path): \(device!.summary)")
            } catch {
                if plan.kernelRequired { throw BenchError.unavailable("--backend: \(error)") }
                notes.append("kvm: \(error); the model runs alone")
                for k in plan.kernelSeries { skipped.append(SkipNote(series: k.key.label, backend: .kvm, reason: "\(error)")) }
                for k in plan.kernelLifecycleSeries { skipped.append(SkipNote(series: k.key.label + " (kvm)", backend: .kvm, reason: "\(error)")) }
            }
        }
        if device != nil, let n = plan.kernelSettings.clock.note { notes.append(n) }
        for n in notes { progress.note(n) }
        let jobs = plan.jobs.filter { !$0.isKernel || device != nil }
        progress.note("calibrating: sequential read bandwidth and cache-miss latency ...")
        // Only the kernel runs: its rows use the calibration for their
        // bandwidth column alone, so a small probe does (and a guest
        // under emulation, the kernel lab's, is not held up by a large one).
        let kernelOnly = plan.modelSeries.isEmpty && plan.lifecycleSeries.isEmpty
        var calibration = kernelOnly ? MachineProbe.measure(bufferBytes: 16 << 20, trials: 1) : MachineProbe.measure()
        let settings = plan.settings
        if plan.modelSeries.contains(where: { $0.scenario == .concurrent }) {
            let kept = MachineProbe.effectiveLastLevelCacheBytes(missLatencyNs: calibration.missLatencyNs)
            calibration.effectiveLastLevelCacheBytes = kept
            progress.note("last-level cache kept here: \(Bytes.format(kept)) (sysfs: \(Bytes.format(CacheGeometry.sysfsLastLevelCacheBytes))); "
                + "pollution working sets: " + settings.pollutionWorkingSets.map(Bytes.format).joined(separator: ", "))
        }
        progress.note(String(format: "calibration: %.1f GB/s sequential read, %.0f ns per dependent cache miss, %.0f ns timer",
                             calibration.readBandwidthGBps, calibration.missLatencyNs, calibration.timerOverheadNs))
        let eviction = plan.settings.cache.evicts ? CacheEviction(mode: plan.settings.cache == .full ? .full : .footprint) : nil
        if eviction != nil {
            calibration.evictionLastLevelCacheBytes = CacheGeometry.lastLevelCacheBytes
            if CacheGeometry.lastLevelCacheBytes < CacheGeometry.sysfsLastLevelCacheBytes {
                progress.note("full reads (the kernel's harvests, --cache full) sized by a last-level cache of \(Bytes.format(CacheGeometry.lastLevelCacheBytes)), their most, "
                    + "where sysfs reports \(Bytes.format(CacheGeometry.sysfsLastLevelCacheBytes)) (bench check-eviction --full-read "
                    + "measures what that leaves warm)")
            }
        }
        var results = RunResults(calibration: calibration)
        results.add(rows: [], skipped: skipped, notes: notes)
        if plan.modelSeries.contains(where: { $0.scenario == .concurrent }) || !plan.lifecycleSeries.isEmpty {
            var costs = plan.settings.exitCosts
            if plan.measuresHostExits { Self.measureHostExit(device: device, into: &costs) }
            results.exitCosts = costs
        }
        progress.plan(jobs.map { job in
            switch job {
            case .model(let s):
                let nUsed = s.layout.expectedShadowPages
                let counts = s.counts == .migration ? [s.layout.slotPages] : s.plannedCounts(nUsed: nUsed)
                let w = counts.reduce(0.0) { $0 + Progress.weight(dirtyPages: $1, nUsedMMUPages: nUsed) } / Double(max(1, counts.count))
                return (job.label, s.plannedPoints, w * Double(s.runnable.count))
            case .kernel(let s):
                let w = s.counts.reduce(0.0) { $0 + Progress.weight(dirtyPages: $1 * 64, nUsedMMUPages: 0) } / Double(max(1, s.counts.count))
                return (job.label, s.counts.count, w * Double(plan.kernelSettings.strategies.count))
            case .lifecycle(let s):
                // A lifecycle: about one pass of faults per iteration and the populate.
                let n = LifecycleSeries(spec: s, settings: settings, progress: progress).lifecycles.runs.count
                return (job.label, n, Double(s.iterations + 2) * Double(s.slotPages) / 2048)
            case .kernelLifecycle(let s):
                return (job.label, 2, Double(s.iterations + 2) * Double(s.slotPages) / 2048)
            }
        })
        phases.add(.startup, MonotonicClock.seconds(since: began))

        var interruption: Interruption?
        /// The adaptive rule's constants per VM layout, measured by the first series of each.
        var fits: [VMLayout: AdaptiveFit] = [:]
        /// The last model series' VM, kept while the next model series has its layout.
        var parked: ParkedVM?
        func meta() -> RunMeta {
            var p = phases
            p.add(.other, max(0, MonotonicClock.seconds(since: began) - phases.total))
            var calibration = calibration
            calibration.evictions = eviction.map { e in Dictionary(uniqueKeysWithValues: e.counts.map { ($0.key.rawValue, $0.value) }) }
            return RunMeta(runID: folder.runID, startedUTC: startedUTC, wallSeconds: MonotonicClock.seconds(since: began),
                           environment: environment, calibration: calibration, repetitions: plan.settings.repetitions,
                           cache: plan.settings.cache, seed: plan.settings.seed,
                           kvmReps: plan.kernelSettings.repetitions.fixed ?? plan.kernelSettings.repetitions.maximum,
                           kvmBudgetSeconds: plan.kernelSettings.budgetSeconds,
                           rows: results.rows.count + results.lifecycle.count,
                           rowsVerified: results.rows.filter(\.verified).count + results.lifecycle.filter(\.verified).count,
                           violations: results.violations,
                           rowsNoisy: results.rows.filter { $0.summary.noisy }.count, noisyMADFraction: SampleSummary.noisyMADFraction,
                           phases: p, interrupted: interruption, exitCosts: results.exitCosts, files: [])
        }
        func write() throws {
            let t = MonotonicClock.now()
            try folder.write(results, meta: meta())
            phases.add(.output, MonotonicClock.seconds(since: t))
        }

        for (i, job) in jobs.enumerated() {
            if let s = Termination.requested {
                interruption = Interruption(signal: Termination.name(s), during: "before \(job.label)")
                break
            }
            progress.beginSeries(i)
            let t0 = MonotonicClock.now()
            var new: [PointRow] = []
            var newLabel: String?
            var seriesPhases = PhaseTimes()
            var stoppedAt: String?
            switch job {
            case .model(let spec):
                let series = ModelSeries(spec: spec, settings: settings, eviction: eviction, progress: progress)
                #if DEBUG
                series.plantedBug = plan.plantedBug
                #endif
                series.knownFit = fits[spec.layout]
                series.reusable = parked
                parked = nil
                let outcome = try series.run()
                if let f = outcome.fit { fits[spec.layout] = f }
                if let next = jobs.dropFirst(i + 1).lazy.compactMap({ if case .model(let m) = $0 { m } else { nil } }).first,
                   next.layout == spec.layout {
                    parked = outcome.vm
                }
                new = outcome.rows
                seriesPhases = outcome.phases
                stoppedAt = outcome.interruptedAt
                results.add(rows: new, skipped: outcome.skipped, fit: outcome.adaptiveFit, pollution: outcome.pollution)
            case .kernel(let spec):
                let series = KernelSeries(spec: spec, settings: plan.kernelSettings, measure: plan.settings, eviction: eviction, progress: progress)
                do {
                    let outcome = try series.run(device: device!)
                    new = outcome.rows
                    seriesPhases = outcome.phases
                    stoppedAt = outcome.interruptedAt
                    for n in outcome.notes where !results.notes.contains(n) { progress.note(n) }
                    for s in outcome.skipped { progress.note(s.line) }
                    results.add(rows: new, skipped: outcome.skipped, notes: outcome.notes)
                } catch let e as KVMError {
                    // The kernel failed; the model's part of the run goes on.
                    results.add(rows: [], skipped: [SkipNote(series: spec.key.label, backend: .kvm, reason: "\(e)")])
                    progress.note("kvm \(spec.key.label): \(e)")
                }
            case .lifecycle(let spec):
                let series = LifecycleSeries(spec: spec, settings: settings, progress: progress)
                #if DEBUG
                series.plantedBug = plan.plantedBug
                #endif
                let outcome = try series.run()
                seriesPhases = outcome.phases
                stoppedAt = outcome.interruptedAt
                for s in outcome.skipped { progress.note(s.line) }
                results.add(skipped: outcome.skipped, lifecycle: outcome.rows)
                let bad = outcome.rows.filter { !$0.verified }
                newLabel = "\(Set(outcome.rows.map(\.lifecycleLabel)).count) lifecycles, " + (outcome.rows.isEmpty ? "nothing measured"
                    : bad.isEmpty ? "all verified" : "\(bad.count) phases NOT verified (\(bad.reduce(0) { $0 + $1.violationCount }) violations)")
            case .kernelLifecycle(let spec):
                let series = KernelLifecycleSeries(spec: spec, settings: plan.kernelSettings, progress: progress)
                do {
                    let outcome = try series.run(device: device!)
                    seriesPhases = outcome.phases
                    for n in outcome.notes where !results.notes.contains(n) { progress.note(n) }
                    for s in outcome.skipped { progress.note(s.line) }
                    results.add(skipped: outcome.skipped, notes: outcome.notes, kernelLifecycle: outcome.rows)
                    newLabel = "\(Set(outcome.rows.map(\.mode)).count) lifecycles"
                } catch let e as KVMError {
                    results.add(skipped: [SkipNote(series: spec.key.label + " (kvm)", backend: .kvm, reason: "\(e)")])
                    progress.note("kvm \(spec.key.label): \(e)")
                    newLabel = "failed"
                }
            }
            phases.merge(seriesPhases)
            if let at = stoppedAt, let s = Termination.requested {
                interruption = Interruption(signal: Termination.name(s), during: at)
            }
            try write()
            let bad = new.filter { !$0.verified }
            let seconds = String(format: "%.1f", MonotonicClock.seconds(since: t0))
            progress.note("[\(i + 1)/\(jobs.count)] \(job.label): " + (newLabel.map { "\($0) in \(seconds) s" }
                ?? "\(Set(new.map(\.dirtyPages)).count) points in \(seconds) s, "
                + (new.isEmpty ? "nothing measured" : bad.isEmpty ? "all verified"
                    : "\(bad.count) rows NOT verified (\(bad.reduce(0) { $0 + $1.violationCount }) violations)")))
            if progress.verbose {
                progress.note("    " + RunPhase.allCases.filter { seriesPhases[$0] >= 0.05 }
                    .map { String(format: "%@ %.1f s", $0.rawValue, seriesPhases[$0]) }.joined(separator: ", "))
            }
            if interruption != nil { break }
        }
        progress.finish()
        try write()
        return RunOutcome(folder: folder, results: results, meta: meta())
    }
}
