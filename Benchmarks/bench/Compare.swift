import ArgumentParser
import BenchAnalysis
import Foundation

/// `bench compare`: two runs, point by point.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two runs point by point and series by series: the change in median and whether it is significant.",
        discussion: """
        Each repetition is first divided by the median of the point's other strategies \
        in the same repetition, so a machine that got slower overall does not read as a \
        regression of every strategy. Then two verdicts:

        Per point: the two runs' relative repetitions, a two-sided Mann-Whitney U \
        test, Benjamini-Hochberg across all points (--fdr).

        Per series: each strategy's per-point changes over the series, a two-sided \
        Wilcoxon signed-rank test, Benjamini-Hochberg across all series and \
        strategies. A strategy 10% slower at every point is seen here though no \
        single point of a few repetitions is.

        Prints per series and strategy the median and range of the change, its points \
        that changed on their own and the series verdict, then the significant points; \
        writes every point to a CSV (--csv) and every series verdict beside it \
        (-series.csv). Exits 1 when a strategy named by --check (any, by default) got \
        significantly slower by more than --max-regression percent over two series or \
        more (its median change), or over every series it ran in; a strategy that \
        did so in one series of several is listed, not failed (the machine's drift \
        shows in the series measured while it lasted, a change of the code wherever \
        the strategy runs), and so are single points: for CI.

        Example: bench compare results/20261125-101500 results/20261125-103000 --check rmap --max-regression 10
        """
    )

    @Argument(help: "The baseline run folder.")
    var runA: String

    @Argument(help: "The run folder to compare with it.")
    var runB: String

    @Option(help: ArgumentHelp("Strategies whose regressions fail the comparison. (default: all)", valueName: "names"))
    var check: CommaList<String>?

    @Option(name: .customLong("max-regression"), help: ArgumentHelp("Percent slowdown of a strategy over a series (its median change, significant) that fails the comparison, 0 to 1000. Three pairs of default runs of one commit on this machine, minutes apart (2026-12-07), moved no strategy's series significantly by more than 8.1% against the others, and a 25% slowdown planted into one strategy of the second run of each pair showed as 20.5% to 30.2% in every series it ran in.", valueName: "percent"))
    var maxRegression: Double = 15

    @Option(help: ArgumentHelp("False-discovery rate for significance, 0.0001 to 0.5.", valueName: "q"))
    var fdr: Double = 0.05

    @Option(help: ArgumentHelp("Where the CSV goes. (default: <run-b>/compare-<run-a name>.csv)", valueName: "file"))
    var csv: String?

    /// The run's options, parsed after `compare` too: refused, not ignored.
    @ParentCommand var bench: Bench

    func run() throws {
        if let option = bench.optionsGiven.first {
            throw BenchError.usage("\(option): an option of a run, not of compare, which takes --check, --max-regression, --fdr and --csv")
        }
        guard maxRegression >= 0, maxRegression <= 1000 else {
            throw BenchError.usage("--max-regression: \(maxRegression) is out of range; accepted: 0 to 1000")
        }
        guard fdr >= 0.0001, fdr <= 0.5 else { throw BenchError.usage("--fdr: \(fdr) is out of range; accepted: 0.0001 to 0.5") }
        let limit = maxRegression, q = fdr
        let names = Set(check?.values ?? [])
        let comparison = try RunComparison.load(runA, runB, q: q)
        guard !comparison.rows.isEmpty else {
            throw BenchError.usage("run-b: \(runB) shares no point with \(runA); compare runs of the same sweep")
        }
        let unknown = names.subtracting(comparison.rows.map(\.strategy))
        guard unknown.isEmpty else {
            throw BenchError.usage("--check: \(unknown.sorted().joined(separator: ", ")) measured in neither run; accepted: "
                + Set(comparison.rows.map(\.strategy)).sorted().joined(separator: ", "))
        }
        let file = csv ?? (runB as NSString).appendingPathComponent("compare-" + (runA as NSString).lastPathComponent + ".csv")
        try AtomicFile.write(comparison.table.text, to: file)
        let seriesFile = (file as NSString).deletingPathExtension + "-series.csv"
        try AtomicFile.write(comparison.seriesTable.text, to: seriesFile)
        print(comparison.summary())
        let machines = [runA, runB].map(MachineCalibration.load(runFolder:))
        if let a = machines[0], let b = machines[1] {
            print("\nthe machine at each run's start: " + a.summary + " / " + b.summary)
        }
        print("\ncsv: \(file)\n     \(seriesFile)")
        let (series, points, failing) = comparison.regressions(strategies: names, limitPct: limit)
        let which = names.isEmpty ? "any strategy" : names.sorted().joined(separator: ", ")
        if !points.isEmpty {
            print("\n\(points.count) single point(s) of \(which) significantly slower by more than \(Reports.fmt(limit, 0))% on their own "
                + "(listed above): a point alone does not fail a comparison, its series does")
        }
        let alone = series.filter { s in !failing.contains { $0.series == s.series && $0.strategy == s.strategy } }
        if !alone.isEmpty {
            print("\n" + Reports.wrap("Significantly slower by more than \(Reports.fmt(limit, 0))% in one of their series only: "
                + alone.map { "\($0.strategy) in \($0.series), \(Reports.fmt($0.medianChangePct, 1))%" }.joined(separator: "; ")
                + ". Listed, not failed: a change of the code shows wherever its strategy runs, the machine's drift in the series "
                + "measured while it lasted"))
        }
        if !failing.isEmpty {
            print("\nREGRESSION: \(which) significantly slower by more than \(Reports.fmt(limit, 0))%: "
                + "\(failing.count) series (" + failing.map { "\($0.strategy) in \($0.series), \(Reports.fmt($0.medianChangePct, 1))%" }.joined(separator: "; ")
                + ")")
            throw ExitCode(1)
        }
    }
}

