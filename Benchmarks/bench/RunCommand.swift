import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import ShadowMMU

/// Runs a plan and prints what it found; the exit status says how it went.
enum RunCommand {
    /// `lifecycleLines`: print dirty_log_perf_test's lines of every
    /// lifecycle (a lifecycle-only run); else they are in lifecycle.txt.
    static func execute(_ plan: RunPlan, sideBySide: Scenario? = nil, lifecycleLines: Bool = false) throws {
        let outcome = try BenchRun(plan: plan).run()
        let results = outcome.results
        if let s = sideBySide {
            print(Reports.sideBySide(results.rows, scenario: s))
            print("")
        }
        if lifecycleLines {
            print((Reports.lifecycleLines(results.lifecycle) + Reports.kernelLifecycleLines(results.kernelLifecycle)).joined(separator: "\n"))
        }
        let summary = Reports.terminal(results)
        if !summary.isEmpty { print(summary) }
        for n in results.notes { print("\n" + Reports.wrap(n)) }
        print("")
        let bad = results.unverifiedRows, badPollution = results.unverifiedPollution
        let dir = outcome.folder.path
        if !results.rows.isEmpty || results.lifecycle.isEmpty {
            print("points:    \(dir)/points.csv (\(results.rows.count) rows, " + (bad.isEmpty ? "all verified)" : "\(bad.count) NOT verified)"))
        }
        if !results.pollution.isEmpty {
            print("pollution: \(dir)/pollution.csv (\(results.pollution.count) rows, "
                + (badPollution.isEmpty ? "all verified)" : "\(badPollution.count) NOT verified)"))
        }
        if !results.kernelLifecycle.isEmpty { print("kvm:       \(dir)/lifecycle-kvm.csv (\(results.kernelLifecycle.count) phases)") }
        if !results.lifecycle.isEmpty {
            let badLife = results.unverifiedLifecycle
            print("lifecycle: \(dir)/lifecycle.csv (\(results.lifecycle.count) phases, "
                + (badLife.isEmpty ? "all verified), lifecycle.txt" : "\(badLife.count) NOT verified), lifecycle.txt"))
        }
        if !results.crossover.isEmpty { print("crossover: \(dir)/crossover.csv") }
        print("report:    \(dir)/report.md")
        if !results.skipped.isEmpty { print("skipped:   \(dir)/skipped.csv (\(results.skipped.count) entries)") }
        print(String(format: "wall time: %.1f s", outcome.seconds))
        if !results.allVerified {
            let badLife = results.unverifiedLifecycle
            print("\nVIOLATIONS: \(results.violations) in \(bad.count + badPollution.count + badLife.count) rows")
            for r in badLife.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.lifecycleLabel) \(r.phase.rawValue): \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
            for r in bad.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.strategy.name) at \(r.dirtyPages) dirty pages: \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
            for r in badPollution.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.strategy.rawValue) pollution pairs: \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
        }
        let lockFailures = VirtualMachine.mmuLockFailures
        if lockFailures > 0 {
            print("\n" + Reports.wrap("LOCK FAILURES: mmu_lock failed \(lockFailures) times (a wait given up after 2e10 time-stamp ticks, "
                + "4 to 10 s, or the lock found held between rounds): a lock that never lets go, so the run's holds, waits and exclusion "
                + "are not to be trusted"))
        }
        if let i = outcome.interrupted {
            print("\n" + Reports.wrap("INTERRUPTED by \(i.signal) during \(i.during): the files above hold every point finished before it"))
            throw ExitCode(i.signal == "SIGTERM" ? 143 : 130)
        }
        if !results.allVerified || lockFailures > 0 { throw ExitCode(1) }
    }
}
