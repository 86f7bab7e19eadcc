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
        subcommands: [DirtyLogPerf.self, Compare.self, CheckEviction.self, Breakdown.self]
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

    @Option(name: .customLong("guest-wss"), help: ArgumentHelp("concurrent: the guest working sets whose cache pollution by slot-walk and rmap is measured (re-read after a harvest and after an idle interval as long, in alternated pairs), as sizes, 4KiB to 1GiB. (default: the level-2 cache, \(Bytes.format(CacheGeometry.levelTwoCacheBytes)) here, and half the last-level cache the machine keeps, measured at the start of the run: a virtual machine's share of a shared cache can be far less than the \(Bytes.format(CacheGeometry.lastLevelCacheBytes)) sysfs reports)", valueName: "sizes"))
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

    /// The sweep's own options that were given, by name: what a preset does not take.
    /// Every option of the run given a value of its own, the sweep's and
    /// the measurement's: what a subcommand that takes none or some of them
    /// refuses rather than ignores.
    var optionsGiven: [String] { sweepOptionsGiven + measurement.optionsGiven }

    /// Refuses, before any work, a run option that `command` does not take
    /// (any outside `accepted`): refused, not ignored.
    func refuseOptions(except accepted: Set<String>, in command: String) throws {
        if let option = optionsGiven.first(where: { !accepted.contains($0) }) {
            throw BenchError.usage("\(option): does not apply to \(command), which takes \(accepted.sorted().joined(separator: ", "))")
        }
    }

    /// A checking subcommand's end: its table written to `file` in
    /// `folder` (made under --output before the work, so that an unwritable
    /// one stops it first), its summary printed, and exit 1 when any of
    /// its harvests failed a check.
    func finishCheck(in folder: RunFolder, table: CSVTable, file: String, summary: String, violations: Int, messages: [String] = []) throws {
        try AtomicFile.write(table.text, to: folder.path + "/" + file)
        print(summary)
        print("\ncsv: \(folder.path)/\(file)")
        guard violations == 0 else {
            print("\nVIOLATIONS: \(violations) checks failed")
            for message in messages { print("  \(message)") }
            throw ExitCode(1)
        }
    }

    var sweepOptionsGiven: [String] {
        var given: [String] = []
        if quick { given.append("--quick") }
        if slotPages != nil { given.append("--slot-pages") }
        if vmPages != nil { given.append("--vm-pages") }
        if paging != nil { given.append("--paging") }
        if mappings != nil { given.append("--mappings") }
        if pattern != nil { given.append("--pattern") }
        if scenario != nil { given.append("--scenario") }
        if dirty != nil { given.append("--dirty") }
        if clusterPages != nil { given.append("--cluster-pages") }
        if zipfSkew != nil { given.append("--zipf-skew") }
        if rounds != nil { given.append("--rounds") }
        if faultPath != nil { given.append("--fault-path") }
        if vcpuThreads != nil { given.append("--vcpu-threads") }
        if guestWSS != nil { given.append("--guest-wss") }
        if guestCPU != nil { given.append("--guest-cpu") }
        if exitCost != nil { given.append("--exit-cost") }
        if ipiCost != nil { given.append("--ipi-cost") }
        given += lifecycleOptionsGiven
        return given
    }

    /// The lifecycle scenario's own options that were given.
    var lifecycleOptionsGiven: [String] {
        var given: [String] = []
        if vcpuMemory != nil { given.append("--vcpu-memory") }
        if backing != nil { given.append("--backing") }
        if iterations != nil { given.append("--iterations") }
        if access != nil { given.append("--access") }
        if writePercent != nil { given.append("--write-percent") }
        if manualProtect { given.append("--manual-protect") }
        if !vcpusRunDuringDisable { given.append("--no-vcpus-run-during-disable") }
        if enablePolicy != nil { given.append("--enable-policy") }
        if disablePolicy != nil { given.append("--disable-policy") }
        return given
    }

    /// The plan these options ask for, every value checked before anything
    /// large is allocated: a one-line `BenchError.usage` names the option.
    func plan(memoryAvailable: Int) throws -> RunPlan {
        let slots = try (slotPages?.values ?? (quick ? SweepDefaults.quickSlotPages : SweepDefaults.slotPages))
            .map { try Check.pages($0, "--slot-pages", SweepLimits.slotPages) }
        let vm = try vmPages.map { try Check.pages($0, "--vm-pages", SweepLimits.slotPages) }
        if let vm, let big = slots.max(), vm < big {
            throw BenchError.usage("--vm-pages: \(vm) pages is smaller than the slot (\(big) pages); accepted: \(big) to \(SweepLimits.slotPages.upperBound) pages")
        }
        let k = try mappings.map { try Check.int($0, "--mappings", SweepLimits.mappings) } ?? SweepDefaults.mappings
        let pagings = (paging?.values ?? SweepDefaults.pagings).map { $0.paging(mappings: k) }
        // --quick: the even pattern only, unless asked otherwise.
        let patterns = pattern?.values ?? (quick ? [.even] : SweepDefaults.patterns)
        let smallest = slots.min()!
        let counts = try dirty.map {
            CountPlan.explicit(try $0.values.map { try Check.int($0, "--dirty", 1...smallest, unit: "dirty pages (at most the slot's \(smallest) pages)") })
        } ?? .thresholdSweep(.full)
        var patternParameters = PatternParameters()
        patternParameters.clusterPages = try clusterPages.map { try Check.int($0, "--cluster-pages", SweepLimits.clusterPages) } ?? patternParameters.clusterPages
        patternParameters.zipfSkew = try zipfSkew.map { v -> Double in
            guard v >= 0, v <= 4 else { throw BenchError.usage("--zipf-skew: \(v) is out of range; accepted: 0 to 4") }
            return v
        } ?? patternParameters.zipfSkew
        let migrationRounds = try rounds.map { try Check.int($0, "--rounds", SweepLimits.rounds) } ?? 10
        let curatedDefault = !quick && slotPages == nil && pattern == nil && scenario == nil
        let scenarios = scenario?.values ?? (curatedDefault ? [.threshold, .migration, .concurrent, .lifecycle] : [.threshold])
        if scenarios == [.lifecycle], slotPages != nil {
            throw BenchError.usage("--slot-pages: the lifecycle's guest is --vcpu-threads times --vcpu-memory; give --vcpu-memory")
        }
        let strategies = measurement.strategies
        let threads = try vcpuThreads.map { try Check.int($0, "--vcpu-threads", SweepLimits.vcpuThreads) } ?? 1
        let wss = try guestWSS.map { try $0.values.map { try Check.pages($0, "--guest-wss", SweepLimits.guestWorkingSetPages) * 4096 } }
        let exitNs = try exitCost.map { try Check.nanoseconds($0, "--exit-cost") }
        let ipiNs = try ipiCost.map { try Check.nanoseconds($0, "--ipi-cost") }
        if !scenarios.contains(.concurrent), let given = [faultPath.map { _ in "--fault-path" }, guestWSS.map { _ in "--guest-wss" },
                                                           guestCPU.map { _ in "--guest-cpu" }].compactMap({ $0 }).first {
            throw BenchError.usage("\(given): applies to --scenario concurrent only")
        }
        if !scenarios.contains(.concurrent) && !scenarios.contains(.lifecycle),
           let given = [vcpuThreads.map { _ in "--vcpu-threads" }, exitCost.map { _ in "--exit-cost" }, ipiCost.map { _ in "--ipi-cost" }]
            .compactMap({ $0 }).first {
            throw BenchError.usage("\(given): applies to --scenario concurrent and lifecycle only")
        }
        if !scenarios.contains(.lifecycle), let given = lifecycleOptionsGiven.first {
            throw BenchError.usage("\(given): applies to --scenario lifecycle only")
        }
        let lifecycle = try lifecycleSeries(scenarios: scenarios, pagings: pagings, threads: threads, curatedDefault: curatedDefault)

        // The default run: every paging mode and pattern on the 1 GiB slot, and
        // dirty-log-perf's evenly spaced pages on the 16 GiB one, whose random
        // pattern would double the run's time (`--pattern random` adds it).
        var series: [ModelSeriesSpec] = []
        if scenarios.contains(.threshold) {
            for slot in slots {
                for p in pagings {
                    for pat in patterns where !(curatedDefault && slot > SweepDefaults.randomPatternMaxSlotPages && pat == .random) {
                        if let d = dirty, pat == .onePerTable, d.values.contains(where: { $0 > pat.maxCount(slotPages: slot) }) {
                            throw BenchError.usage("--dirty: \(d.defaultValueDescription) has counts above \(pat.maxCount(slotPages: slot)), the most one-per-table can dirty in a slot of \(slot) pages")
                        }
                        let layout = VMLayout(paging: p, slotPages: slot, vmPages: max(vm ?? slot, slot))
                        var c = counts
                        if case .thresholdSweep = counts {
                            c = .thresholdSweep(quick ? .quick : slot > SweepDefaults.fullDensityMaxSlotPages ? .large : .full)
                        }
                        series.append(ModelSeriesSpec(scenario: .threshold, layout: layout, pattern: pat, counts: c, strategies: strategies))
                    }
                }
            }
        }
        if scenarios.contains(.migration) {
            for slot in slots where !(curatedDefault && slot > SweepDefaults.migrationMaxSlotPages) {
                for p in pagings {
                    let layout = VMLayout(paging: p, slotPages: slot, vmPages: max(vm ?? slot, slot))
                    series.append(ModelSeriesSpec(scenario: .migration, layout: layout, pattern: .hotSet, counts: .migration, strategies: strategies))
                }
            }
        }
        var notes: [String] = []
        if scenarios.contains(.concurrent) {
            // Both ends of the sweep and its middle, each fault path, evenly
            // spaced pages unless asked otherwise; the strategies whose
            // harvests race or stall the guest unless named. No fast fault
            // under shadow paging, whose sptes are indirect: a fast series
            // there would be the locked one again. The cache pollution once
            // per layout, with the first series of it.
            let guestStrategies = measurement.strategy == nil ? Strategy.concurrentDefaults : strategies
            let paths = faultPath?.values ?? FaultPath.allCases.sorted()
            if paths.contains(.fast), pagings.contains(where: { $0 != .tdp }) {
                guard pagings.contains(.tdp) || paths.contains(.locked) else {
                    throw BenchError.usage("--fault-path: fast runs under --paging tdp only: c7ba5b48's fast page fault fixes direct sptes only, and shadow paging's are indirect")
                }
                notes.append("concurrent: no fast-fault series under shadow paging: c7ba5b48's fast page fault fixes direct sptes only (fast_pf_fix_direct_spte()), and shadow paging's are indirect")
            }
            for slot in slots {
                for p in pagings {
                    for pat in (pattern?.values ?? [.even]) {
                        let layout = VMLayout(paging: p, slotPages: slot, vmPages: max(vm ?? slot, slot))
                        for (i, path) in paths.filter({ $0 == .locked || p == .tdp }).enumerated() {
                            series.append(ModelSeriesSpec(scenario: .concurrent, layout: layout, pattern: pat,
                                                          counts: dirty == nil ? .guestSweep : counts, strategies: guestStrategies,
                                                          faultPath: path, measuresPollution: i == 0))
                        }
                    }
                }
            }
        }
        var plan = try Planner.plan(measurement, quick: quick, series: series, lifecycle: lifecycle, counts: counts,
                                    memoryAvailable: memoryAvailable)
        plan.settings.patterns = patternParameters
        plan.settings.migrationRounds = migrationRounds
        plan.settings.guestThreads = threads
        plan.settings.vcpus = max(plan.settings.vcpus, threads)
        if let wss { plan.settings.pollutionWorkingSets = wss }
        if let cpus = guestCPU?.values { plan.settings.guestCPUs = cpus }
        plan.settings.exitCostNs = exitNs
        plan.settings.ipiCostNs = ipiNs
        plan.notes += notes
        return plan
    }
}

