import BenchAnalysis
import DirtyLogCore
import Foundation
import HostKVM
import ShadowMMU
import Testing
@testable import BenchMeasure

/// Whole runs through `BenchRun`, as the bench command makes them.
@Suite(.serialized) final class RunTests {
    /// This test's own folder, removed when the test ends.
    let scratch = NSTemporaryDirectory() + "benchmeasure-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    func tempDir() -> String {
        let d = scratch + "/\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// A plan of `layouts` × `patterns`, swept at quick density.
    func plan(slotPages: Int, pagings: [Paging], patterns: [DirtyPattern], strategies: [Strategy] = Strategy.allCases,
              reps: Int = 3, counts: CountPlan = .thresholdSweep(.quick)) -> RunPlan {
        var settings = MeasureSettings()
        settings.repetitions = .fixed(reps)
        settings.cache = .warm
        let series = pagings.flatMap { p in
            patterns.map { ModelSeriesSpec(scenario: .threshold, layout: VMLayout(paging: p, slotPages: slotPages), pattern: $0,
                                           counts: counts, strategies: strategies) }
        }
        return RunPlan(modelSeries: series, settings: settings, outputDirectory: tempDir(), quiet: true)
    }

    func table(_ dir: String, _ file: String) throws -> CSVTable {
        try #require(CSVTable.parse(try String(contentsOfFile: dir + "/" + file, encoding: .utf8)))
    }

    @Test func aSmallRunWritesVerifiedCSVs() throws {
        let outcome = try BenchRun(plan: plan(slotPages: 2048, pagings: [.tdp, .shadow(mappings: 2)], patterns: [.even, .random])).run()
        let dir = outcome.folder.path
        let points = try table(dir, "points.csv")
        #expect(points.columns == Reports.pointColumns)
        let records = points.records
        #expect(!records.isEmpty)
        #expect(records.allSatisfy { $0["verified"] == "true" && $0["violation_count"] == "0" && $0["allocs_in_timed_region"] == "0" })
        #expect(Set(records.filter { $0["paging"] == "tdp" }.map { $0["strategy"]! }) == Set(Strategy.allCases.map(\.rawValue)))
        #expect(Set(records.filter { $0["paging"] == "shadow" }.map { $0["strategy"]! })
            == Set(Strategy.allCases.filter { !$0.needsTDP }.map(\.rawValue)), "no tdp structure under shadow paging")
        let skipped = try table(dir, "skipped.csv").records
        #expect(skipped.count == 2 && skipped.allSatisfy { $0["strategy"] == "tdp-walk tdp-masked" })
        #expect(records.allSatisfy { Int($0["reps"]!) == 3 && $0["reps_stop"] == "fixed" })
        // The seed's rows chose what the rule says; adaptive chose one of its candidates.
        for r in records where r["strategy"] == "seed" { #expect(r["chose"] == r["seed_choice"]) }
        for r in records where r["strategy"] == "adaptive" {
            #expect(Strategy.adaptiveCandidates.map(\.rawValue).contains(r["chose"]!))
        }
        let crossover = try table(dir, "crossover.csv")
        #expect(crossover.columns == Reports.crossoverColumns)
        #expect(crossover.rows.count == 4)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(Set(files) == Set(RunFolder.files + ["tdp-even", "tdp-random", "shadow-2-even", "shadow-2-random"].map { "plot-threshold-8MiB-\($0).svg" }),
                "every file, and no temporary file left behind")
        #expect(try table(dir, "samples.csv").rows.count == records.count * 3, "three timed repetitions per row")
        let meta = try JSONDecoder().decode(RunMeta.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/meta.json")))
        #expect(meta.rows == records.count && meta.rowsVerified == records.count && meta.violations == 0)
        #expect(meta.calibration.readBandwidthGBps > 0 && meta.environment.jemallocVersion.hasPrefix("5."))
        #expect(meta.phases[.timedHarvests] > 0 && meta.phases[.vmBuild] > 0 && meta.phases[.checks] > 0 && meta.interrupted == nil)
        let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        for section in ["## Environment", "## Calibration", "## Crossover", "some times faster", "not worse", "![threshold 8MiB tdp even](plot-threshold-8MiB-tdp-even.svg)"] {
            #expect(report.contains(section), "report.md lacks \(section)")
        }
    }

