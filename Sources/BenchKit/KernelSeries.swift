import CAtomics
import Foundation
import HostKVM
import ShadowMMU

/// How much the kernel backend may spend.
public struct KernelSettings: Sendable, Hashable {
    /// Timed repetitions per point and strategy. Fewer than the model's by
    /// default: each costs a round of guest writes, which are slow here.
    public var reps = 5
    public var warmup = 1
    /// Wall-clock seconds one kernel series may take; points whose guest
    /// writes would exceed it are skipped, and said to be.
    public var budgetSeconds = 20.0
    public var strategies: [KernelStrategy] = KernelStrategy.allCases

    public init(reps: Int = 5, warmup: Int = 1, budgetSeconds: Double = 20, strategies: [KernelStrategy] = KernelStrategy.allCases) {
        self.reps = reps
        self.warmup = warmup
        self.budgetSeconds = budgetSeconds
        self.strategies = strategies
    }
}

/// One series on the real kernel.
public struct KernelSeriesSpec: Sendable, Hashable {
    public var scenario: String
    public var slotPages: Int
    public var vmPages: Int
    public var pattern: DirtyPattern
    /// Candidate dirty counts, ascending; the budget may cut the top.
    public var counts: [Int]

    public init(scenario: String, slotPages: Int, vmPages: Int, pattern: DirtyPattern, counts: [Int]) {
        self.scenario = scenario
        self.slotPages = slotPages
        self.vmPages = vmPages
        self.pattern = pattern
        self.counts = counts
    }

    /// Kernel rows sit in the series of the model's two-dimensional-paging
    /// layout: the test guest gives the kernel one spte per gfn (no paging,
    /// or an identity map of large pages split by logging), the layout the
    /// model's `tdp` builds.
    public var key: SeriesKey {
        SeriesKey(scenario: scenario, paging: Paging.tdp.name, sptesPerGFN: 1, slotPages: slotPages, vmPages: vmPages, pattern: pattern.rawValue)
    }

    /// Host and kernel memory the series' VMs need, roughly: per VM the
    /// kernel's rmap arrays, bitmaps and host page tables for the aliased
    /// guest range, the memfd, the code slot's list.
    public func estimatedBytes(vms: Int) -> Int {
        vms * (vmPages * 32 + (8 << 20) + vmPages * 8 + (2 << 20))
    }

    /// Planned work, for progress estimates.
    public func plannedUnits(strategies: Int) -> Double {
        counts.reduce(0) { $0 + Progress.units(dirtyPages: $1 * 64, nUsedMMUPages: 0) } * Double(strategies)
    }
}

/// What a kernel series produced.
public struct KernelOutcome {
    public var rows: [PointRow] = []
    public var skipped: [SkipNote] = []
    /// For the terminal: how the guest ran and what that means.
    public var notes: [String] = []
}

/// Runs one series on the real kernel: a VM for the bitmap strategies
/// (manual protect switched on for kvm-get+clear and off for kvm-get, round
/// by round) and one with a dirty ring, both populated; then, per point and
/// repetition, each strategy in a seeded random order: the guest writes the
/// pattern's pages, caches are evicted, one harvest is timed and checked
/// against the pages written.
public final class KernelSeries {
    public let spec: KernelSeriesSpec
    public let settings: KernelSettings
    public let measure: MeasureSettings
    private let flusher: CacheFlusher?
    private let progress: Progress
    private let status: String
    private let allocations = ThreadAllocationCounter()

    public init(spec: KernelSeriesSpec, settings: KernelSettings, measure: MeasureSettings, flusher: CacheFlusher?,
                progress: Progress, status: String) {
        self.spec = spec
        self.settings = settings
        self.measure = measure
        self.flusher = measure.cache == .cold ? flusher : nil
        self.progress = progress
        self.status = status
    }