extension Bench {
    /// The lifecycle series the options ask for: per paging mode, backing
    /// and vCPU memory size, every enable policy asked for. The default
    /// run's: 1 GiB of 2 MiB pages, one vCPU, both paging modes.
    func lifecycleSeries(scenarios: [ScenarioChoice], pagings: [Paging], threads: Int, curatedDefault: Bool) throws -> [LifecycleSpec] {
        guard scenarios.contains(.lifecycle) else { return [] }
        let sizes = try (vcpuMemory?.values ?? [PageCount(1 << 18)]).map { try Check.pages($0, "--vcpu-memory", SweepLimits.vcpuMemoryPages) }
        if let bad = sizes.first(where: { $0 % 512 != 0 }) {
            throw BenchError.usage("--vcpu-memory: \(bad) pages is not a whole number of 2 MiB regions; accepted: multiples of 512 pages (2MiB)")
        }
        let iterations = try self.iterations.map { try Check.int($0, "--iterations", SweepLimits.iterations) } ?? 2
        let writePercent = try self.writePercent.map { try Check.int($0, "--write-percent", 0...100, unit: "percent") } ?? 100
        let policies = enablePolicy?.values ?? EnablePolicy.allCases
        if let d = disablePolicy?.values {
            let possible = Set(pagings.flatMap { p in policies.flatMap { DisablePolicy.policies(for: $0, paging: p.mode) } })
            if let none = d.first(where: { !possible.contains($0) }) {
                throw BenchError.usage("--disable-policy: \(none.rawValue) is no kernel's of the enable policies given ("
                    + policies.map(\.rawValue).joined(separator: ", ") + "); accepted here: "
                    + DisablePolicy.allCases.filter(possible.contains).map(\.rawValue).joined(separator: ", "))
            }
        }
        if pagings.allSatisfy({ p in policies.allSatisfy { $0.era(paging: p.mode) == nil } }) {
            throw BenchError.usage("--enable-policy: " + policies.map(\.rawValue).joined(separator: ", ")
                + " run under --paging tdp only: eager page splitting is the TDP MMU's")
        }
        var out: [LifecycleSpec] = []
        for size in sizes {
            for p in pagings {
                for b in backing?.values ?? [.page2M] {
                    out.append(LifecycleSpec(paging: p, pagesPerVCPU: size, vcpus: threads, backing: b, iterations: iterations,
                                             policies: policies, disablePolicies: disablePolicy?.values, manualProtect: manualProtect,
                                             randomAccess: access == .random, writePercent: writePercent,
                                             vcpusRunDuringDisable: vcpusRunDuringDisable))
                }
            }
        }
        return out
    }
}

