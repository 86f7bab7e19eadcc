import Foundation
import ShadowMMU

/// The `bench run` options as typed, before checking. `plan()` checks every
/// one against its accepted range and the machine's memory, and throws a
/// one-line `BenchError.usage` naming the option, before anything large is
/// allocated.
public struct RunOptions: Sendable {
    public var quick = false
    public var slotPages: String?
    public var vmPages: String?
    public var paging: String?
    public var mappings: String?
    public var pattern: String?
    public var strategy: String?
    public var dirty: String?
    public var reps: String?
    public var warmup: String?
    public var cache: String?
    public var seed: String?
    public var output = "results"
    public var quiet = false
    public var backend: String?
    public var kvmReps: String?
    public var kvmBudget: String?
    public var preset: String?
    public var minTime: String?
    public var scenario: String?
    public var vcpus: String?
    public var ringEntries: String?
    public var yieldEvery: String?
    public var clearChunkPages: String?
    public var clusterPages: String?
    public var zipfSkew: String?
    public var rounds: String?

    public init() {}

    /// What a series measures.
    public enum Scenario: String, CaseIterable, Sendable {
        /// Dirty counts swept around the seed's threshold, one harvest per point.
        case threshold
        /// Rounds of pre-copy migration (hot-set writes, harvest, repeat),
        /// timed as a total per strategy.
        case migration
    }

    /// Experiments with a fixed shape.
    public enum Preset: String, CaseIterable, Sendable {
        /// kvm-unit-tests' api/dirty-log-perf: a slot of 262144 pages (-n),
        /// the VM's memory (-m), 1, 2, 4, ... dirty pages evenly spaced.
        case dirtyLogPerf = "dirty-log-perf"
    }

    /// The defaults, and what `--quick` changes.
    public enum Defaults {
        public static let slotPages = "1GiB,16GiB"
        public static let quickSlotPages = "64MiB"
        public static let paging = "tdp,shadow"
        public static let mappings = 2
        public static let pattern = "even,random"
        /// In the default run, slots above this get only the even pattern.
        public static let randomPatternMaxSlotPages = 1 << 18
        public static let reps = 11
        public static let quickReps = 5
        public static let warmup = 1
        public static let seed: UInt64 = 1
        public static let dirtyLogPerfSlotPages = "262144"
        public static let kvmReps = 5
        public static let kvmBudgetSeconds = 20
        /// Slots up to this are swept at full density; larger ones with coarse
        /// points every two octaves.
        public static let fullDensityMaxSlotPages = 1 << 18
        /// In the default run, the migration scenario runs on slots up to this.
        public static let migrationMaxSlotPages = 1 << 18
    }

    /// Bounds the options accept.
    public enum Limits {
        /// Slot sizes: 1 page to 1 TiB (the shadow-paging layout indexes pages in 32 bits).
        public static let slotPages = 1...(1 << 28)
        public static let mappings = 1...16
        public static let reps = 1...1000
        public static let warmup = 0...100
        public static let kvmBudgetSeconds = 1...86400
        public static let vcpus = 1...64
        public static let ringEntries = 128...(1 << 20)
        public static let yieldEvery = 1...(1 << 30)
        public static let clearChunkPages = 64...(1 << 28)
        public static let clusterPages = 1...(1 << 20)
        public static let rounds = 1...64
    }

