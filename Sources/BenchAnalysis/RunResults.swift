import DirtyLogCore

/// Everything a run folder is written from: the rows so far and what
/// came with them.
public struct RunResults: Sendable {
    public var rows: [PointRow] = []
    public var skipped: [SkipNote] = []
    /// Lines for the terminal and report.md about the kernel: unavailable, emulated, ...
    public var notes: [String] = []
    public var calibration: MachineCalibration
    /// The adaptive rule's constants, per series that measured them.
    public var adaptiveFits: [AdaptiveFitReport] = []
    /// The concurrent scenario's cache pollution (pollution.csv).
    public var pollution: [PollutionRow] = []
    /// The lifecycle scenario's phases (lifecycle.csv), and the kernel's (lifecycle-kvm.csv).
    public var lifecycle: [LifecycleRow] = []
    public var kernelLifecycle: [KernelLifecycleRow] = []
    /// What the concurrent scenario charged for VM exits and IPIs, when it ran.
    public var exitCosts: ExitCosts?
    /// One row per model series, from `rows`.
    public private(set) var crossover: [CrossoverRow] = []

    public init(calibration: MachineCalibration) { self.calibration = calibration }

    /// Adds a finished series (or the finished points of an interrupted one).
    public mutating func add(rows new: [PointRow] = [], skipped: [SkipNote] = [], notes: [String] = [], fit: AdaptiveFitReport? = nil,
                             pollution: [PollutionRow] = [], lifecycle: [LifecycleRow] = [], kernelLifecycle: [KernelLifecycleRow] = []) {
        rows += new
        self.lifecycle += lifecycle
        self.kernelLifecycle += kernelLifecycle
        self.pollution += pollution
        self.skipped += skipped
        for n in notes where !self.notes.contains(n) { self.notes.append(n) }
        if let fit { adaptiveFits.append(fit) }
        // Only the series these rows belong to change (their bootstrap
        // intervals are not cheap): the others keep their rows.
        let touched = Set(new.map(\.series))
        guard !touched.isEmpty else { return }
        var bySeries: [SeriesKey: CrossoverRow] = [:]
        for r in crossover where !touched.contains(r.series) { bySeries[r.series] = r }
        for r in Crossover.rows(rows.filter { touched.contains($0.series) }) { bySeries[r.series] = r }
        var order: [SeriesKey] = []
        for r in rows where r.backend == .model && !order.contains(r.series) { order.append(r.series) }
        crossover = order.compactMap { bySeries[$0] }
    }

    /// The series in the order they were measured.
    public var seriesKeys: [SeriesKey] {
        var keys: [SeriesKey] = []
        for r in rows where !keys.contains(r.series) { keys.append(r.series) }
        return keys
    }

    public var violations: Int {
        rows.reduce(0) { $0 + $1.violationCount } + pollution.reduce(0) { $0 + $1.violationCount } + lifecycle.reduce(0) { $0 + $1.violationCount }
    }
    public var unverifiedRows: [PointRow] { rows.filter { !$0.verified } }
    public var unverifiedPollution: [PollutionRow] { pollution.filter { !$0.verified } }
    public var unverifiedLifecycle: [LifecycleRow] { lifecycle.filter { !$0.verified } }
    /// Every row of every file verified.
    public var allVerified: Bool { unverifiedRows.isEmpty && unverifiedPollution.isEmpty && unverifiedLifecycle.isEmpty }

    /// The lifecycle series in the order they ran.
    public var lifecycleKeys: [LifecycleKey] {
        var keys: [LifecycleKey] = []
        for r in lifecycle where !keys.contains(r.series) { keys.append(r.series) }
        return keys
    }
}

/// The adaptive rule's constants for one series as report.md shows them.
public struct AdaptiveFitReport: Sendable {
    public struct Row: Sendable {
        public var strategy: Strategy
        /// "regular" or "scattered".
        public var kind: String
        public var fixedNs: Double
        /// At each of `AdaptiveFitReport.shownRho`.
        public var perPageNs: [Double]
        /// Root-mean-square relative error of the constants' predictions for the sets they came from.
        public var errorPct: Double

        public init(strategy: Strategy, kind: String, fixedNs: Double, perPageNs: [Double], errorPct: Double) {
            self.strategy = strategy
            self.kind = kind
            self.fixedNs = fixedNs
            self.perPageNs = perPageNs
            self.errorPct = errorPct
        }
    }

    public var series: SeriesKey
    public var sets: Int
    public var seconds: Double
    public var lookNs: Double
    /// The densities (dirty pages per 512-page span) the table shows.
    public var shownRho: [Double]
    public var rows: [Row]

    public init(series: SeriesKey, sets: Int, seconds: Double, lookNs: Double, shownRho: [Double], rows: [Row]) {
        self.series = series
        self.sets = sets
        self.seconds = seconds
        self.lookNs = lookNs
        self.shownRho = shownRho
        self.rows = rows
    }
}