    public func run(device: KVMDevice, memoryAvailable: Int = SystemMemory.availableBytes) throws -> KernelOutcome {
        var out = KernelOutcome()
        let label = spec.key.label
        var strategies: [KernelStrategy] = []
        for s in settings.strategies {
            if let why = device.unsupported(s) {
                out.skipped.append(SkipNote(series: label, backend: "kvm", strategy: s.rawValue, reason: why))
            } else {
                strategies.append(s)
            }
        }
        guard !strategies.isEmpty else { return out }
        let needsBitmapVM = strategies.contains { !$0.usesRing }
        let needsRingVM = strategies.contains(.ring)
        let need = spec.estimatedBytes(vms: (needsBitmapVM ? 1 : 0) + (needsRingVM ? 1 : 0))
        guard need < memoryAvailable / 10 * 9 else {
            out.skipped.append(SkipNote(series: label, backend: "kvm", reason:
                "its VMs need about \(Bytes.format(need)); \(Bytes.format(memoryAvailable)) is available"))
            return out
        }

        let bitmapVM = needsBitmapVM ? try KVMGuest(device: device, slotPages: spec.slotPages, vmPages: spec.vmPages) : nil
        let ringVM = needsRingVM
            ? try KVMGuest(device: device, slotPages: spec.slotPages, vmPages: spec.vmPages, ringEntries: device.dirtyRingMaxEntries)
            : nil
        let anyVM = (bitmapVM ?? ringVM)!
        let mode = anyVM.mode.rawValue
        if anyVM.emulated {
            out.notes.append("kvm: this kernel emulates the \(mode) test guest's instructions (no 4 KiB spte after the "
                + "first writes, so populating stops there): its rmaps stay empty and its harvests protect no spte; "
                + "kernel times are the harvest's bookkeeping alone")
        }

        // Points within the budget, from the fewest dirty pages up.
        let started = MonotonicClock.now()
        let perPageNs = max(anyVM.writeNanosPerPage, 1)
        let repsTotal = Double(settings.reps + settings.warmup)
        var spent = Double(MonotonicClock.now() - started) / 1e9
        var counts: [Int] = []
        for d in spec.counts {
            let cost = repsTotal * Double(strategies.count) * (Double(d) * perPageNs + 2e5) / 1e9
            if spent + cost > settings.budgetSeconds { break }
            spent += cost
            counts.append(d)
        }
        if counts.count < spec.counts.count {
            let cut = spec.counts[counts.count...]
            out.skipped.append(SkipNote(series: label, backend: "kvm", dirtyPages: "\(cut.first!)-\(cut.last!)", reason:
                "guest writes cost \(Int(perPageNs)) ns/page here; these points would take the series past its "
                + "\(Int(settings.budgetSeconds)) s budget (--kvm-budget)"))
        }

        for (i, d) in counts.enumerated() {
            out.rows += try measure(d: d, strategies: strategies, bitmapVM: bitmapVM, ringVM: ringVM,
                                    status: "\(status) · kvm point \(i + 1)/\(counts.count) (\(d) dirty)")
        }
        return out
    }

