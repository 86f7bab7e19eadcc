import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import ShadowMMU

/// What the checking subcommands (check-eviction, breakdown, compare) share:
/// refusing the run's options they do not take, and how they end.
extension Bench {
    /// The sweep's own options that were given, by name: what a preset does not take.
    /// Every option of the run given a value of its own, the sweep's and
    /// the measurement's: what a subcommand that takes none or some of them
    /// refuses rather than ignores.
    var optionsGiven: [String] { sweepOptionsGiven + measurement.optionsGiven }

    /// Refuses, before any work, a run option that `command` does not take
    /// (any outside `accepted`): refused, not ignored.
    func refuseOptions(except accepted: Set<String>, in command: String) throws {
        if let option = optionsGiven.first(where: { !accepted.contains($0) }) {
            throw BenchError.usage("\(option): does not apply to \(command), which takes \(accepted.sorted().joined(separator: ", "))")
        }
    }

    /// A checking subcommand's end: its table written to `file` in
    /// `folder` (made under --output before the work, so that an unwritable
    /// one stops it first), its summary printed, and exit 1 when any of
    /// its harvests failed a check.
    func finishCheck(in folder: RunFolder, table: CSVTable, file: String, summary: String, violations: Int, messages: [String] = []) throws {
        try AtomicFile.write(table.text, to: folder.path + "/" + file)
        print(summary)
        print("\ncsv: \(folder.path)/\(file)")
        guard violations == 0 else {
            print("\nVIOLATIONS: \(violations) checks failed")
            for message in messages { print("  \(message)") }
            throw ExitCode(1)
        }
    }
}