/// kvm-unit-tests' api/dirty-log-perf: a slot of `-n` pages in a VM of `-m`,
/// 1, 2, 4, ... dirty pages evenly spaced, on the model and the kernel side
/// by side.
struct DirtyLogPerf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dirty-log-perf",
        abstract: "kvm-unit-tests' dirty-log-perf on the model and the kernel, side by side.",
        discussion: """
        The experiment of the seed's author (kvm-unit-tests api/dirty-log-perf.cc): a \
        slot of -n pages (default 262144, 1 GiB) in a VM of -m pages, every page \
        written once, dirty logging on; then for 1, 2, 4, ... up to the slot, that \
        many pages evenly spaced are written and one GET_DIRTY_LOG is timed. Under \
        two-dimensional paging on the model, and on the kernel where /dev/kvm opens; \
        prints the medians side by side. Takes the run's measurement options (--reps, \
        --cache, --seed, --output, --backend, --strategy, ...: see bench --help); the \
        sweep's own (--slot-pages, --paging, --pattern, ...) do not apply.
        """
    )

    /// The run's options, the measurement ones shared with it.
    @ParentCommand var bench: Bench
    var measurement: MeasurementOptions { bench.measurement }

    @Option(name: .customShort("n"), help: ArgumentHelp("The slot, as a page count or a size (dirty-log-perf's -n).", valueName: "size"))
    var slotPages = PageCount(1 << 18)

    @Option(name: .customShort("m"), help: ArgumentHelp("All guest memory, the rest in a second slot (dirty-log-perf's -m). (default: the slot)", valueName: "size"))
    var vmPages: PageCount?

    func run() throws {
        try RunCommand.execute(try plan(memoryAvailable: SystemMemory.availableBytes), sideBySide: .dirtyLogPerf)
    }

    func plan(memoryAvailable: Int) throws -> RunPlan {
        if let sweep = bench.sweepOptionsGiven.first {
            throw BenchError.usage("\(sweep): does not apply to dirty-log-perf, whose slot is -n and -m and pattern even")
        }
        let slot = try Check.pages(slotPages, "-n", SweepLimits.slotPages)
        let vm = try vmPages.map { try Check.pages($0, "-m", slot...SweepLimits.slotPages.upperBound) } ?? slot
        let layout = VMLayout(paging: .tdp, slotPages: slot, vmPages: vm)
        let series = [ModelSeriesSpec(scenario: .dirtyLogPerf, layout: layout, pattern: .even, counts: .powersOfTwo, strategies: measurement.strategies)]
        return try Planner.plan(measurement, quick: false, series: series, counts: .powersOfTwo, memoryAvailable: memoryAvailable)
    }
}

