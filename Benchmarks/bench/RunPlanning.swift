import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import ShadowMMU

/// What the default run sweeps, and what `--quick` changes.
enum SweepDefaults {
    static let slotPages = [PageCount(1 << 18), PageCount(1 << 22)]
    static let quickSlotPages = [PageCount(1 << 14)]
    static let pagings: [PagingChoice] = [.tdp, .shadow]
    static let mappings = 2
    static let patterns: [DirtyPattern] = [.even, .random]
    /// In the default run, slots above this get only the even pattern.
    static let randomPatternMaxSlotPages = 1 << 18
    /// Slots up to this are swept at full density; larger ones with coarse
    /// points every two octaves.
    static let fullDensityMaxSlotPages = 1 << 18
    /// In the default run, the migration scenario runs on slots up to this.
    static let migrationMaxSlotPages = 1 << 18
}

/// Bounds the sweep's options accept.
enum SweepLimits {
    /// Slot sizes: 1 page to 1 TiB (the shadow-paging layout indexes pages in 32 bits).
    static let slotPages = 1...(1 << 28)
    static let mappings = 1...16
    static let clusterPages = 1...(1 << 20)
    static let rounds = 1...64
    static let vcpuThreads = 1...16
    static let guestWorkingSetPages = 1...(1 << 18)
    /// The lifecycle's memory per vCPU: 2 MiB to 64 GiB.
    static let vcpuMemoryPages = 512...(1 << 24)
    static let iterations = 1...100
}

/// Turns checked options into a plan.
enum Planner {
    /// The kernel beside every model series but the migration and
    /// concurrent ones: the
    /// same slot and VM size and pattern, at every `coarseOctaves`-th power
    /// of two (or at the listed counts).
    static func kernelSeries(beside series: [ModelSeriesSpec], counts: CountPlan) -> [KernelSeriesSpec] {
        var kernel: [KernelSeriesSpec] = []
        for s in series where s.counts != .migration && s.scenario != .concurrent {
            let cap = s.pattern.maxCount(slotPages: s.layout.slotPages)
            let c = counts.isSweep ? SweepPlan.powersOfTwo(slotPages: s.layout.slotPages, octaves: s.counts.coarseOctaves)
                : counts.counts(slotPages: s.layout.slotPages, nUsedMMUPages: 0)
            let k = KernelSeriesSpec(scenario: s.scenario, slotPages: s.layout.slotPages, vmPages: s.layout.vmPages, pattern: s.pattern,
                                     counts: c.filter { $0 <= cap })
            if !kernel.contains(k) { kernel.append(k) }
        }
        return kernel
    }

    /// Refuses a plan whose largest series would not fit in 90% of the memory available.
    static func checkMemory(_ plan: RunPlan, available: Int) throws {
        let need = plan.peakMemoryBytes
        guard need > available / 10 * 9 else { return }
        if let l = plan.lifecycleSeries.max(by: { $0.estimatedBytes < $1.estimatedBytes }), l.estimatedBytes == need {
            throw BenchError.usage("--vcpu-memory: a \(Bytes.pages(l.slotPages)) lifecycle guest under \(l.paging) needs about "
                + "\(Bytes.format(need)) of memory; this machine has \(Bytes.format(available)) available")
        }
        let worst = plan.modelSeries.max { $0.layout.estimatedBytes() < $1.layout.estimatedBytes() }!
        let option = worst.layout.vmPages > worst.layout.slotPages ? "--vm-pages" : "--slot-pages"
        throw BenchError.usage("\(option): a \(Bytes.pages(worst.layout.vmPages)) VM under \(worst.layout.paging) needs about "
            + "\(Bytes.format(need)) of memory; this machine has \(Bytes.format(available)) available")
    }

    /// The plan of measurement options, model series and kernel series.
    static func plan(_ m: MeasurementOptions, quick: Bool, series: [ModelSeriesSpec], lifecycle: [LifecycleSpec] = [], counts: CountPlan,
                     memoryAvailable: Int) throws -> RunPlan {
        let (settings, kernelSettings) = try m.settings(quick: quick)
        let backend = m.backend ?? .both
        let series = series.map { s -> ModelSeriesSpec in
            var s = s
            s.layout.seed = settings.seed
            return s
        }
        var plan = try RunPlan(modelSeries: backend.includesModel ? series : [],
                               kernelSeries: backend.includesKernel ? kernelSeries(beside: series, counts: counts) : [],
                               settings: settings, kernelSettings: kernelSettings,
                               kernelRequired: m.backend != nil && backend.includesKernel,
                               outputDirectory: m.output, quiet: m.quiet, verbose: m.verbose).plantingBugFromEnvironment()
        plan.lifecycleSeries = backend.includesModel ? lifecycle : []
        // The kernel's lifecycle beside each size and backing, once: the host decides its own paging.
        if backend.includesKernel {
            for l in lifecycle where l.paging == .tdp
                && !plan.kernelLifecycleSeries.contains(where: { $0.slotPages == l.slotPages && $0.backing == l.backing }) {
                plan.kernelLifecycleSeries.append(l)
            }
        }
        plan.measuresHostExits = backend.includesKernel && series.contains { $0.scenario == .concurrent }
        try checkMemory(plan, available: memoryAvailable)
        return plan
    }
}

extension RunPlan {
    /// In debug builds, the plan with the bug `PlantedBug.environmentVariable`
    /// names planted in its harvests (see `PlantedBug`); in release builds,
    /// the plan as it is.
    func plantingBugFromEnvironment() throws -> RunPlan {
        #if DEBUG
        var plan = self
        plan.plantedBug = try PlantedBug.fromEnvironment()
        return plan
        #else
        return self
        #endif
    }
}

#if DEBUG
import Foundation

extension PlantedBug {
    /// The planted bug named by the environment, in debug builds.
    static func fromEnvironment() throws -> PlantedBug? {
        guard let name = ProcessInfo.processInfo.environment[environmentVariable] else { return nil }
        guard let bug = PlantedBug(rawValue: name) else {
            throw BenchError.usage("\(environmentVariable): unknown value '\(name)'; accepted: \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return bug
    }
}
#endif
