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

    func bench(_ args: [String]) throws -> Result {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = args
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
        (["--slot-pages", "0"], "--slot-pages: 0 is out of range"),
        (["--slot-pages", "-3"], "--slot-pages"),
        (["--slot-pages", "lots"], "--slot-pages: 'lots' is not a page count or a size"),
        (["--reps", "x"], "--reps: 'x' is not a whole number; accepted: 1 to 1000"),
        (["--slot-pages", "1GiB", "--dirty", "300000"], "--dirty: 300000 is out of range"),
        (["--strategy", "magic"], "--strategy: unknown value 'magic'; accepted:"),
        (["--pattern", "zipf"], "--pattern: unknown value 'zipf'; accepted:"),
        (["--slot-pages", "1TiB", "--paging", "shadow", "--mappings", "16"], "needs about"),
        (["--no-such-flag"], "Unknown option '--no-such-flag'"),
        (["--backend", "qemu"], "--backend: unknown value 'qemu'; accepted: model, kvm, both"),
        (["--preset", "migration-storm"], "--preset: unknown value 'migration-storm'; accepted: dirty-log-perf"),
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

    @Test func helpTeachesTheStrategiesAndOptions() throws {
        let r = try bench(["--help"])
        #expect(r.status == 0)
        for word in ["slot-walk", "rmap", "seed", "--slot-pages", "--quick", "--cache", "points.csv"] {
            #expect(r.stdout.contains(word), "help lacks \(word)")
        }
    }

    @Test func anOutputThatIsAFileExits73() throws {
        let file = NSTemporaryDirectory() + "bench-cli-file-\(getpid())"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        let r = try bench(["--slot-pages", "64", "--reps", "1", "--quiet", "--output", file])
        #expect(r.status == 73)
        #expect(r.stderr.hasPrefix("bench: error: --output:"))
    }

    @Test func aTinyRunPrintsTheSummaryAndPaths() throws {
        let dir = NSTemporaryDirectory() + "bench-cli-\(getpid())"
        let r = try bench(["--slot-pages", "1024", "--reps", "2", "--cache", "warm", "--quiet", "--output", dir])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("crossover"))
        #expect(r.stdout.contains("all verified"))
        #expect(r.stderr.isEmpty, "--quiet")
    }
}
