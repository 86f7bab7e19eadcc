import Foundation
import Testing

/// scripts/kernel-lab's usage: bad options refused in one line, exit 64,
/// before anything is installed, fetched or booted; --help teaches.
@Suite struct KernelLabScriptTests {
    /// The repository's root, from this file's place in it.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func lab(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = Self.root.appendingPathComponent("scripts/kernel-lab")
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test(arguments: [
        (["--modes", "tdp,ept"], "--modes takes tdp and shadow, not ept"),
        (["--boot-timeout", "soon"], "--boot-timeout takes whole seconds"),
        (["--fast"], "unknown option --fast"),
    ])
    func badUsageIsOneLineAndExit64(args: [String], expected: String) throws {
        let r = try lab(args)
        #expect(r.status == 64, "\(args): \(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(expected) && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stdout.isEmpty, "nothing done before the refusal: \(r.stdout)")
    }

    @Test func helpSaysWhatTheLabIsAndItsExitStatuses() throws {
        let r = try lab(["--help"])
        #expect(r.status == 0)
        for text in ["--smoke", "--modes tdp,shadow", "npt=0", "kernel-lab.csv", "69", "70", "75"] {
            #expect(r.stdout.contains(text), "help lacks \(text)")
        }
    }
}
