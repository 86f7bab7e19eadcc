import Foundation
import HostKVM
import ShadowMMU

/// Which implementations a run measures.
public enum Backend: String, CaseIterable, Sendable {
    case model, kvm, both

    var includesModel: Bool { self != .kvm }
    var includesKernel: Bool { self != .model }
}

/// Everything one `bench` run measures and where it writes.
public struct RunPlan: Sendable {
    public var modelSeries: [ModelSeriesSpec]
    public var kernelSeries: [KernelSeriesSpec]
    public var settings: MeasureSettings
    public var kernelSettings: KernelSettings
    /// Whether the kernel was asked for by name (`--backend kvm|both`): then
    /// an unusable /dev/kvm is an error rather than a note.
    public var kernelRequired: Bool
    /// The run folder goes under this directory.
    public var outputDirectory: String
    public var quiet: Bool

    public init(modelSeries: [ModelSeriesSpec], kernelSeries: [KernelSeriesSpec] = [], settings: MeasureSettings,
                kernelSettings: KernelSettings = KernelSettings(), kernelRequired: Bool = false,
                outputDirectory: String, quiet: Bool) {
        self.modelSeries = modelSeries
        self.kernelSeries = kernelSeries
        self.settings = settings
        self.kernelSettings = kernelSettings
        self.kernelRequired = kernelRequired
        self.outputDirectory = outputDirectory
        self.quiet = quiet
    }

    /// The largest amount of memory one series needs at once, in bytes: the
    /// VM, the workload of its largest point, the cache-flush buffer.
    public var peakMemoryBytes: Int {
        let flush = settings.cache == .cold ? max(64 << 20, 2 * CacheFlusher.lastLevelCacheBytes) : 0
        return (modelSeries.map { s in
            s.layout.estimatedBytes(vcpus: settings.vcpus, ringEntries: settings.ringEntries) + s.layout.slotPages * (4 + 8) + DirtyBitmap.words(pages: s.layout.slotPages) * 8
        }.max() ?? 0) + flush
    }

    /// The order series run in: each kernel series right after the model
    /// series it sits beside, so an interrupted run keeps pairs together.
    var jobs: [Job] {
        var out: [Job] = []
        var pending = kernelSeries
        for m in modelSeries {
            out.append(.model(m))
            while let i = pending.firstIndex(where: { $0.key == m.key }) { out.append(.kernel(pending.remove(at: i))) }
        }
        return out + pending.map(Job.kernel)
    }

    enum Job {
        case model(ModelSeriesSpec)
        case kernel(KernelSeriesSpec)

        var label: String {
            switch self {
            case .model(let s): s.key.label
            case .kernel(let s): s.key.label + " (kvm)"
            }
        }
    }
}

/// What a finished run produced.
public struct RunOutcome {
    public var directory: String
    public var rows: [PointRow]
    public var crossover: [CrossoverRow]
    public var skipped: [SkipNote]
    /// Lines for the terminal about the kernel: unavailable, emulated, ...
    public var notes: [String]
    public var calibration: Calibration
    /// The adaptive rule's constants, per series that measured them.
    public var adaptiveFits: [(SeriesKey, AdaptiveFit)] = []
    public var seconds: Double
}

/// Runs a plan: makes the run folder first (so an unwritable output fails
/// before any work), opens /dev/kvm if the plan has kernel series, then
/// measures series after series, rewriting the CSV files whole after each
/// one so that an interrupted run leaves complete files with every finished
/// series.
public final class BenchRun {
    public let plan: RunPlan
    public let progress: Progress

    public init(plan: RunPlan) {
        self.plan = plan
        progress = Progress(quiet: plan.quiet)
    }

