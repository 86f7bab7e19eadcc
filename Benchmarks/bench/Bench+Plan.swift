import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import ShadowMMU

/// From the options to a plan: which options were given, every value
/// checked before anything large is allocated.
extension Bench {
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
        if pagings.allSatisfy({ p in policies.allSatisfy { $0.kernels(paging: p.mode).isEmpty } }) {
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
