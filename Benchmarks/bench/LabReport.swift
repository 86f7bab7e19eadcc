import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation

/// `bench lab-report`: the kernel lab's counts beside the model's.
struct LabReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab-report",
        abstract: "The kernel lab's counts beside the model's (scripts/kernel-lab runs it).",
        discussion: """
        Reads a folder scripts/kernel-lab wrote (tdp/ and shadow/: the harness's \
        kernel series and lifecycles run inside a real KVM under emulation, and \
        dirty_log_perf_test's output from the same boot), runs the model here on \
        each lifecycle's workload at that kernel's rules (Linux 6.1: the TDP MMU \
        under tdp, the shadow MMU's direct mappings under shadow), and writes \
        kernel-lab.csv (leaves per level after every phase, TLB flush requests, \
        shadow pages zapped: kernel and model side by side) and kernel-lab.md \
        there; prints the counts and dirty_log_perf_test's phase lines beside the \
        harness's with their ratio. Counts only: the lab's times are an \
        emulator's. Exit 1 when a kernel point failed its check or the kernel \
        built no spte.
        """
    )

    @Argument(help: "The kernel lab's run folder (results/lab-<time>).")
    var folder: String

    func run() throws {
        guard FileManager.default.fileExists(atPath: folder + "/tdp") || FileManager.default.fileExists(atPath: folder + "/shadow") else {
            throw BenchError.usage("\(folder): no tdp/ or shadow/ of a kernel lab run in it")
        }
        let r = try KernelLab(folder: folder).run(progress: Progress(quiet: false))
        try AtomicFile.write(Reports.kernelLabTable(r.rows).text, to: folder + "/kernel-lab.csv")
        let md = Reports.kernelLabDocument(rows: r.rows, kernelPoints: r.kernelPoints, kernelPointsVerified: r.kernelPointsVerified,
                                           fewestKernelSptes: r.fewestKernelSptes, sideBySide: r.sideBySide)
        try AtomicFile.write(md, to: folder + "/kernel-lab.md")
        let agree = r.rows.filter(\.leavesAgree).count
        print("kernel lab: \(r.rows.count) phases compared, leaves per level the same in \(agree); "
            + "\(r.kernelPointsVerified) of \(r.kernelPoints) kernel points verified" + (r.fewestKernelSptes.map { ", at least \($0) sptes built" } ?? ""))
        for row in r.rows where !row.leavesAgree {
            print("  differs: \(row.paging) \(row.backing.rawValue) \(row.mode) \(row.phase.rawValue)\(row.iteration.map { " \($0)" } ?? ""): "
                + "kernel \(row.kernelLeaves) model \(row.modelLeaves) (4K, 2M, 1G): \(row.explanation)")
        }
        for s in r.sideBySide {
            print("\n\(s.label)")
            for l in s.lines { print("  " + l) }
        }
        print("\ncsv:    \(folder)/kernel-lab.csv\nreport: \(folder)/kernel-lab.md")
        for h in r.hugeMissing { print("FAILED: \(h): the kernel never held a huge leaf, although huge pages back the guest") }
        if r.kernelPointsVerified < r.kernelPoints || (r.fewestKernelSptes ?? 1) == 0 || !r.hugeMissing.isEmpty { throw ExitCode(1) }
    }
}
