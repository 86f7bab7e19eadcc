import Foundation
import Testing
import ShadowMMU
@testable import BenchKit
import HostKVM

@Suite(.serialized) struct RunTests {
    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "benchkit-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func aSmallRunWritesVerifiedCSVs() throws {
        var o = RunOptions()
        o.slotPages = "2048"
        o.paging = "tdp,shadow"
        o.pattern = "even,random"
        o.reps = "3"
        o.cache = "warm"
        o.output = tempDir()
        o.quiet = true
        o.backend = "model"
        let outcome = try BenchRun(plan: try o.plan()).run()
        let points = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/points.csv", encoding: .utf8))!
        #expect(points.columns == Reports.pointColumns)
        let records = points.records
        #expect(!records.isEmpty)
        #expect(records.allSatisfy { $0["verified"] == "true" && $0["allocs_in_timed_region"] == "0" })
        #expect(Set(records.filter { $0["paging"] == "tdp" }.map { $0["strategy"]! }) == Set(Strategy.allCases.map(\.rawValue)))
        #expect(Set(records.filter { $0["paging"] == "shadow" }.map { $0["strategy"]! })
            == Set(Strategy.allCases.filter { !$0.needsTDP }.map(\.rawValue)), "no tdp structure under shadow paging")
        let skipped = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/skipped.csv", encoding: .utf8))!.records
        #expect(skipped.count == 2 && skipped.allSatisfy { $0["strategy"] == "tdp-walk tdp-masked" })
        #expect(records.allSatisfy { Int($0["reps"]!) == 3 })
        // The seed's rows chose what the rule says; adaptive chose one of its candidates.
        for r in records where r["strategy"] == "seed" { #expect(r["chose"] == r["seed_choice"]) }
        for r in records where r["strategy"] == "adaptive" {
            #expect(Strategy.adaptiveCandidates.map(\.rawValue).contains(r["chose"]!))
        }
        let crossover = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/crossover.csv", encoding: .utf8))!
        #expect(crossover.columns == Reports.crossoverColumns)
        #expect(crossover.rows.count == 4)
        let files = try FileManager.default.contentsOfDirectory(atPath: outcome.directory)
        #expect(Set(files) == Set(["points.csv", "samples.csv", "crossover.csv", "skipped.csv", "meta.json", "report.md"]
            + ["tdp-even", "tdp-random", "shadow-2-even", "shadow-2-random"].map { "plot-threshold-8MiB-\($0).svg" }),
            "every file, and no temporary file left behind")
        let samples = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/samples.csv", encoding: .utf8))!
        #expect(samples.rows.count == records.count * 3, "three timed repetitions per row")
        let meta = try JSONDecoder().decode(RunMeta.self, from: Data(contentsOf: URL(fileURLWithPath: outcome.directory + "/meta.json")))
        #expect(meta.rows == records.count && meta.rowsVerified == records.count)
        #expect(meta.calibration.readBandwidthGBps > 0 && meta.environment.jemallocVersion.hasPrefix("5."))
        let report = try String(contentsOfFile: outcome.directory + "/report.md", encoding: .utf8)
        for section in ["## Environment", "## Calibration", "## Crossover", "some times faster", "not worse", "![threshold 8MiB tdp even](plot-threshold-8MiB-tdp-even.svg)"] {
            #expect(report.contains(section), "report.md lacks \(section)")
        }
    }

    @Test(.enabled(if: (try? HostKVM.KVMDevice()) != nil, "/dev/kvm cannot be opened"))
    func theKernelRunsBesideTheModelAndIsVerified() throws {
        var o = RunOptions()
        o.slotPages = "1024"
        o.paging = "tdp"
        o.pattern = "random"
        o.dirty = "1,100,1024"
        o.reps = "2"
        o.kvmReps = "2"
        o.cache = "warm"
        o.output = tempDir()
        o.quiet = true
        let outcome = try BenchRun(plan: try o.plan()).run()
        let records = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/points.csv", encoding: .utf8))!.records
        let kvm = records.filter { $0["backend"] == "kvm" }
        #expect(Set(kvm.map { $0["strategy"]! }) == ["kvm-get", "kvm-get+clear", "kvm-ring"])
        #expect(Set(kvm.map { Int($0["dirty_pages"]!)! }) == [1, 100, 1024])
        #expect(kvm.allSatisfy { $0["verified"] == "true" && $0["guest_mode"] == "flat32" && $0["paging"] == "tdp" })
        #expect(kvm.filter { $0["strategy"] == "kvm-get+clear" }.allSatisfy { !$0["get_ns"]!.isEmpty && !$0["clear_ns"]!.isEmpty })
        #expect(kvm.allSatisfy { $0["shadow_pages_visited"]!.isEmpty }, "the kernel reports no model counters")
        let crossover = CSVTable.parse(try String(contentsOfFile: outcome.directory + "/crossover.csv", encoding: .utf8))!.records
        #expect(crossover.count == 1)
        #expect(crossover[0]["kvm_min_dirty_pages"] == "1" && crossover[0]["kvm_max_dirty_pages"] == "1024")
        #expect(crossover[0]["model_vs_kvm_strategy"] == "masked", "the model strategy that does what KVM_GET_DIRTY_LOG does")
        #expect(!(crossover[0]["model_over_kvm_at_min"] ?? "").isEmpty)
    }

    @Test func anUnwritableOutputFailsBeforeAnyWork() throws {
        let dir = tempDir()
        chmod(dir, 0o500)
        defer { chmod(dir, 0o700) }
        guard access(dir, W_OK) != 0 else { return }  // root ignores permissions; nothing to show
        var o = RunOptions()
        o.slotPages = "64"
        o.output = dir + "/runs"
        o.quiet = true
        #expect(throws: BenchError.self) { _ = try BenchRun(plan: try o.plan()).run() }
    }

    @Test func anOutputThatIsAFileFailsWithExitStatus73() throws {
        let file = tempDir() + "/not-a-dir"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        var o = RunOptions()
        o.slotPages = "64"
        o.output = file
        o.quiet = true
        do {
            _ = try BenchRun(plan: try o.plan()).run()
            Issue.record("expected an error")
        } catch let e as BenchError {
            #expect(e.exitStatus == 73)
            #expect(e.description.hasPrefix("--output:"))
        }
    }

    @Test func atomicWriteLeavesTheOldFileOrTheNewOneNeverHalf() throws {
        let dir = tempDir()
        let path = dir + "/f.csv"
        try AtomicFile.write("old\n", to: path)
        try AtomicFile.write("new\n", to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["f.csv"])
        #expect(throws: BenchError.self) { try AtomicFile.write("x", to: dir + "/missing/f.csv") }
    }
}