    public func plan(memoryAvailable: Int = SystemMemory.availableBytes) throws -> RunPlan {
        let preset = try preset.map { try Parse.choice($0, option: "--preset", of: Preset.self) }
        let backend = try backend.map { try Parse.choice($0, option: "--backend", of: Backend.self) } ?? .both
        let defaultSlots = preset == .dirtyLogPerf ? Defaults.dirtyLogPerfSlotPages : quick ? Defaults.quickSlotPages : Defaults.slotPages
        let slots = try Parse.list(slotPages ?? defaultSlots, option: "--slot-pages") {
            try Parse.pages($0, option: "--slot-pages", range: Limits.slotPages)
        }
        let vm = try vmPages.map { try Parse.pages($0, option: "--vm-pages", range: Limits.slotPages) }
        if let vm, let big = slots.max(), vm < big {
            throw BenchError.usage("--vm-pages: \(vm) pages is smaller than the slot (\(big) pages); accepted: \(big) to \(Limits.slotPages.upperBound) pages")
        }
        let k = try mappings.map { try Parse.int($0, option: "--mappings", range: Limits.mappings) } ?? Defaults.mappings
        let pagings = try Parse.list(paging ?? (preset == .dirtyLogPerf ? "tdp" : Defaults.paging), option: "--paging") { name -> Paging in
            switch name {
            case "tdp": return .tdp
            case "shadow": return .shadow(mappings: k)
            default: throw BenchError.usage("--paging: unknown paging mode '\(name)'; accepted: tdp, shadow")
            }
        }
        // --quick and dirty-log-perf: the even pattern only, unless asked otherwise.
        let patterns = try Parse.list(pattern ?? (preset == .dirtyLogPerf || quick ? "even" : Defaults.pattern), option: "--pattern") {
            try Parse.choice($0, option: "--pattern", of: DirtyPattern.self)
        }
        let strategies = try strategy.map {
            try Parse.list($0, option: "--strategy") { try Parse.choice($0, option: "--strategy", of: Strategy.self) }
        } ?? Strategy.allCases
        let smallest = slots.min()!
        let counts = try dirty.map {
            CountPlan.explicit(try Parse.list($0, option: "--dirty") {
                try Parse.int($0, option: "--dirty", range: 1...smallest, unit: "dirty pages (at most the slot's \(smallest) pages)")
            })
        } ?? (preset == .dirtyLogPerf ? .powersOfTwo : .thresholdSweep(.full))
        var settings = MeasureSettings(
            reps: try reps.map { try Parse.int($0, option: "--reps", range: Limits.reps) } ?? (quick ? Defaults.quickReps : Defaults.reps),
            warmup: try warmup.map { try Parse.int($0, option: "--warmup", range: Limits.warmup) } ?? Defaults.warmup,
            cache: try cache.map { try Parse.choice($0, option: "--cache", of: CacheMode.self) } ?? .cold,
            seed: try seed.map { try Parse.seed($0, option: "--seed") } ?? Defaults.seed,
            minTimeNs: try minTime.map { try Parse.duration($0, option: "--min-time", max: 60) } ?? 0
        )
        guard !output.isEmpty else { throw BenchError.usage("--output: empty path; give a directory") }
        let kernelSettings = KernelSettings(
            reps: try kvmReps.map { try Parse.int($0, option: "--kvm-reps", range: Limits.reps) } ?? Defaults.kvmReps,
            warmup: settings.warmup,
            budgetSeconds: Double(try kvmBudget.map { try Parse.int($0, option: "--kvm-budget", range: Limits.kvmBudgetSeconds, unit: "seconds") }
                ?? Defaults.kvmBudgetSeconds)
        )
        let scenarioName = preset?.rawValue ?? Scenario.threshold.rawValue
        let curatedDefault = !quick && preset == nil && slotPages == nil && pattern == nil && scenario == nil
        let scenarios = try scenario.map { try Parse.list($0, option: "--scenario") { try Parse.choice($0, option: "--scenario", of: Scenario.self) } }
            ?? (curatedDefault ? [.threshold, .migration] : [.threshold])
        guard preset == nil || scenario == nil else {
            throw BenchError.usage("--scenario: a --preset fixes its own scenario; give one or the other")
        }
        settings.vcpus = try vcpus.map { try Parse.int($0, option: "--vcpus", range: Limits.vcpus) } ?? settings.vcpus
        settings.ringEntries = try ringEntries.map {
            let v = try Parse.int($0, option: "--ring-entries", range: Limits.ringEntries, unit: "entries, a power of two")
            guard v & (v - 1) == 0 else { throw BenchError.usage("--ring-entries: \(v) is not a power of two; accepted: 128 to 1048576 entries, a power of two") }
            return v
        } ?? settings.ringEntries
        settings.yieldEveryGFNs = try yieldEvery.map { try Parse.int($0, option: "--yield-every", range: Limits.yieldEvery, unit: "gfns") } ?? settings.yieldEveryGFNs
        settings.clearChunkPages = try clearChunkPages.map {
            let v = try Parse.pages($0, option: "--clear-chunk-pages", range: Limits.clearChunkPages)
            guard v % 64 == 0 else { throw BenchError.usage("--clear-chunk-pages: \(v) pages is not a multiple of 64; accepted: 64 to 268435456 pages, a multiple of 64") }
            return v
        } ?? settings.clearChunkPages
        settings.patterns.clusterPages = try clusterPages.map { try Parse.int($0, option: "--cluster-pages", range: Limits.clusterPages) } ?? settings.patterns.clusterPages
        settings.patterns.zipfSkew = try zipfSkew.map { text -> Double in
            guard let v = Double(text), v >= 0, v <= 4 else { throw BenchError.usage("--zipf-skew: '\(text)' is out of range; accepted: 0 to 4") }
            return v
        } ?? settings.patterns.zipfSkew
        settings.migrationRounds = try rounds.map { try Parse.int($0, option: "--rounds", range: Limits.rounds) } ?? settings.migrationRounds

        // The default run: every paging mode and pattern on the 1 GiB slot, and
        // dirty-log-perf's evenly spaced pages on the 16 GiB one, whose random
        // pattern would double the run's time (`--pattern random` adds it).
        var series: [ModelSeriesSpec] = []
        if scenarios.contains(.threshold) {
            for slot in slots {
                for p in pagings {
                    for pat in patterns where !(curatedDefault && slot > Defaults.randomPatternMaxSlotPages && pat == .random) {
                        if let d = dirty, pat == .onePerTable, counts.counts(slotPages: slot, nUsedMMUPages: 0).contains(where: { $0 > pat.maxCount(slotPages: slot) }) {
                            throw BenchError.usage("--dirty: \(d) has counts above \(pat.maxCount(slotPages: slot)), the most one-per-table can dirty in a slot of \(slot) pages")
                        }
                        let layout = VMLayout(paging: p, slotPages: slot, vmPages: max(vm ?? slot, slot), seed: settings.seed)
                        var c = counts
                        if case .thresholdSweep = counts {
                            c = .thresholdSweep(quick ? .quick : slot > Defaults.fullDensityMaxSlotPages ? .large : .full)
                        }
                        series.append(ModelSeriesSpec(scenario: scenarioName, layout: layout, pattern: pat, counts: c, strategies: strategies))
                    }
                }
            }
        }
        if scenarios.contains(.migration) {
            for slot in slots where !(curatedDefault && slot > Defaults.migrationMaxSlotPages) {
                for p in pagings {
                    let layout = VMLayout(paging: p, slotPages: slot, vmPages: max(vm ?? slot, slot), seed: settings.seed)
                    series.append(ModelSeriesSpec(scenario: Scenario.migration.rawValue, layout: layout, pattern: .hotSet,
                                                  counts: .migration, strategies: strategies))
                }
            }
        }
        // The kernel beside every slot size, VM size and pattern the model sweeps.
        var kernel: [KernelSeriesSpec] = []
        if backend.includesKernel {
            for s in series where s.counts != .migration {
                let cap = s.pattern.maxCount(slotPages: s.layout.slotPages)
                let k = KernelSeriesSpec(scenario: scenarioName, slotPages: s.layout.slotPages, vmPages: s.layout.vmPages, pattern: s.pattern,
                                         counts: (counts.isSweep ? SweepPlan.powersOfTwo(slotPages: s.layout.slotPages, octaves: s.counts.coarseOctaves)
                                             : counts.counts(slotPages: s.layout.slotPages, nUsedMMUPages: 0)).filter { $0 <= cap })
                if !kernel.contains(k) { kernel.append(k) }
            }
        }
        let plan = RunPlan(modelSeries: backend.includesModel ? series : [], kernelSeries: kernel, settings: settings,
                           kernelSettings: kernelSettings, kernelRequired: self.backend != nil && backend.includesKernel,
                           outputDirectory: output, quiet: quiet)
        try Self.checkMemory(plan, available: memoryAvailable)
        return plan
    }