    #if DEBUG
    /// A strategy that skips one spte, planted in every harvest of a real
    /// series: each row it touches is unverified, with the count and the
    /// first messages, in points.csv, meta.json and report.md.
    @Test func aPlantedBugFailsEveryRowItTouches() throws {
        var p = plan(slotPages: 4096, pagings: [.tdp], patterns: [.even], strategies: [.masked, .rmap], reps: 2, counts: .explicit([1, 64]))
        p.plantedBug = .skipOneSPTE
        let outcome = try BenchRun(plan: p).run()
        let records = try table(outcome.folder.path, "points.csv").records
        #expect(records.count == 4)
        for r in records {
            #expect(r["verified"] == "false", "\(r["strategy"]!) at \(r["dirty_pages"]!)")
            #expect(Int(r["violation_count"]!)! > 0)
            #expect(r["violations"]!.contains("left writable after protection"))
        }
        #expect(outcome.results.violations == records.reduce(0) { $0 + Int($1["violation_count"]!)! })
        #expect(outcome.meta.violations > 0 && outcome.meta.rowsVerified == 0)
        let report = try String(contentsOfFile: outcome.folder.path + "/report.md", encoding: .utf8)
        #expect(report.contains("violations**") && report.contains("left writable after protection"))
    }
    #endif

    @Test(.enabled(if: (try? HostKVM.KVMDevice()) != nil, "/dev/kvm cannot be opened"))
    func theKernelRunsBesideTheModelAndIsVerified() throws {
        var p = plan(slotPages: 1024, pagings: [.tdp], patterns: [.random], reps: 2, counts: .explicit([1, 100, 1024]))
        p.kernelSeries = [KernelSeriesSpec(scenario: .threshold, slotPages: 1024, vmPages: 1024, pattern: .random, counts: [1, 100, 1024])]
        p.kernelSettings.repetitions = .fixed(2)
        let outcome = try BenchRun(plan: p).run()
        let records = try table(outcome.folder.path, "points.csv").records
        let kvm = records.filter { $0["backend"] == "kvm" }
        #expect(Set(kvm.map { $0["strategy"]! }) == ["kvm-get", "kvm-get+clear", "kvm-ring"])
        #expect(Set(kvm.map { Int($0["dirty_pages"]!)! }) == [1, 100, 1024])
        #expect(kvm.allSatisfy { $0["verified"] == "true" && $0["guest_mode"] == "flat32" && $0["paging"] == "tdp" })
        #expect(kvm.filter { $0["strategy"] == "kvm-get+clear" }.allSatisfy { !$0["get_ns"]!.isEmpty && !$0["clear_ns"]!.isEmpty })
        #expect(kvm.allSatisfy { $0["shadow_pages_visited"]!.isEmpty }, "the kernel reports no model counters")
        let crossover = try table(outcome.folder.path, "crossover.csv").records
        #expect(crossover.count == 1)
        #expect(crossover[0]["kvm_min_dirty_pages"] == "1" && crossover[0]["kvm_max_dirty_pages"] == "1024")
        #expect(crossover[0]["model_vs_kvm_strategy"] == "masked", "the model strategy that does what KVM_GET_DIRTY_LOG does")
        #expect(!(crossover[0]["model_over_kvm_at_min"] ?? "").isEmpty)
    }

    /// Outputs even root cannot write: a file where a folder is expected,
    /// a folder under a file, and /proc. Each fails with exit status 73
    /// before anything is created.
    @Test(arguments: ["file", "file/runs", "/proc/dirty-log-bench-runs"])
    func anUnwritableOutputFailsWithExitStatus73(output: String) throws {
        let dir = tempDir()
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8))
        var p = plan(slotPages: 64, pagings: [.tdp], patterns: [.even])
        p.outputDirectory = output.hasPrefix("/") ? output : dir + "/" + output
        do {
            _ = try BenchRun(plan: p).run()
            Issue.record("expected an error")
        } catch let e as BenchError {
            #expect(e.exitStatus == 73)
            #expect(e.description.hasPrefix("--output:"), "\(e)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["file"], "nothing created")
        #expect(try String(contentsOfFile: dir + "/file", encoding: .utf8) == "x", "the file is untouched")
    }
}
