import Foundation
import Testing

/// The `bench` executable as a user meets it: bad input gets one line on
/// stderr and exit status 64, help teaches, a tiny run works.
@Suite(.serialized) struct BenchCLITests {
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
    ])
    func badInputIsOneLineAndExitStatus64(args: [String], expected: String) throws {
        let r = try bench(args + ["--output", NSTemporaryDirectory() + "bench-cli-never"])
        #expect(r.status == 64)
        #expect(r.stderr.hasPrefix("bench: error: "))
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
        #expect(r.stdout.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: NSTemporaryDirectory() + "bench-cli-never"), "nothing written")
    }

    @Test func compareRefusesWhatIsNotARunFolder() throws {
        let r = try bench(["compare", "/nonexistent-a", "/nonexistent-b"])
        #expect(r.status == 64)
        #expect(r.stderr == "bench: error: run-a: /nonexistent-a/samples.csv cannot be read; give a run folder written by bench\n")
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
        let file = NSTemporaryDirectory() + "bench-cli-file-\(getpid())"
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
        let dir = NSTemporaryDirectory() + "bench-cli-bug-\(getpid())"
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

    @Test func aTinyRunPrintsTheSummaryAndPaths() throws {
        let dir = NSTemporaryDirectory() + "bench-cli-\(getpid())"
        let r = try bench(["--slot-pages", "1024", "--reps", "2", "--cache", "warm", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("series") && r.stdout.contains("crossover") && r.stdout.contains("seed regret max"))
        #expect(r.stdout.contains("rows, all verified)"))
        #expect(r.stdout.contains("points:    \(dir)/") && r.stdout.contains("report:    \(dir)/"))
        #expect(r.stderr.isEmpty, "--quiet")
    }
}
