import Foundation
import ShadowMMU

/// Everything one `bench` run measures and where it writes.
public struct RunPlan: Sendable {
    public var modelSeries: [ModelSeriesSpec]
    public var settings: MeasureSettings
    /// The run folder goes under this directory.
    public var outputDirectory: String
    public var quiet: Bool

    public init(modelSeries: [ModelSeriesSpec], settings: MeasureSettings, outputDirectory: String, quiet: Bool) {
        self.modelSeries = modelSeries
        self.settings = settings
        self.outputDirectory = outputDirectory
        self.quiet = quiet
    }

    /// The largest amount of memory one series needs at once, in bytes: the
    /// VM, the workload of its largest point, the cache-flush buffer.
    public var peakMemoryBytes: Int {
        let flush = settings.cache == .cold ? max(64 << 20, 2 * CacheFlusher.lastLevelCacheBytes) : 0
        return (modelSeries.map { s in
            s.layout.estimatedBytes + s.layout.slotPages * (4 + 8) + DirtyBitmap.words(pages: s.layout.slotPages) * 8
        }.max() ?? 0) + flush
    }
}

/// What a finished run produced.
public struct RunOutcome {
    public var directory: String
    public var rows: [PointRow]
    public var crossover: [CrossoverRow]
    public var seconds: Double
}

/// Runs a plan: makes the run folder first (so an unwritable output fails
/// before any work), then measures series after series, rewriting the CSV
/// files whole after each one so that an interrupted run leaves complete
/// files with every finished series.
public final class BenchRun {
    public let plan: RunPlan
    public let progress: Progress

    public init(plan: RunPlan) {
        self.plan = plan
        progress = Progress(quiet: plan.quiet)
    }

    public func run() throws -> RunOutcome {
        let dir = try Self.makeRunDirectory(under: plan.outputDirectory)
        let flusher = plan.settings.cache == .cold ? CacheFlusher() : nil
        for s in plan.modelSeries { progress.addPlannedWork(s.plannedUnits) }
        var rows: [PointRow] = []
        var crossover: [CrossoverRow] = []
        for (i, spec) in plan.modelSeries.enumerated() {
            let status = "[\(i + 1)/\(plan.modelSeries.count)] \(spec.key.label)"
            let t0 = MonotonicClock.now()
            let series = ModelSeries(spec: spec, settings: plan.settings, flusher: flusher, progress: progress, status: status)
            let new = try series.run()
            rows += new
            if let c = Crossover.row(series: spec.key, rows: new) { crossover.append(c) }
            try write(rows: rows, crossover: crossover, to: dir)
            let bad = new.filter { !$0.verified }.count
            let seconds = String(format: "%.1f", Double(MonotonicClock.now() - t0) / 1e9)
            progress.note("\(status): \(Set(new.map(\.dirtyPages)).count) points in \(seconds) s, "
                + (bad == 0 ? "all verified" : "\(bad) rows NOT verified"))
        }
        progress.finish()
        return RunOutcome(directory: dir, rows: rows, crossover: crossover, seconds: progress.elapsedSeconds)
    }

    private func write(rows: [PointRow], crossover: [CrossoverRow], to dir: String) throws {
        try AtomicFile.write(Reports.pointsTable(rows).text, to: dir + "/points.csv")
        try AtomicFile.write(Reports.crossoverTable(crossover).text, to: dir + "/crossover.csv")
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
