import ArgumentParser
import BenchAnalysis
import Foundation

/// `bench compare`: two runs, point by point.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two runs point by point: the change in median and whether it is significant.",
        discussion: """
        For every point and strategy both runs measured, the change in median from the \
        first run to the second, and a two-sided Mann-Whitney U test on their timed \
        repetitions (samples.csv), corrected for the number of comparisons \
        (Benjamini-Hochberg at --fdr). Each repetition is first divided by the \
        geometric mean of the point's strategies in the same repetition, so a machine \
        that got slower overall does not read as a regression of every strategy. Prints, per \
        series and strategy, the median and range of that change over its points and how \
        many points changed significantly, then the significant changes; writes every \
        comparison to a CSV. Exits 1 when a strategy named by --check (any, by default) \
        got significantly slower by more than --max-regression percent: for CI.

        Example: bench compare results/20261125-101500 results/20261125-103000 --check rmap --max-regression 10
        """
    )

    @Argument(help: "The baseline run folder.")
    var runA: String

    @Argument(help: "The run folder to compare with it.")
    var runB: String

    @Option(help: ArgumentHelp("Strategies whose regressions fail the comparison. (default: all)", valueName: "names"))
    var check: CommaList<String>?

    @Option(name: .customLong("max-regression"), help: ArgumentHelp("Percent slowdown, significant, that fails the comparison, 0 to 1000. (default: 30; between two quick runs minutes apart this machine showed relative shifts up to 28%)", valueName: "percent"))
    var maxRegression: Double = 30

    @Option(help: ArgumentHelp("False-discovery rate for significance, 0.0001 to 0.5. (default: 0.05)", valueName: "q"))
    var fdr: Double = 0.05

    @Option(help: ArgumentHelp("Where the CSV goes. (default: <run-b>/compare-<run-a name>.csv)", valueName: "file"))
    var csv: String?

    func run() throws {
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
        print(comparison.summary())
        print("\ncsv: \(file)")
        let bad = comparison.regressions(strategies: names, limitPct: limit)
        if !bad.isEmpty {
            print("\nREGRESSION: \(bad.count) point(s) of \(names.isEmpty ? "any strategy" : names.sorted().joined(separator: ", ")) significantly slower by more than \(Int(limit))%")
            throw ExitCode(1)
        }
    }
}