    public func run() throws -> RunOutcome {
        let dir = try Self.makeRunDirectory(under: plan.outputDirectory)
        let startedUTC = ISO8601DateFormatter().string(from: Date())
        let environment = Environment.capture()
        var notes: [String] = []
        var skipped: [SkipNote] = []
        var device: KVMDevice? = nil
        if !plan.kernelSeries.isEmpty {
            do {
                device = try KVMDevice()
                notes.append("kvm: \(KVMDevice.path): \(device!.summary)")
            } catch {
                if plan.kernelRequired { throw BenchError.unavailable("--backend: \(error)") }
                notes.append("kvm: \(error); the model runs alone")
                for k in plan.kernelSeries {
                    skipped.append(SkipNote(series: k.key.label, backend: "kvm", reason: "\(error)"))
                }
            }
        }
        for n in notes { progress.note(n) }
        let jobs = plan.jobs.filter { if case .kernel = $0 { return device != nil } else { return true } }
        progress.note("calibrating: sequential read bandwidth and cache-miss latency ...")
        let calibration = Calibration.measure()
        progress.note(String(format: "calibration: %.1f GB/s sequential read, %.0f ns per dependent cache miss, %.0f ns timer",
                             calibration.readBandwidthGBps, calibration.missLatencyNs, calibration.timerOverheadNs))
        let flusher = plan.settings.cache == .cold ? CacheFlusher() : nil
        for job in jobs {
            switch job {
            case .model(let s): progress.addPlannedWork(s.plannedUnits(settings: plan.settings))
            case .kernel(let s): progress.addPlannedWork(s.plannedUnits(strategies: plan.kernelSettings.strategies.count))
            }
        }
        var rows: [PointRow] = []
        var adaptiveFits: [(SeriesKey, AdaptiveFit)] = []
        for (i, job) in jobs.enumerated() {
            let status = "[\(i + 1)/\(jobs.count)] \(job.label)"
            let t0 = MonotonicClock.now()
            let new: [PointRow]
            switch job {
            case .model(let spec):
                let outcome = try ModelSeries(spec: spec, settings: plan.settings, flusher: flusher, progress: progress, status: status).run()
                new = outcome.rows
                skipped += outcome.skipped
                if let f = outcome.adaptiveFit { adaptiveFits.append((spec.key, f)) }
            case .kernel(let spec):
                let series = KernelSeries(spec: spec, settings: plan.kernelSettings, measure: plan.settings,
                                          flusher: flusher, progress: progress, status: status)
                do {
                    let outcome = try series.run(device: device!)
                    new = outcome.rows
                    skipped += outcome.skipped
                    for n in outcome.notes where !notes.contains(n) {
                        notes.append(n)
                        progress.note(n)
                    }
                    for s in outcome.skipped { progress.note("kvm \(s.series): skipped \(s.strategy.isEmpty ? "" : s.strategy + " ")\(s.dirtyPages.isEmpty ? "" : "dirty pages " + s.dirtyPages + " ")(\(s.reason))") }
                } catch let e as KVMError {
                    // The kernel failed; the model's part of the run goes on.
                    new = []
                    skipped.append(SkipNote(series: spec.key.label, backend: "kvm", reason: "\(e)"))
                    progress.note("kvm \(spec.key.label): \(e)")
                }
            }
            rows += new
            let partial = RunOutcome(directory: dir, rows: rows, crossover: Crossover.rows(rows), skipped: skipped, notes: notes,
                                     calibration: calibration, adaptiveFits: adaptiveFits, seconds: progress.elapsedSeconds)
            try write(partial, environment: environment, startedUTC: startedUTC)
            let bad = new.filter { !$0.verified }.count
            let seconds = String(format: "%.1f", Double(MonotonicClock.now() - t0) / 1e9)
            progress.note("\(status): \(Set(new.map(\.dirtyPages)).count) points in \(seconds) s, "
                + (new.isEmpty ? "nothing measured" : bad == 0 ? "all verified" : "\(bad) rows NOT verified"))
        }
        progress.finish()
        let outcome = RunOutcome(directory: dir, rows: rows, crossover: Crossover.rows(rows), skipped: skipped, notes: notes,
                                 calibration: calibration, adaptiveFits: adaptiveFits, seconds: progress.elapsedSeconds)
        try write(outcome, environment: environment, startedUTC: startedUTC)
        return outcome
    }

    /// Every file of the run folder, each written whole: the CSVs, one SVG
    /// per series, meta.json and report.md.
    private func write(_ o: RunOutcome, environment: Environment, startedUTC: String) throws {
        let dir = o.directory
        try AtomicFile.write(Reports.pointsTable(o.rows, calibration: o.calibration).text, to: dir + "/points.csv")
        try AtomicFile.write(Reports.samplesTable(o.rows).text, to: dir + "/samples.csv")
        try AtomicFile.write(Reports.crossoverTable(o.crossover).text, to: dir + "/crossover.csv")
        try AtomicFile.write(Reports.skippedTable(o.skipped).text, to: dir + "/skipped.csv")
        var plots: [SeriesKey: String] = [:]
        var keys: [SeriesKey] = []
        for r in o.rows where !keys.contains(r.series) { keys.append(r.series) }
        for key in keys {
            let svg = SVGPlot.render(series: key, rows: o.rows, crossover: o.crossover.first { $0.series == key })
            guard !svg.isEmpty else { continue }
            let file = "plot-\(key.slug).svg"
            try AtomicFile.write(svg, to: dir + "/" + file)
            plots[key] = file
        }
        let meta = RunMeta(
            runID: (dir as NSString).lastPathComponent, startedUTC: startedUTC, wallSeconds: o.seconds,
            environment: environment, calibration: o.calibration, reps: plan.settings.reps, warmup: plan.settings.warmup,
            cache: plan.settings.cache.rawValue, seed: plan.settings.seed, minTimeNs: plan.settings.minTimeNs,
            kvmReps: plan.kernelSettings.reps, kvmBudgetSeconds: plan.kernelSettings.budgetSeconds,
            rows: o.rows.count, rowsVerified: o.rows.filter(\.verified).count,
            rowsNoisy: o.rows.filter { $0.summary.noisy }.count, noisyMADFraction: SampleSummary.noisyMADFraction,
            files: ["points.csv", "samples.csv", "crossover.csv", "skipped.csv", "meta.json", "report.md"] + plots.values.sorted())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(meta), as: UTF8.self) + "\n", to: dir + "/meta.json")
        try AtomicFile.write(RunReport.markdown(outcome: o, meta: meta, plots: plots), to: dir + "/report.md")
    }

    /// `<output>/<UTC timestamp>`, made now, with a probe file written and
    /// removed so that a read-only or full directory fails at once.
    static func makeRunDirectory(under output: String) throws -> String {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: output, withIntermediateDirectories: true)
        } catch {
            throw BenchError.output("--output: cannot create \(output): \(error.localizedDescription)")
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = f.string(from: Date())
        var dir = output + "/" + stamp
        var n = 2
        while fm.fileExists(atPath: dir) { dir = output + "/\(stamp)-\(n)"; n += 1 }
        guard mkdir(dir, 0o755) == 0 else {
            throw BenchError.output("--output: cannot create \(dir): \(String(cString: strerror(errno)))")
        }
        do {
            try AtomicFile.write("probe\n", to: dir + "/.probe")
            try fm.removeItem(atPath: dir + "/.probe")
        } catch {
            try? fm.removeItem(atPath: dir)
            throw BenchError.output("--output: \(output) is not writable: \(error)")
        }
        return dir
    }
}