/// Runs a plan and prints what it found; the exit status says how it went.
enum RunCommand {
    /// `lifecycleLines`: print dirty_log_perf_test's lines of every
    /// lifecycle (a lifecycle-only run); else they are in lifecycle.txt.
    static func execute(_ plan: RunPlan, sideBySide: Scenario? = nil, lifecycleLines: Bool = false) throws {
        let outcome = try BenchRun(plan: plan).run()
        let results = outcome.results
        if let s = sideBySide {
            print(Reports.sideBySide(results.rows, scenario: s))
            print("")
        }
        if lifecycleLines {
            print((Reports.lifecycleLines(results.lifecycle) + Reports.kernelLifecycleLines(results.kernelLifecycle)).joined(separator: "\n"))
        }
        let summary = Reports.terminal(results)
        if !summary.isEmpty { print(summary) }
        for n in results.notes { print("\n" + Reports.wrap(n)) }
        print("")
        let bad = results.unverifiedRows, badPollution = results.unverifiedPollution
        let dir = outcome.folder.path
        if !results.rows.isEmpty || results.lifecycle.isEmpty {
            print("points:    \(dir)/points.csv (\(results.rows.count) rows, " + (bad.isEmpty ? "all verified)" : "\(bad.count) NOT verified)"))
        }
        if !results.pollution.isEmpty {
            print("pollution: \(dir)/pollution.csv (\(results.pollution.count) rows, "
                + (badPollution.isEmpty ? "all verified)" : "\(badPollution.count) NOT verified)"))
        }
        if !results.kernelLifecycle.isEmpty { print("kvm:       \(dir)/lifecycle-kvm.csv (\(results.kernelLifecycle.count) phases)") }
        if !results.lifecycle.isEmpty {
            let badLife = results.unverifiedLifecycle
            print("lifecycle: \(dir)/lifecycle.csv (\(results.lifecycle.count) phases, "
                + (badLife.isEmpty ? "all verified), lifecycle.txt" : "\(badLife.count) NOT verified), lifecycle.txt"))
        }
        if !results.crossover.isEmpty { print("crossover: \(dir)/crossover.csv") }
        print("report:    \(dir)/report.md")
        if !results.skipped.isEmpty { print("skipped:   \(dir)/skipped.csv (\(results.skipped.count) entries)") }
        print(String(format: "wall time: %.1f s", outcome.seconds))
        if !results.allVerified {
            let badLife = results.unverifiedLifecycle
            print("\nVIOLATIONS: \(results.violations) in \(bad.count + badPollution.count + badLife.count) rows")
            for r in badLife.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.lifecycleLabel) \(r.phase.rawValue): \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
            for r in bad.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.strategy.name) at \(r.dirtyPages) dirty pages: \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
            for r in badPollution.prefix(10) {
                print(Reports.wrap("  \(r.series.label), \(r.strategy.rawValue) pollution pairs: \(r.violationCount): "
                    + (r.violations.first ?? ""), indent: "    "))
            }
        }
        if let i = outcome.interrupted {
            print("\n" + Reports.wrap("INTERRUPTED by \(i.signal) during \(i.during): the files above hold every point finished before it"))
            throw ExitCode(i.signal == "SIGTERM" ? 143 : 130)
        }
        if !results.allVerified { throw ExitCode(1) }
    }
}
