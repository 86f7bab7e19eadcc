import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import Testing

/// The `bench` executable as a user meets it: bad input gets one line on
/// stderr and exit status 64, help teaches, a tiny run works.
@Suite(.serialized) final class BenchCLITests {
    /// This test's own folder, removed when the test ends.
    let scratch = NSTemporaryDirectory() + "bench-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    /// The `bench` binary SwiftPM built next to this test bundle.
    static let binary: URL = {
        var dir = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("bench")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("bench")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func bench(_ args: [String], environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    @Test(arguments: [
        (["--slot-pages", "0"], "--slot-pages: 0 pages is out of range"),
        (["--slot-pages", "-3"], "--slot-pages"),
        (["--slot-pages", "lots"], "The value 'lots' is invalid for '--slot-pages <sizes>'"),
        (["--reps", "x"], "The value 'x' is invalid for '--reps <n>'"),
        (["--slot-pages", "1GiB", "--dirty", "300000"], "--dirty: 300000 is out of range"),
        (["--strategy", "magic"], "The value 'magic' is invalid for '--strategy <names>'. Please provide one of the following: slot-walk, rmap"),
        (["--slot-pages", "1TiB", "--paging", "shadow", "--mappings", "16"], "needs about"),
        (["--no-such-flag"], "Unknown option '--no-such-flag'"),
        (["--backend", "qemu"], "The value 'qemu' is invalid for '--backend <name>'. Please provide one of 'model', 'kvm' or 'both'"),
        (["dirty-log-perf", "-n", "0"], "-n: 0 pages is out of range"),
        (["--kvm-budget", "0"], "--kvm-budget: 0 is out of range; accepted: 1 to 86400 seconds"),
        (["compare", "a", "b", "--reps", "3"], "--reps: an option of a run, not of compare"),
        (["check-eviction", "--cache", "warm"], "--cache: does not apply to check-eviction"),
        (["breakdown", "--pattern", "random"], "--pattern: does not apply to breakdown"),
        (["breakdown", "--dirty", "1,2"], "--dirty: breakdown takes one dirty count"),
        (["breakdown", "--slot-pages", "64MiB", "--dirty", "20000"], "--dirty: 20000 is out of range"),
    ])
    func badInputIsOneLineAndExitStatus64(args: [String], expected: String) throws {
        let r = try bench(args + ["--output", scratch + "/never"])
        #expect(r.status == 64)
        #expect(r.stderr.hasPrefix("bench: error: "))
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
        #expect(r.stdout.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: scratch + "/never"), "nothing written")
    }

    @Test func compareRefusesWhatIsNotARunFolder() throws {
        let r = try bench(["compare", "/nonexistent-a", "/nonexistent-b"])
        #expect(r.status == 64)
        #expect(r.stderr == "bench: error: run-a: /nonexistent-a/samples.csv cannot be read; give a run folder written by bench\n")
    }

    /// Starts `bench` with `args`, waits until its stderr shows `ready`,
    /// then sends it `signals` back to back; returns how it ended.
    func interrupt(_ args: [String], when ready: String, with signals: [Int32]) throws -> (Result, seconds: Double) {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let watch = StderrWatch(ready: ready)
        err.fileHandleForReading.readabilityHandler = { watch.append($0.availableData) }
        try p.run()
        #expect(watch.seen.wait(timeout: .now() + 120) == .success, "never saw \(ready)")
        let t0 = Date()
        for (i, s) in signals.enumerated() {
            // Two of a kind sent at once would arrive as one.
            if i > 0 { usleep(200_000) }
            kill(p.processIdentifier, s)
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        err.fileHandleForReading.readabilityHandler = nil
        watch.append(err.fileHandleForReading.readDataToEndOfFile())
        let e = watch.text
        return (Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: e), Date().timeIntervalSince(t0))
    }

    /// A long run: every point and strategy of a 64 MiB slot, 25 repetitions each.
    func longRun(_ dir: String) -> [String] {
        ["--slot-pages", "64MiB", "--paging", "tdp,shadow", "--pattern", "even", "--strategy", "rmap,slot-walk,masked",
         "--dirty", "1,64,4096,16384", "--reps", "25", "--backend", "model", "--output", dir]
    }

    /// SIGINT or SIGTERM in the middle of a series: the point under way is
    /// abandoned, the files hold every point finished before it and say the
    /// run was interrupted and where, the terminal says where the files
    /// are, and the exit status is 128 + the signal.
    @Test(arguments: [(SIGINT, "SIGINT", Int32(130)), (SIGTERM, "SIGTERM", Int32(143))])
    func aSignalStopsTheRunWithEveryFileWhole(signal: Int32, name: String, status: Int32) throws {
        let dir = scratch + "/signal-\(name)"
        // The second series starts once the first is done and written.
        let (r, _) = try interrupt(longRun(dir), when: "[2/2]", with: [signal])
        #expect(r.status == status, "\(r.stderr)")
        #expect(r.stdout.contains("INTERRUPTED by \(name) during threshold 64MiB shadow×2 even"), "\(r.stdout)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last)
        let folder = dir + "/" + run
        #expect(r.stdout.contains("points:    \(folder)/points.csv"))
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/meta.json"))) as! [String: Any]
        let interrupted = try #require(meta["interrupted"] as? [String: Any])
        #expect(interrupted["signal"] as? String == name)
        #expect((interrupted["during"] as? String)?.hasPrefix("threshold 64MiB shadow×2 even, ") == true, "\(interrupted)")
        let points = try String(contentsOfFile: folder + "/points.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        #expect(points.contains { $0.contains(",tdp,") }, "the finished series is kept")
        #expect(points.allSatisfy { $0.contains(",true,0,") }, "every row written is verified")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder)
        #expect(!files.contains { $0.hasSuffix(".tmp") }, "no file left half written")
        #expect(files.contains("report.md") && files.contains("crossover.csv"))
    }

    /// A second Ctrl-C does not wait for the clean stop: sent 0.2 s apart
    /// while the run builds a VM (it looks for the first only between
    /// measurements), the two end it at once, with nothing more written.
    @Test func aSecondSigintExitsAtOnce() throws {
        let dir = scratch + "/sigint2"
        let args = ["--slot-pages", "4GiB", "--paging", "shadow", "--pattern", "even", "--reps", "3", "--backend", "model", "--output", dir]
        let (r, seconds) = try interrupt(args, when: "started", with: [SIGINT, SIGINT])
        #expect(r.status == 130)
        #expect(!r.stdout.contains("INTERRUPTED"), "no clean stop")
        #expect(seconds < 10, "at once: \(seconds) s")
        let run = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last
        #expect(run.map { FileManager.default.fileExists(atPath: dir + "/" + $0 + "/meta.json") } != true, "nothing written after the signals")
    }

    @Test func helpTeachesTheStrategiesOptionsAndFiles() throws {
        let r = try bench(["--help"])
        #expect(r.status == 0)
        for s in ["slot-walk", "rmap", "seed", "masked", "rmap-walk", "tdp-walk", "tdp-masked", "dbit-clear", "clear-chunked", "ring", "adaptive"] {
            #expect(r.stdout.contains("\n  \(s) "), "help does not explain \(s)")
        }
        for option in ["--slot-pages", "--quick", "--cache", "--reps", "--output", "--backend", "--strategy"] {
            #expect(r.stdout.contains(option), "help lacks \(option)")
        }
        for file in ["points.csv", "samples.csv", "crossover.csv", "report.md", "meta.json"] { #expect(r.stdout.contains(file)) }
        #expect(r.stdout.contains("dirty-log-perf") && r.stdout.contains("compare"), "the subcommands")
        let perf = try bench(["dirty-log-perf", "--help"])
        #expect(perf.status == 0 && perf.stdout.contains("-n <size>") && perf.stdout.contains("--reps"), "the shared options")
    }

    /// A file where the folder goes, and /proc, which root cannot write
    /// either: exit status 73 and one line, before any work (the first
    /// thing a run does after making its folder is say it calibrates).
    @Test func anUnwritableOutputExits73BeforeAnyWork() throws {
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let file = scratch + "/file"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        for output in [file, file + "/runs", "/proc/dirty-log-bench-runs"] {
            let r = try bench(["--slot-pages", "64", "--reps", "1", "--backend", "model", "--output", output])
            #expect(r.status == 73, "\(output): \(r.stderr)")
            #expect(r.stderr.hasPrefix("bench: error: --output:") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
            #expect(!r.stderr.contains("calibrating") && r.stdout.isEmpty)
        }
    }

    #if DEBUG
    /// The planted bug of a debug build, end to end: a strategy that skips
    /// one spte makes its rows unverified in points.csv, the summary counts
    /// and shows the violations, and the run exits 1.
    @Test func aBrokenStrategyFailsTheRun() throws {
        let dir = scratch + "/bug"
        let r = try bench(["--slot-pages", "4096", "--paging", "tdp", "--pattern", "even", "--strategy", "masked,slot-walk",
                           "--dirty", "1,64", "--reps", "2", "--cache", "warm", "--backend", "model", "--quiet", "--output", dir],
                          environment: ["DIRTY_LOG_BENCH_PLANTED_BUG": "skip-one-spte"])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stdout.contains("4 NOT verified") && r.stdout.contains("VIOLATIONS: "), "\(r.stdout)")
        #expect(r.stdout.contains("left writable after protection"))
        let run = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last!
        let points = try String(contentsOfFile: dir + "/" + run + "/points.csv", encoding: .utf8)
        let rows = points.split(separator: "\n").dropFirst()
        #expect(rows.count == 4 && rows.allSatisfy { $0.contains(",false,") })
        // Without the variable, the same run passes.
        let clean = try bench(["--slot-pages", "4096", "--paging", "tdp", "--pattern", "even", "--strategy", "masked,slot-walk",
                               "--dirty", "1,64", "--reps", "2", "--cache", "warm", "--backend", "model", "--quiet", "--output", dir])
        #expect(clean.status == 0 && clean.stdout.contains("all verified"))
    }
    #endif

    /// A real run, copied with every rmap sample made 25% slower: compare
    /// fails it at the series level with --check rmap and a 10% limit, and
    /// passes an unchanged copy.
    @Test func compareFailsARunWithAPlantedRegressionAndPassesAnUnchangedCopy() throws {
        let base = scratch + "/compare"
        let r = try bench(["--slot-pages", "4096", "--paging", "tdp", "--pattern", "even", "--strategy", "rmap,masked,slot-walk",
                           "--dirty", "1,2,4,8,16,32,64,128", "--reps", "5", "--cache", "warm", "--backend", "model", "--quiet",
                           "--output", base])
        #expect(r.status == 0, "\(r.stderr)")
        let fm = FileManager.default
        let run = base + "/" + (try fm.contentsOfDirectory(atPath: base).filter { !$0.hasPrefix(".") }.sorted().last!)
        func copy(_ name: String, factor: Double) throws -> String {
            let dir = base + "/" + name
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let lines = try String(contentsOfFile: run + "/samples.csv", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            let header = lines[0].split(separator: ",").map(String.init)
            let strategy = header.firstIndex(of: "strategy")!, ns = header.firstIndex(of: "ns")!
            let out = lines.enumerated().map { i, line -> String in
                var f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard i > 0, f.count == header.count, f[strategy] == "rmap", let v = Double(f[ns]) else { return String(line) }
                f[ns] = String(format: "%.0f", v * factor)
                return f.joined(separator: ",")
            }
            try out.joined(separator: "\n").write(toFile: dir + "/samples.csv", atomically: true, encoding: .utf8)
            return dir
        }
        let slower = try bench(["compare", run, try copy("slower", factor: 1.25), "--check", "rmap", "--max-regression", "10"])
        #expect(slower.status == 1, "\(slower.stdout)\(slower.stderr)")
        #expect(slower.stdout.contains("REGRESSION: rmap significantly slower by more than 10%: 1 series"))
        let same = try bench(["compare", run, try copy("same", factor: 1), "--check", "rmap", "--max-regression", "10"])
        #expect(same.status == 0, "\(same.stdout)\(same.stderr)")

        // A damaged copy stops the comparison with the file, line and
        // field, exit 65: a time that is not a number, a fault path, a
        // strategy no run writes, a dirty count that is not one, a row cut
        // short.
        func damaged(_ name: String, line: Int, column: String, value: String?) throws -> String {
            let dir = base + "/" + name
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var lines = try String(contentsOfFile: run + "/samples.csv", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                .map(String.init)
            let header = lines[0].split(separator: ",").map(String.init)
            var f = lines[line - 1].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            if let value { f[header.firstIndex(of: column)!] = value } else { f.removeLast() }
            lines[line - 1] = f.joined(separator: ",")
            try lines.joined(separator: "\n").write(toFile: dir + "/samples.csv", atomically: true, encoding: .utf8)
            return dir
        }
        for (name, line, column, value, message) in [
            ("ns", 4, "ns", Optional("12a"), "samples.csv:4: field 'ns': '12a' is not a time in ns"),
            ("path", 5, "fault_path", "sloppy", "samples.csv:5: field 'fault_path': 'sloppy' is not one of locked, fast"),
            ("strategy", 3, "strategy", "rmapp", "samples.csv:3: field 'strategy': 'rmapp' is not one of slot-walk"),
            ("dirty", 7, "dirty_pages", "many", "samples.csv:7: field 'dirty_pages': 'many' is not a count"),
            ("short", 6, "", nil, "samples.csv:6: 11 fields where the header has 12"),
        ] {
            let dir = try damaged(name, line: line, column: column, value: value)
            let c = try bench(["compare", run, dir])
            #expect(c.status == 65, "\(name): \(c.stdout)\(c.stderr)")
            #expect(c.stderr.contains(dir + "/" + message) && c.stderr.split(separator: "\n").count == 1, "\(name): \(c.stderr)")
        }
    }

    /// The concurrent scenario from the command line: vCPU threads, the
    /// guest's columns filled and agreeing (a fault count behind the
    /// pooled percentiles), the pollution's pairs on both CPUs, every row
    /// verified.
    @Test func aTinyConcurrentRunFillsTheGuestsColumns() throws {
        let dir = scratch + "/concurrent"
        let r = try bench(["--scenario", "concurrent", "--slot-pages", "4096", "--paging", "shadow", "--fault-path", "locked",
                           "--reps", "2", "--guest-wss", "64KiB", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("rows, all verified)"))
        let run = dir + "/" + (try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last!)
        func table(_ name: String) throws -> [[String: String]] {
            let lines = try String(contentsOfFile: run + "/" + name, encoding: .utf8).split(separator: "\n").map(String.init)
            let header = lines[0].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init))) }
        }
        let rows = try table("points.csv")
        #expect(!rows.isEmpty && rows.allSatisfy { $0["fault_path"] == "locked" && $0["vcpus_pinned"] != "" })
        for row in rows {
            let faults = Int(row["fault_count"]!)!
            #expect(faults > 0 ? Double(row["fault_p50_ns"]!)! <= Double(row["fault_p99_ns"]!)! : row["fault_p50_ns"] == "")
            #expect(Int(row["lock_holds"]!)! + Int(row["read_lock_holds"]!)! >= 2, "two instrumented repetitions, a hold at least each")
        }
        let pollution = try table("pollution.csv")
        #expect(Set(pollution.map { $0["guest_cpu"]! }) == ["same", "other"] && pollution.allSatisfy { $0["wss_bytes"] == "65536" })
        #expect(pollution.contains { $0["strategy"] == "slot-walk" && $0["over_rmap_verdict"] != "" })
        #expect(try String(contentsOfFile: run + "/report.md", encoding: .utf8).contains("## What the guest pays"))
    }

    /// Fast faults under shadow paging alone are refused: its sptes are
    /// indirect, and c7ba5b48's fast path fixes direct ones only.
    @Test func fastFaultsUnderShadowPagingAloneAreRefused() throws {
        let r = try bench(["--scenario", "concurrent", "--paging", "shadow", "--fault-path", "fast", "--output", scratch + "/never"])
        #expect(r.status == 64 && r.stderr.contains("--fault-path: fast runs under --paging tdp only"), "\(r.stderr)")
    }

    #if DEBUG
    /// The planted bug of the concurrent path: flushes counted but not
    /// sent. The vCPUs write through the translations the harvest should
    /// have flushed; every row unverified, exit status 1.
    @Test func aSkippedFlushFailsAConcurrentRun() throws {
        let dir = scratch + "/skipflush"
        let r = try bench(["--scenario", "concurrent", "--slot-pages", "4096", "--paging", "tdp", "--fault-path", "locked",
                           "--strategy", "masked,slot-walk", "--dirty", "64", "--reps", "2", "--guest-wss", "64KiB", "--quiet", "--output", dir],
                          environment: ["DIRTY_LOG_BENCH_PLANTED_BUG": "skip-flush"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        let flat = r.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        #expect(flat.contains("NOT verified") && flat.contains("writes through a cached writable translation after the harvest returned"),
                "\(r.stdout)")
    }
    #endif

    /// The lifecycle from the command line: dirty_log_perf_test's lines
    /// for each lifecycle, lifecycle.csv with every phase verified, under
    /// both paging modes; options that need it refused without it.
    @Test func aLifecycleRunPrintsTheTestsLines() throws {
        let dir = scratch + "/lifecycle"
        let r = try bench(["--scenario", "lifecycle", "--vcpu-memory", "16MiB", "--backing", "2m", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        for line in ["Populate memory time: ", "Enabling dirty logging time: ", "Iteration 2 dirty memory time: ",
                     "Iteration 1 get dirty log time: ", "Iteration 1 clear dirty log time: ", "Disabling dirty logging time: ",
                     "Get dirty log over 2 iterations took "] {
            #expect(r.stdout.contains(line), "\(line)")
        }
        #expect(r.stdout.contains("lifecycle 16MiB tdp 2m 1 vCPU: eager-split") && r.stdout.contains("lifecycle 16MiB shadow×2 2m 1 vCPU: drop"))
        #expect(r.stdout.contains("phases, all verified), lifecycle.txt"), "\(r.stdout)")
        let run = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last!
        let csv = try String(contentsOfFile: dir + "/" + run + "/lifecycle.csv", encoding: .utf8)
        #expect(csv.hasPrefix("series,paging,") && csv.contains(",recover,") && csv.contains(",wrprot-walk,"))
        let bad = try bench(["--scenario", "threshold", "--backing", "2m", "--output", scratch + "/never"])
        #expect(bad.status == 64 && bad.stderr.contains("--backing: applies to --scenario lifecycle only"), "\(bad.stderr)")
        let shadow = try bench(["--scenario", "lifecycle", "--paging", "shadow", "--enable-policy", "eager-split", "--output", scratch + "/never"])
        #expect(shadow.status == 64 && shadow.stderr.contains("under --paging tdp only"), "\(shadow.stderr)")
        let odd = try bench(["--scenario", "lifecycle", "--vcpu-memory", "3MiB", "--output", scratch + "/never"])
        #expect(odd.status == 64 && odd.stderr.contains("--vcpu-memory: 768 pages is not a whole number of 2 MiB regions"), "\(odd.stderr)")
    }

    @Test func aBreakdownPrintsEachStepAndTheModelsRatio() throws {
        let dir = scratch + "/breakdown"
        let r = try bench(["breakdown", "--slot-pages", "16MiB", "--reps", "3", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.hasPrefix("tdp 16MiB, 4096 dirty pages, 3 repetitions:"), "\(r.stdout)")
        for step in BreakdownVariant.rmapSteps + BreakdownVariant.walkSteps { #expect(r.stdout.contains(step), "\(step)") }
        #expect(r.stdout.contains("x the minimal"))
        #expect(r.stdout.split(separator: "\n").allSatisfy { $0.count <= 100 }, "within 100 columns")
        let run = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last!
        let csv = try String(contentsOfFile: dir + "/" + run + "/breakdown.csv", encoding: .utf8)
        #expect(csv.hasPrefix("paging,sptes_per_gfn,slot_pages,dirty_pages,cache,side,variant,step,"))
        #expect(csv.split(separator: "\n").count == 1 + 2 * (BreakdownVariant.rmapSteps.count + BreakdownVariant.walkSteps.count + 2))
    }

    #if DEBUG
    /// The lifecycle's planted bug: enabling logging leaves large leaves
    /// writable; the enable phases are unverified and the run exits 1.
    @Test func aLargeLeafLeftWritableFailsALifecycleRun() throws {
        let r = try bench(["--scenario", "lifecycle", "--vcpu-memory", "16MiB", "--paging", "tdp", "--enable-policy", "wrprot",
                           "--quiet", "--output", scratch + "/largeleaf"],
                          environment: ["DIRTY_LOG_BENCH_PLANTED_BUG": "large-leaf-writable"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("NOT verified") && r.stdout.contains("enable: ") && r.stdout.contains("writable 2 MiB leaf"), "\(r.stdout)")
    }
    #endif

    /// One table of strategies (`Strategy.details`, `summary`): the help
    /// lists every one, `--strategy` names them all, the README's table is
    /// the code's, results/README lists them in order. Change one and this
    /// fails until all agree.
    @Test func everyStrategyIsDescribedAlikeEverywhere() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains(Strategy.markdownTable + "\n\n"), "README.md's table of strategies differs from Strategy.markdownTable")
        let results = try String(contentsOf: root.appendingPathComponent("results/README.md"), encoding: .utf8)
        let listed = "model: " + Strategy.allCases.map { "`\($0.rawValue)`" }.joined(separator: ", ") + "; kvm: "
            + KernelStrategy.allCases.map { "`\($0.rawValue)`" }.joined(separator: ", ")
        #expect(results.contains(listed), "results/README.md's strategy column should read: \(listed)")
        let help = try bench(["--help"])
        #expect(help.status == 0)
        for s in Strategy.allCases {
            let first = s.summary.split(separator: " ").prefix(3).joined(separator: " ")
            #expect(help.stdout.contains("\n  \(s.rawValue)" + String(repeating: " ", count: 15 - s.rawValue.count) + first),
                    "the help's list of strategies lacks \(s.rawValue)")
        }
        // ArgumentParser wraps the option's help: compare it with its blanks collapsed.
        let option = help.stdout.components(separatedBy: "--strategy <names>").last ?? ""
        let flat = option.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        #expect(flat.contains(Strategy.allCases.map(\.rawValue).joined(separator: ", ")), "--strategy names every strategy")
    }

    @Test func aTinyRunPrintsTheSummaryAndPaths() throws {
        let dir = scratch + "/tiny"
        let r = try bench(["--slot-pages", "1024", "--reps", "2", "--cache", "warm", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("series") && r.stdout.contains("crossover") && r.stdout.contains("seed regret"))
        let wide = r.stdout.split(separator: "\n").filter { $0.count > Reports.terminalColumns }
        #expect(wide.isEmpty, "lines over \(Reports.terminalColumns) columns: \(wide)")
        #expect(r.stdout.contains("rows, all verified)"))
        #expect(r.stdout.contains("points:    \(dir)/") && r.stdout.contains("report:    \(dir)/"))
        #expect(r.stderr.isEmpty, "--quiet")
    }
}

/// A child's stderr as it arrives, and a semaphore signalled the first
/// time it shows a given text.
final class StderrWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var fired = false
    let ready: String
    let seen = DispatchSemaphore(value: 0)

    init(ready: String) { self.ready = ready }

    func append(_ d: Data) {
        lock.lock()
        data.append(d)
        let hit = !fired && String(decoding: data, as: UTF8.self).contains(ready)
        if hit { fired = true }
        lock.unlock()
        if hit { seen.signal() }
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }
}
