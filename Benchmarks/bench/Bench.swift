import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import ShadowMMU

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark how KVM write-protects a slot when it hands out the dirty log.",
        discussion: """
        A struct-of-arrays model of the x86 KVM shadow MMU (shadow pages from jemalloc, \
        rmaps of pte_list_desc chains, double-buffered dirty bitmaps, vCPU dirty rings) \
        is populated like kvm-unit-tests' dirty-log-perf: every page written once, dirty \
        logging enabled. Then, for each dirty-page count, the guest writes that many \
        pages and one harvest of the dirty log is timed per strategy, interleaved, \
        caches cold, repeated until its median is known:

        \(Strategy.helpList)

        Every measured harvest is checked against the model's invariant (no \
        writable spte of a clean gfn, nothing logged lost); a run with a violation \
        exits 1. Results go to a new folder under --output: points.csv, samples.csv, \
        crossover.csv, skipped.csv, an SVG plot per series, report.md and meta.json \
        (results/README.md describes every file and column). Ctrl-C stops a run at \
        the next harvest with every file written whole (exit status 130; SIGTERM \
        143); a second Ctrl-C exits at once.

        With no options: a 1 GiB slot under two-dimensional paging (tdp: one spte per \
        gfn) and shadow paging (shadow: each gfn mapped by --mappings sptes in \
        different shadow pages), with evenly spaced and random dirty pages; a 16 GiB \
        slot under both with evenly spaced pages; ten pre-copy migration rounds on \
        the 1 GiB slots. Lists are comma-separated; sizes are page counts or sizes \
        such as 262144, 64MiB, 1GiB.

        Examples:
          bench --quick                                   a small sweep, seconds
          bench --slot-pages 1GiB --paging tdp --pattern even
          bench --slot-pages 1GiB --vm-pages 8GiB          a 1 GiB slot in an 8 GiB VM
          bench --slot-pages 4GiB --dirty 1,512,65536 --strategy rmap,slot-walk
          bench dirty-log-perf                            model and kernel side by side
          bench compare results/A results/B --check adaptive

        Where /dev/kvm opens, the same series also run on the real kernel (backend \
        kvm): kvm-get (KVM_GET_DIRTY_LOG), kvm-get+clear (manual protect: \
        KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG) and kvm-ring (the dirty ring and \
        KVM_RESET_DIRTY_RINGS), with a tiny guest writing the same pages.
        """,
        version: "dirty-log-bench 0.2",
        subcommands: [DirtyLogPerf.self, Compare.self, CheckEviction.self, Breakdown.self, LabReport.self]
    )

    /// Parses and runs, reporting any error on one line of stderr: bad input
    /// exits 64 (EX_USAGE), an unwritable output 73, a failure while running
    /// 70, a violated invariant 1, a run stopped by SIGINT 130 (SIGTERM 143).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as BenchError {
            FileHandle.standardError.write(Data("bench: error: \(error)\n".utf8))
            Foundation.exit(error.exitStatus)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            FileHandle.standardError.write(Data("bench: error: \(oneLine(fullMessage(for: error)))\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }

    /// ArgumentParser's message on one line: its first paragraph, a list of
    /// accepted values joined into it, no usage.
    static func oneLine(_ message: String) -> String {
        var parts: [String] = []
        for line in message.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.isEmpty || t.hasPrefix("Usage:") || t.hasPrefix("Help:") { break }
            parts.append(t.hasPrefix("- ") ? String(t.dropFirst(2)) : t)
        }
        var s = parts.first ?? message
        if parts.count > 1 { s += " " + parts.dropFirst().joined(separator: ", ") }
        if s.hasPrefix("Error: ") { s.removeFirst("Error: ".count) }
        return s
    }

    @OptionGroup var measurement: MeasurementOptions

    @Flag(help: "A small sweep (a 64 MiB slot, tdp and shadow, even pages, 3 to 9 repetitions), for a first try and for CI.")
    var quick = false

    @Option(name: .customLong("slot-pages"), help: ArgumentHelp(
        "Measured slot sizes, as page counts or sizes. (default: 1GiB,16GiB; --quick: 64MiB)", valueName: "sizes"))
    var slotPages: CommaList<PageCount>?

    @Option(name: .customLong("vm-pages"), help: ArgumentHelp(
        "Total guest memory; what the slot leaves goes to a second slot whose shadow pages count in n_used_mmu_pages (dirty-log-perf's -m). (default: the slot size)",
        valueName: "size"))
    var vmPages: PageCount?

    @Option(help: ArgumentHelp("Paging modes: tdp, shadow. (default: tdp,shadow)", valueName: "modes"))
    var paging: CommaList<PagingChoice>?

    @Option(help: ArgumentHelp("Under shadow paging, the sptes mapping each gfn (guest address spaces), 1 to 16. (default: \(SweepDefaults.mappings))", valueName: "k"))
    var mappings: Int?

    @Option(help: ArgumentHelp("Dirty patterns: \(DirtyPattern.allCases.map(\.rawValue).joined(separator: ", ")). (default: even,random)", valueName: "patterns"))
    var pattern: CommaList<DirtyPattern>?

    @Option(help: ArgumentHelp("threshold (sweep dirty counts, one harvest per point), migration (rounds of pre-copy: hot-set writes, harvest; timed as a total), concurrent (vCPU threads writing through each harvest: lock holds, fault latency, re-fault time, cache pollution, the seed's race), lifecycle (dirty_log_perf_test on a huge-page guest: populate, enable, iterations of writes and harvests, disable, each enable and disable policy as its kernel did it). (default: all four in the default run, migration on 1 GiB only, lifecycle on 1 GiB of 2 MiB pages; else threshold)", valueName: "names"))
    var scenario: CommaList<ScenarioChoice>?

    @Option(help: ArgumentHelp("Dirty-page counts to measure instead of the threshold sweep.", valueName: "counts"))
    var dirty: CommaList<Int>?

    @Option(name: .customLong("cluster-pages"), help: ArgumentHelp("clustered: pages per run. (default: 16)", valueName: "n"))
    var clusterPages: Int?

    @Option(name: .customLong("zipf-skew"), help: ArgumentHelp("hot-set: the Zipf exponent, 0 to 4. (default: 1)", valueName: "s"))
    var zipfSkew: Double?

    @Option(help: ArgumentHelp("migration: harvest rounds, 1 to 64. (default: 10)", valueName: "n"))
    var rounds: Int?

    @Option(name: .customLong("fault-path"), help: ArgumentHelp("concurrent: how the vCPUs' write faults are handled: locked (under mmu_lock, as at the seed), fast (c7ba5b48's lockless cmpxchg for direct sptes protected only for dirty logging, for the strategies of an era that had it: two-dimensional paging only). (default: locked,fast; fast under tdp only)", valueName: "paths"))
    var faultPath: CommaList<FaultPath>?

    @Option(name: .customLong("vcpu-threads"), help: ArgumentHelp("concurrent and lifecycle: vCPU threads writing through each harvest (lifecycle: each its own --vcpu-memory), 1 to 16, pinned to CPUs 1, 2, ... where the OS allows, the harvest on CPU 0 (dirty_log_perf_test's -c). More threads than CPUs share them: a descheduled vCPU thread stays in guest mode, which a real vCPU does not, and a flush then waits for the scheduler. (default: 1)", valueName: "n"))
    var vcpuThreads: Int?

    @Option(name: .customLong("guest-wss"), help: ArgumentHelp("concurrent: the guest working sets whose cache pollution by slot-walk and rmap is measured (re-read after a harvest and after an idle interval as long, in pairs whose orders alternate, until slot-walk's excess over rmap is known within ±3us at 95% or 0.8 s is spent on the working set), as sizes, 4KiB to 1GiB. (default: 1MiB, or the level-2 cache where smaller (\(Bytes.format(CacheGeometry.levelTwoCacheBytes)) here). A larger one, such as half the last-level cache the run finds the machine keeps (meta.json's calibration.effectiveLastLevelCacheBytes: a virtual machine's share of a shared cache can be far less than the \(Bytes.format(CacheGeometry.sysfsLastLevelCacheBytes)) sysfs reports), shows the shared cache at stake, at a second or more per row)", valueName: "sizes"))
    var guestWSS: CommaList<PageCount>?

    @Option(name: .customLong("guest-cpu"), help: ArgumentHelp("concurrent: where the working set is re-read for its pollution: same (on the harvesting CPU, as a vCPU scheduled after the migration thread), other (on a vCPU thread's CPU: only the shared cache at stake). (default: same,other)", valueName: "cpus"))
    var guestCPU: CommaList<GuestCPU>?

    @Option(name: .customLong("exit-cost"), help: ArgumentHelp("concurrent and lifecycle: what a VM exit and the entry after it cost a vCPU together, in ns, 0 to 1000000; every fault and every flush IPI pays it. (default: \(Int(PublishedExitCosts.exitCycles)) TSC cycles, \(Int(PublishedExitCosts.exitNs)) ns here: \(PublishedExitCosts.exitSource))", valueName: "ns"))
    var exitCost: Double?

    @Option(name: .customLong("ipi-cost"), help: ArgumentHelp("concurrent and lifecycle: what a TLB-flush IPI takes from its sending to its target vCPU's exit, per vCPU in guest mode, in ns, 0 to 1000000. (default: \(Int(PublishedExitCosts.ipiNs)) ns: \(PublishedExitCosts.ipiSource))", valueName: "ns"))
    var ipiCost: Double?

    @Option(name: .customLong("vcpu-memory"), help: ArgumentHelp("lifecycle: each vCPU's memory, the guest's being --vcpu-threads times it in one slot (dirty_log_perf_test's -b), as sizes, 2MiB to 64GiB, a list for a series each. (default: 1GiB)", valueName: "sizes"))
    var vcpuMemory: CommaList<PageCount>?

    @Option(help: ArgumentHelp("lifecycle: what backs guest memory, and so the largest leaf (dirty_log_perf_test's -s): 4k, 2m, 1g, a list for a series each. (default: 2m)", valueName: "sizes"))
    var backing: CommaList<Backing>?

    @Option(help: ArgumentHelp("lifecycle: rounds of guest passes and harvests between enable and disable, 1 to 100 (the test's -i). (default: 2)", valueName: "n"))
    var iterations: Int?

    @Option(help: ArgumentHelp("lifecycle: sequential (every page of a vCPU's memory in order) or random (as many pages at random, with replacement: the test's -a). (default: sequential)", valueName: "order"))
    var access: AccessChoice?

    @Option(name: .customLong("write-percent"), help: ArgumentHelp("lifecycle: accesses that write, 0 to 100; the rest read (the test's -w). (default: 100)", valueName: "percent"))
    var writePercent: Int?

    @Flag(name: .customLong("manual-protect"), help: "lifecycle: harvest by KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG where the policy's kernel had it (wrprot, eager-split; drop's 3.3 had not); split-on-clear always does.")
    var manualProtect = false

    @Flag(name: .customLong("vcpus-run-during-disable"), inversion: .prefixedNo, help: "lifecycle: the vCPUs keep writing while logging is disabled (the test's -e, as 35ef80eb's figures were taken): every TLB flush then waits for their IPIs. (default: on)")
    var vcpusRunDuringDisable = true

    @Option(name: .customLong("enable-policy"), help: ArgumentHelp("lifecycle: what enabling logging does to large leaves: \(EnablePolicy.allCases.map(\.rawValue).joined(separator: ", ")) (eager-split and split-on-clear under tdp only: the TDP MMU's). (default: all)", valueName: "names"))
    var enablePolicy: CommaList<EnablePolicy>?

    @Option(name: .customLong("disable-policy"), help: ArgumentHelp("lifecycle: how huge mappings come back when logging is disabled, among those of each enable policy's kernel: \(DisablePolicy.allCases.map(\.rawValue).joined(separator: ", ")). (default: all of each kernel's)", valueName: "names"))
    var disablePolicy: CommaList<DisablePolicy>?

    func run() throws {
        let plan = try plan(memoryAvailable: SystemMemory.availableBytes)
        try RunCommand.execute(plan, lifecycleLines: plan.modelSeries.isEmpty && plan.kernelSeries.isEmpty
            && !(plan.lifecycleSeries.isEmpty && plan.kernelLifecycleSeries.isEmpty))
    }
}
