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
        var md = "# The kernel lab: Linux 6.1's KVM under emulation beside the model\n\n"
        md += "Counts only: every count is the kernel's own (its binary statistics after each phase) or the model's; "
        md += "the lab's times are QEMU's software emulation's and are set only against each other (same boot). "
        md += "Leaves are the measured slot's (the kernel's pages_* less its code slot's 4 KiB leaves); flushes are "
        md += "kvm_flush_remote_tlbs() calls during the phase (the kernel's remote_tlb_flush_requests); zapped is the kernel's "
        md += "mmu_shadow_zapped, which 6.1 counts in __kvm_mmu_prepare_zap_page() alone (none under the TDP MMU: -), beside the "
        md += "model's tables freed.\n\n"
        md += "Kernel threshold points: \(r.kernelPointsVerified) of \(r.kernelPoints) verified exactly against the pages the guest wrote"
        md += r.fewestKernelSptes.map { "; the kernel held at least \($0) 4 KiB sptes at each (pages_4k)" } ?? ""
        md += ".\n\n"
        var keys: [String] = []
        for row in r.rows {
            let k = "\(row.paging) \(Bytes.pages(row.slotPages)) \(row.backing.rawValue) \(row.mode)"
            if !keys.contains(k) { keys.append(k) }
        }
        for k in keys {
            let rows = r.rows.filter { "\($0.paging) \(Bytes.pages($0.slotPages)) \($0.backing.rawValue) \($0.mode)" == k }
            md += "## \(k)\n\nModel: enable `\(rows[0].enablePolicy.rawValue)`, disable `\(rows[0].disablePolicy.rawValue)`, era \(rows[0].era.label)"
            md += rows[0].paging == "shadow" ? ", the shadow MMU (no TDP MMU: npt=0)" : ", the TDP MMU"
            md += ".\n\n" + Reports.kernelLabMarkdown(rows) + "\n"
        }
        if !r.sideBySide.isEmpty {
            md += "## dirty_log_perf_test beside the harness\n\nSame boot, both emulated: harness's kernel lifecycle against the selftest with the matching options.\n\n"
            md += "The same ioctls under the same names: enabling and disabling logging (KVM_SET_USER_MEMORY_REGION), "
            md += "KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG of the whole slot in one call, on a slot of the same size and backing. "
            md += "Different work under the same names: the harness's guest runs without paging of its own (flat 32-bit) and "
            md += "stores one byte a page from a list, one vCPU, halting after each pass; the selftest's guest runs in long mode "
            md += "on its own 4 KiB page tables and stores 8 bytes a page in a loop, and its populate time includes its vCPU "
            md += "thread's start. Under shadow paging (npt=0) the selftest's page tables are shadowed (indirect shadow pages, "
            md += "a guest walk per fault) where the harness's guest is mapped directly (nonpaging): there the selftest's "
            md += "populate and passes do more, and their ratios say so.\n\n"
            for s in r.sideBySide { md += "### \(s.label)\n\n```\n" + s.lines.joined(separator: "\n") + "\n```\n\n" }
        }
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
