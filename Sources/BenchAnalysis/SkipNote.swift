import DirtyLogCore

/// A strategy, series or point that did not run, and why: a row of skipped.csv.
public struct SkipNote: Sendable, Equatable {
    public var series: String
    public var backend: Backend
    /// The strategies concerned, space-separated, or empty for the whole series.
    public var strategy: String
    /// A range of dirty counts, or empty.
    public var dirtyPages: String
    public var reason: String

    public init(series: String, backend: Backend, strategy: String = "", dirtyPages: String = "", reason: String) {
        self.series = series
        self.backend = backend
        self.strategy = strategy
        self.dirtyPages = dirtyPages
        self.reason = reason
    }

    /// One line for the terminal.
    public var line: String {
        "\(backend.rawValue) \(series): skipped \(strategy.isEmpty ? "" : strategy + " ")"
            + "\(dirtyPages.isEmpty ? "" : "dirty pages " + dirtyPages + " ")(\(reason))"
    }
}
