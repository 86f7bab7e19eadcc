import DirtyLogCore
import Foundation

/// A run's folder, `<output>/<UTC yyyyMMdd-HHmmss>`, and the files in it,
/// each written whole: points.csv, samples.csv, crossover.csv, skipped.csv,
/// an SVG plot per series, meta.json and report.md.
public struct RunFolder: Sendable {
    public let path: String

    /// The folder's name: the run's id.
    public var runID: String { (path as NSString).lastPathComponent }

    /// Makes a new folder under `output`, with a probe file written and
    /// removed so that a read-only or full directory fails at once, before
    /// any work.
    public static func create(under output: String) throws -> RunFolder {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: output, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw BenchError.output("--output: \(output) is a file, not a directory")
        }
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
        return RunFolder(path: dir)
    }

    /// The files every run writes, plots aside.
    public static let files = ["points.csv", "samples.csv", "crossover.csv", "skipped.csv", "meta.json", "report.md"]

    /// Rewrites every file from `results`; `meta` gets the file list.
    public func write(_ results: RunResults, meta: RunMeta) throws {
        try AtomicFile.write(Reports.pointsTable(results.rows, calibration: results.calibration).text, to: path + "/points.csv")
        try AtomicFile.write(Reports.samplesTable(results.rows).text, to: path + "/samples.csv")
        try AtomicFile.write(Reports.crossoverTable(results.crossover).text, to: path + "/crossover.csv")
        try AtomicFile.write(Reports.skippedTable(results.skipped).text, to: path + "/skipped.csv")
        var written = Self.files
        if !results.pollution.isEmpty {
            try AtomicFile.write(Reports.pollutionTable(results.pollution).text, to: path + "/pollution.csv")
            written.insert("pollution.csv", at: 4)
        }
        if !results.lifecycle.isEmpty || !results.kernelLifecycle.isEmpty {
            try AtomicFile.write(Reports.lifecycleTable(results.lifecycle).text, to: path + "/lifecycle.csv")
            let lines = Reports.lifecycleLines(results.lifecycle) + Reports.kernelLifecycleLines(results.kernelLifecycle)
            try AtomicFile.write(lines.joined(separator: "\n"), to: path + "/lifecycle.txt")
            written.insert(contentsOf: ["lifecycle.csv", "lifecycle.txt"], at: 4)
        }
        if !results.kernelLifecycle.isEmpty {
            try AtomicFile.write(Reports.kernelLifecycleTable(results.kernelLifecycle).text, to: path + "/lifecycle-kvm.csv")
            written.insert("lifecycle-kvm.csv", at: 4)
        }
        var plots: [SeriesKey: String] = [:]
        var lifecyclePlots: [LifecycleKey: String] = [:]
        for key in results.seriesKeys {
            let svg = SVGPlot.render(series: key, rows: results.rows, crossover: results.crossover.first { $0.series == key })
            guard !svg.isEmpty else { continue }
            let file = "plot-\(key.slug).svg"
            try AtomicFile.write(svg, to: path + "/" + file)
            plots[key] = file
        }
        for key in results.lifecycleKeys {
            let svg = LifecyclePlot.render(series: key, rows: results.lifecycle.filter { $0.series == key })
            guard !svg.isEmpty else { continue }
            let file = "plot-\(key.slug).svg"
            try AtomicFile.write(svg, to: path + "/" + file)
            lifecyclePlots[key] = file
        }
        var meta = meta
        meta.files = written + (Array(plots.values) + Array(lifecyclePlots.values)).sorted()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(String(decoding: try encoder.encode(meta), as: UTF8.self) + "\n", to: path + "/meta.json")
        try AtomicFile.write(RunReport.markdown(results: results, meta: meta, plots: plots, lifecyclePlots: lifecyclePlots),
                             to: path + "/report.md")
    }
}
