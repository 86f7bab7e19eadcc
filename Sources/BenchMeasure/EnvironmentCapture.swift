import BenchAnalysis
import Foundation
import HostKVM
import ShadowMMU

extension Environment {
    /// The machine and software of this run: /proc and sysfs, uname, git,
    /// the Swift toolchain, jemalloc, /dev/kvm.
    public static func capture(commandLine: [String] = CommandLine.arguments) -> Environment {
        let cpu = readSmallFile("/proc/cpuinfo")?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let commit = Subprocess.output(["git", "rev-parse", "HEAD"]) ?? "unknown"
        let dirty = !(Subprocess.output(["git", "status", "--porcelain", "--untracked-files=no"]) ?? "").isEmpty
        let kvm: String
        do { kvm = try KVMDevice().summary } catch { kvm = "\(error)" }
        return Environment(
            cpuModel: cpu, cores: ProcessInfo.processInfo.activeProcessorCount, memoryBytes: SystemMemory.totalBytes,
            kernel: "Linux " + release,
            swiftVersion: Subprocess.output(["swift", "--version"])?.split(separator: "\n").first.map(String.init) ?? "unknown",
            jemallocVersion: JemallocArena.version,
            transparentHugePages: readSmallFile("/sys/kernel/mm/transparent_hugepage/enabled")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown",
            lastLevelCacheBytes: CacheGeometry.sysfsLastLevelCacheBytes,
            gitCommit: commit, gitDirty: dirty, commandLine: commandLine, kvm: kvm)
    }
}