    private func measure(d: Int, strategies: [KernelStrategy], bitmapVM: KVMGuest?, ringVM: KVMGuest?,
                         status: String) throws -> [PointRow] {
        let set = spec.pattern.dirtySet(count: d, slotPages: spec.slotPages, seed: measure.seed, parameters: measure.patterns)
        try set.pages.withUnsafeBufferPointer { p in
            try bitmapVM?.loadWriteList(p)
            try ringVM?.loadWriteList(p)
        }
        var samples = [[Double]](repeating: [], count: strategies.count)
        var extras = strategies.map { _ in KernelExtras(guestMode: (bitmapVM ?? ringVM)!.mode.rawValue) }
        var phases = strategies.map { _ in PhaseExtras() }
        var allocated = [UInt64](repeating: 0, count: strategies.count)
        var problems = [String](repeating: "", count: strategies.count)
        var order = SeededGenerator(seed: measure.seed ^ mix64(UInt64(d)) ^ 0x6B766D)
        let emulatedBefore = try ((bitmapVM ?? ringVM)!.vcpuStats()["insn_emulation"] ?? 0)
        var writes = 0

        for rep in 0..<(settings.warmup + settings.reps) {
            var sequence = Array(strategies.indices)
            sequence.shuffle(using: &order)
            for si in sequence {
                let s = strategies[si]
                let vm = s.usesRing ? ringVM! : bitmapVM!
                if !s.usesRing { try vm.setManualProtect(s == .getClear) }
                let round = try vm.runWrites()
                if vm === (bitmapVM ?? ringVM) { writes += d }
                flusher?.flush()
                let a0 = allocations.allocatedBytes
                let t0 = MonotonicClock.now()
                var t1 = t0
                switch s {
                case .get:
                    try vm.getDirtyLog()
                case .getClear:
                    try vm.getDirtyLog()
                    t1 = MonotonicClock.now()
                    try vm.clearDirtyLog()
                case .ring:
                    try vm.harvestRing()
                }
                let t2 = MonotonicClock.now()
                let a1 = allocations.allocatedBytes
                if rep >= settings.warmup {
                    samples[si].append(Double(t2 - t0))
                    allocated[si] += a1 &- a0
                    if s == .getClear {
                        phases[si].getNs.append(Double(t1 - t0))
                        phases[si].clearNs.append(Double(t2 - t1))
                    }
                    if s == .ring {
                        phases[si].ringFullExits += round.ringFullExits
                        phases[si].ringHarvestsDuringWrites += round.chunkHarvests
                        phases[si].ringNsDuringWrites.append(Double(round.ringHarvestNanoseconds))
                    }
                }
                if problems[si].isEmpty {
                    problems[si] = verify(s, vm: vm, round: round, expected: set)
                }
                progress.advance(Progress.units(dirtyPages: d * 64, nUsedMMUPages: 0) / Double(settings.warmup + settings.reps),
                                 status: status)
            }
        }
        let vm = (bitmapVM ?? ringVM)!
        let stats = try vm.vmStats()
        let sptes = stats["pages_4k"] ?? 0
        let nUsed = Int((stats["mmu_cache_miss"] ?? 0) &- (stats["mmu_shadow_zapped"] ?? 0))
        let emulatedAfter = try vm.vcpuStats()["insn_emulation"] ?? 0
        let perWrite = writes > 0 ? Double(emulatedAfter &- emulatedBefore) / Double(writes) : 0
        return strategies.indices.map { si in
            extras[si].sptes4k = sptes
            extras[si].emulatedInstructionsPerWrite = perWrite
            return PointRow(
                series: spec.key, backend: "kvm", nUsedMMUPages: nUsed, dirtyPages: d, strategy: strategies[si].rawValue,
                seedChoice: Strategy.seedChoice(nrDirtyPages: d, nUsedMMUPages: nUsed).rawValue, chose: "",
                samples: samples[si], counters: nil, allocatedBytesInTimedRegion: allocated[si],
                verified: problems[si].isEmpty, violations: problems[si], cache: measure.cache.rawValue, kernel: extras[si],
                phases: strategies[si] == .get ? nil : phases[si]
            )
        }
    }

    /// The pages the kernel handed out must be exactly the pages written.
    /// Returns what differs, empty when nothing does.
    private func verify(_ s: KernelStrategy, vm: KVMGuest, round: KVMGuest.WriteRound, expected: DirtySet) -> String {
        if s.usesRing {
            var seen = [UInt64](repeating: 0, count: expected.bitmap.count)
            var duplicates: [UInt64] = [], outside: [UInt64] = []
            let final = UnsafeBufferPointer(rebasing: vm.ringOffsets[0..<vm.ringHarvested])
            for off in round.ringEntriesDuringWrites + Array(final) {
                guard off < UInt64(spec.slotPages) else { outside.append(off); continue }
                let (w, b) = (Int(off >> 6), off & 63)
                if seen[w] & (1 << b) != 0 { duplicates.append(off) }
                seen[w] |= 1 << b
            }
            var report = Self.compare(seen, expected.bitmap)
            if !duplicates.isEmpty { report += "ring entries repeated: \(duplicates.prefix(4)); " }
            if !outside.isEmpty { report += "ring entries past the slot: \(outside.prefix(4)); " }
            if vm.ringForeign > 0 { report += "\(vm.ringForeign) ring entries of other slots; " }
            return report
        }
        return Self.compare(Array(vm.bitmap), expected.bitmap)
    }

    static func compare(_ got: [UInt64], _ want: [UInt64]) -> String {
        let (missing, extra) = got.withUnsafeBufferPointer { g in
            want.withUnsafeBufferPointer { w in
                (DirtyBitmap.difference(w.baseAddress!, g.baseAddress!, words: w.count, limit: 4),
                 DirtyBitmap.difference(g.baseAddress!, w.baseAddress!, words: w.count, limit: 4))
            }
        }
        var s = ""
        if !missing.isEmpty { s += "kernel lacks written pages \(missing); " }
        if !extra.isEmpty { s += "kernel reports unwritten pages \(extra); " }
        return s
    }
}