    /// Refuses a plan whose largest series would not fit in 90% of the memory available.
    static func checkMemory(_ plan: RunPlan, available: Int) throws {
        let need = plan.peakMemoryBytes
        guard need > available / 10 * 9 else { return }
        let worst = plan.modelSeries.max { $0.layout.estimatedBytes() < $1.layout.estimatedBytes() }!
        let option = worst.layout.vmPages > worst.layout.slotPages ? "--vm-pages" : "--slot-pages"
        throw BenchError.usage("\(option): a \(Bytes.pages(worst.layout.vmPages)) VM under \(worst.layout.paging) needs about "
            + "\(Bytes.format(need)) of memory; this machine has \(Bytes.format(available)) available")
    }
}

/// Parsers for option values, each failing with a one-line usage error
/// naming the option and what it accepts.
public enum Parse {
    public static func list<T>(_ text: String, option: String, _ element: (String) throws -> T) throws -> [T] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw BenchError.usage("\(option): empty value in '\(text)'; give a comma-separated list")
        }
        return try parts.map(element)
    }

    public static func int(_ text: String, option: String, range: ClosedRange<Int>, unit: String = "") throws -> Int {
        let accepted = "accepted: \(range.lowerBound) to \(range.upperBound)" + (unit.isEmpty ? "" : " \(unit)")
        guard let v = Int(text) else { throw BenchError.usage("\(option): '\(text)' is not a whole number; \(accepted)") }
        guard range.contains(v) else { throw BenchError.usage("\(option): \(v) is out of range; \(accepted)") }
        return v
    }

    /// A duration in seconds ("0.5", "0.5s") or milliseconds ("50ms"), from 0 to `max` seconds, as nanoseconds.
    public static func duration(_ text: String, option: String, max: Double) throws -> UInt64 {
        let accepted = "accepted: 0 to \(Int(max)) seconds, such as 0.5, 0.5s or 50ms"
        var number = Substring(text)
        var scale = 1e9
        if number.hasSuffix("ms") { number = number.dropLast(2); scale = 1e6 } else if number.hasSuffix("s") { number = number.dropLast() }
        guard let v = Double(number), v.isFinite else { throw BenchError.usage("\(option): '\(text)' is not a duration; \(accepted)") }
        let ns = v * scale
        guard ns >= 0, ns <= max * 1e9 else { throw BenchError.usage("\(option): \(text) is out of range; \(accepted)") }
        return UInt64(ns)
    }

    public static func seed(_ text: String, option: String) throws -> UInt64 {
        guard let v = UInt64(text) else { throw BenchError.usage("\(option): '\(text)' is not a whole number; accepted: 0 to \(UInt64.max)") }
        return v
    }

    /// A page count ("262144") or a size in bytes with a binary unit
    /// ("1GiB", "512M", "64KiB"), which must be a whole number of 4 KiB pages.
    public static func pages(_ text: String, option: String, range: ClosedRange<Int>) throws -> Int {
        let accepted = "accepted: \(range.lowerBound) to \(range.upperBound) pages (\(Bytes.pages(range.lowerBound)) to \(Bytes.pages(range.upperBound))), as a page count or a size such as 1GiB"
        let units: [(String, Int)] = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40), ("K", 10), ("M", 20), ("G", 30), ("T", 40)]
        var pages: Int?
        if let v = Int(text) {
            pages = v
        } else if let (suffix, shift) = units.first(where: { text.uppercased().hasSuffix($0.0.uppercased()) }),
                  let v = Int(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)) {
            guard v <= (Int.max >> (shift + 1)) else { throw BenchError.usage("\(option): \(text) is out of range; \(accepted)") }
            let bytes = v << shift
            guard bytes % 4096 == 0 else { throw BenchError.usage("\(option): \(text) is not a whole number of 4KiB pages; \(accepted)") }
            pages = bytes / 4096
        }
        guard let p = pages else { throw BenchError.usage("\(option): '\(text)' is not a page count or a size; \(accepted)") }
        guard range.contains(p) else { throw BenchError.usage("\(option): \(text) is out of range; \(accepted)") }
        return p
    }

    public static func choice<T: RawRepresentable & CaseIterable>(_ text: String, option: String, of: T.Type) throws -> T where T.RawValue == String {
        guard let v = T(rawValue: text) else {
            throw BenchError.usage("\(option): unknown value '\(text)'; accepted: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return v
    }
}

/// The machine's memory, from /proc/meminfo.
public enum SystemMemory {
    /// MemAvailable in bytes (MemFree when the kernel does not report it).
    public static var availableBytes: Int {
        guard let text = readSmallFile("/proc/meminfo") else { return 0 }
        var free = 0
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let kb = Int(f[1]) else { continue }
            if f[0] == "MemAvailable:" { return kb * 1024 }
            if f[0] == "MemFree:" { free = kb * 1024 }
        }
        return free
    }

    public static var totalBytes: Int {
        guard let text = readSmallFile("/proc/meminfo") else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count >= 2, let kb = Int(f[1]) { return kb * 1024 }
        }
        return 0
    }
}
