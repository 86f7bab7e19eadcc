import BenchAnalysis
import DirtyLogCore
import Foundation

/// Progress on stderr. On a terminal, one line rewritten in place: the
/// series, its point (done of planned), what is under way, elapsed time,
/// and estimates of the time left for the series and for the run. The
/// estimates weigh each planned point by a rough cost (`weight`) and learn
/// the seconds a unit of weight takes from what is done so far. Elsewhere,
/// and on a terminal too, one line per finished series. `quiet` silences
/// it all; `verbose` adds where each series' time went.
public final class Progress {
    private let live: Bool
    private let quiet: Bool
    public let verbose: Bool
    private let start = MonotonicClock.now()
    private var lastDraw: UInt64 = 0

    /// The run's series: label, points planned, weight per point.
    private var series: [(label: String, points: Int, weight: Double)] = []
    private var current = -1
    private var seriesStart: UInt64 = 0
    private var pointsDone = 0
    private var extraPoints = 0
    private var activity = ""
    /// Weight finished, and the seconds it took, over the run.
    private var weightDone = 0.0
    private var secondsForWeight = 0.0
    private var pointStart: UInt64 = 0

    public init(quiet: Bool, verbose: Bool = false) {
        self.quiet = quiet
        self.verbose = verbose && !quiet
        live = !quiet && isatty(STDERR_FILENO) != 0
    }

    /// The plan: each series' label, planned points and cost per point.
    public func plan(_ series: [(label: String, points: Int, weight: Double)]) {
        self.series = series
    }

    public var elapsedSeconds: Double { MonotonicClock.seconds(since: start) }

    /// Series `index` of the plan starts.
    public func beginSeries(_ index: Int) {
        current = index
        seriesStart = MonotonicClock.now()
        pointsDone = 0
        extraPoints = 0
        activity = ""
        pointStart = seriesStart
        if !live && !quiet { note("[\(index + 1)/\(series.count)] \(series[index].label): started") }
        draw(force: true)
    }

    /// What the series is doing now ("4096 dirty", "building the VM").
    public func point(_ what: String) {
        activity = what
        draw(force: false)
    }

    /// A point more than planned (the crossover's bisection).
    public func addPoints(_ n: Int) { extraPoints += n }

    /// A point finished.
    public func pointDone() {
        pointsDone += 1
        if current >= 0 {
            weightDone += series[current].weight
            secondsForWeight += MonotonicClock.seconds(since: pointStart)
        }
        pointStart = MonotonicClock.now()
        draw(force: false)
    }

    /// Seconds left for the current series and for the run, once anything is done.
    public var estimates: (series: Double, run: Double)? {
        guard current >= 0, weightDone > 0 else { return nil }
        let perWeight = secondsForWeight / weightDone
        let s = series[current]
        let leftHere = Double(max(0, s.points + extraPoints - pointsDone)) * s.weight * perWeight
        let later = series.dropFirst(current + 1).reduce(0.0) { $0 + Double($1.points) * $1.weight } * perWeight
        return (leftHere, leftHere + later)
    }

    /// The live line.
    public var line: String {
        guard current >= 0 else { return "" }
        let s = series[current]
        var out = "[\(current + 1)/\(series.count)] \(s.label) · point \(min(pointsDone + 1, s.points + extraPoints))/\(s.points + extraPoints)"
        if !activity.isEmpty { out += " (\(activity))" }
        out += " · \(Self.seconds(elapsedSeconds))"
        if let e = estimates { out += " · series ~\(Self.seconds(e.series)) left, run ~\(Self.seconds(e.run)) left" }
        return out
    }

    private func draw(force: Bool) {
        guard live else { return }
        let now = MonotonicClock.now()
        if !force && now &- lastDraw < 100_000_000 { return }
        lastDraw = now
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
    }

    /// A line that stays (a finished series, a skipped backend).
    public func note(_ message: String) {
        guard !quiet else { return }
        let prefix = live ? "\r\u{1B}[K" : ""
        FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
    }

    /// Clears the live line.
    public func finish() {
        if live { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    static func seconds(_ s: Double) -> String {
        s < 60 ? String(format: "%.1f s", s) : String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60)
    }

    /// A rough cost of a point at `dirtyPages` in a VM of `nUsed` shadow
    /// pages, per strategy: the eviction and bookkeeping, plus terms for
    /// work that grows with the dirty pages and with the shadow pages.
    public static func weight(dirtyPages: Int, nUsedMMUPages: Int) -> Double {
        1 + Double(dirtyPages) / 16384 + Double(nUsedMMUPages) / 4096
    }
}
