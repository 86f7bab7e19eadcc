import BenchAnalysis
import DirtyLogCore
import Foundation
import HostKVM
import ShadowMMU

/// How much the kernel backend may spend.
public struct KernelSettings: Sendable, Equatable {
    /// Timed repetitions per point and strategy. Fewer than the model's by
    /// default: each costs a round of guest writes, which are slow here.
    public var repetitions = RepetitionPolicy.fixed(5)
    /// Wall-clock seconds one kernel series may take; points whose guest
    /// writes would exceed it are skipped, and said to be.
    public var budgetSeconds = 20.0
    public var strategies: [KernelStrategy] = KernelStrategy.allCases
    /// Whose clock the kernel's times are read on (`KernelClock`).
    public var clock = KernelClock.host

    public init(repetitions: RepetitionPolicy = .fixed(5), budgetSeconds: Double = 20, strategies: [KernelStrategy] = KernelStrategy.allCases) {
        self.repetitions = repetitions
        self.budgetSeconds = budgetSeconds
        self.strategies = strategies
    }
}

/// One series on the real kernel.
public struct KernelSeriesSpec: Sendable, Hashable {
    public var scenario: Scenario
    public var slotPages: Int
    public var vmPages: Int
    public var pattern: DirtyPattern
    /// Candidate dirty counts, ascending; the budget may cut the top.
    public var counts: [Int]

    public init(scenario: Scenario, slotPages: Int, vmPages: Int, pattern: DirtyPattern, counts: [Int]) {
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
        SeriesKey(scenario: scenario, paging: .tdp, sptesPerGFN: 1, slotPages: slotPages, vmPages: vmPages, pattern: pattern)
    }

    /// Host and kernel memory the series' VMs need, roughly: per VM the
    /// kernel's rmap arrays, bitmaps and host page tables for the aliased
    /// guest range, the memfd, the code slot's list.
    public func estimatedBytes(vms: Int) -> Int {
        vms * (vmPages * 32 + (8 << 20) + vmPages * 8 + (2 << 20))
    }


}

/// What a kernel series produced.
public struct KernelOutcome {
    public var rows: [PointRow] = []
    public var skipped: [SkipNote] = []
    /// For the terminal: how the guest ran and what that means.
    public var notes: [String] = []
    public var phases = PhaseTimes()
    /// Set when a signal stopped the series: the point it abandoned.
    public var interruptedAt: String?
}

/// Runs one series on the real kernel: a VM for the bitmap strategies and
/// one with a dirty ring, both populated; then, per point and repetition,
/// each strategy in a seeded random order through `TimedHarvest`: the
/// guest writes the pattern's pages, caches are evicted, one harvest is
/// timed and checked against the pages written.
public final class KernelSeries {
    public let spec: KernelSeriesSpec
    public let settings: KernelSettings
    public let measure: MeasureSettings
    private let progress: Progress
    private var timer: TimedHarvest

    public init(spec: KernelSeriesSpec, settings: KernelSettings, measure: MeasureSettings, eviction: CacheEviction?, progress: Progress) {
        self.spec = spec
        self.settings = settings
        self.measure = measure
        self.progress = progress
        timer = TimedHarvest(eviction: measure.cache.evicts ? eviction : nil)
    }

    public func run(device: KVMDevice, memoryAvailable: Int = SystemMemory.availableBytes) throws -> KernelOutcome {
        var out = KernelOutcome()
        let label = spec.key.label
        var strategies: [KernelStrategy] = []
        for s in settings.strategies {
            if let why = device.unsupported(s) {
                out.skipped.append(SkipNote(series: label, backend: .kvm, strategy: s.rawValue, reason: why))
            } else {
                strategies.append(s)
            }
        }
        guard !strategies.isEmpty else { return out }
        let needsBitmapVM = strategies.contains { !$0.usesRing }
        let needsRingVM = strategies.contains(.ring)
        let need = spec.estimatedBytes(vms: (needsBitmapVM ? 1 : 0) + (needsRingVM ? 1 : 0))
        guard need < memoryAvailable / 10 * 9 else {
            out.skipped.append(SkipNote(series: label, backend: .kvm, reason:
                "its VMs need about \(Bytes.format(need)); \(Bytes.format(memoryAvailable)) is available"))
            return out
        }

        let started = MonotonicClock.now()
        progress.point("building the kernel's VMs")
        let bitmapVM = needsBitmapVM ? try KVMGuest(device: device, slotPages: spec.slotPages, vmPages: spec.vmPages) : nil
        let ringVM = needsRingVM
            ? try KVMGuest(device: device, slotPages: spec.slotPages, vmPages: spec.vmPages, ringEntries: device.dirtyRingMaxEntries)
            : nil
        var backend = KernelBackend(bitmapVM: bitmapVM, ringVM: ringVM)
        let anyVM = backend.anyVM
        let mode = anyVM.mode.rawValue
        if anyVM.emulated {
            out.notes.append("kvm: this kernel emulates the \(mode) test guest's instructions (no 4 KiB spte after the "
                + "first writes, so populating stops there): its rmaps stay empty and its harvests protect no spte; "
                + "kernel times are the harvest's bookkeeping alone")
        }
        out.phases.add(.kernelSetup, MonotonicClock.seconds(since: started))

        // Points within the budget, from the fewest dirty pages up: each
        // repetition of each strategy writes its pages again.
        let perPageNs = max(anyVM.writeNanosPerPage, 1)
        let policy = settings.repetitions
        let repsTotal = Double(policy.warmup + (policy.fixed ?? policy.minimum))
        var spent = MonotonicClock.seconds(since: started)
        var counts: [Int] = []
        for d in spec.counts {
            let cost = repsTotal * Double(strategies.count) * (Double(d) * perPageNs + 2e5) / 1e9
            if spent + cost > settings.budgetSeconds { break }
            spent += cost
            counts.append(d)
        }
        if counts.count < spec.counts.count {
            let cut = spec.counts[counts.count...]
            out.skipped.append(SkipNote(series: label, backend: .kvm, dirtyPages: "\(cut.first!)-\(cut.last!)", reason:
                "guest writes cost \(Int(perPageNs)) ns/page here; these points would take the series past its "
                + "\(Int(settings.budgetSeconds)) s budget (--kvm-budget)"))
        }
        progress.addPoints(counts.count - spec.counts.count)
        for d in counts {
            guard let rows = try measurePoint(d: d, strategies: strategies, backend: &backend, out: &out) else { break }
            out.rows += rows
        }
        out.phases.merge(timer.phases)
        return out
    }

    private func measurePoint(d: Int, strategies: [KernelStrategy], backend: inout KernelBackend, out: inout KernelOutcome) throws -> [PointRow]? {
        progress.point("\(d) dirty")
        let set = spec.pattern.dirtySet(count: d, slotPages: spec.slotPages, seed: measure.seed, parameters: measure.patterns)
        try set.pages.withUnsafeBufferPointer { p in
            try backend.bitmapVM?.loadWriteList(p)
            try backend.ringVM?.loadWriteList(p)
        }
        let policy = settings.repetitions
        var record = PointRecord(strategies.map { .kernel($0) })
        var order = SeededGenerator(seed: measure.seed ^ mix64(UInt64(d)) ^ 0x6B766D)
        let anyVM = backend.anyVM
        let emulatedBefore = try anyVM.vcpuStats()["insn_emulation"] ?? 0
        var writes = 0
        var done = [Int](repeating: 0, count: strategies.count)
        while record.stops.contains(where: { $0 == nil }) {
            var sequence = strategies.indices.filter { record.stops[$0] == nil }
            sequence.shuffle(using: &order)
            for si in sequence {
                if Termination.requested != nil {
                    out.interruptedAt = "\(spec.key.label) (kvm), \(d) dirty pages"
                    return nil
                }
                let s = strategies[si]
                let m = try timer.measure(&backend, s, set)
                if (s.usesRing ? backend.ringVM : backend.bitmapVM) === anyVM { writes += d }
                record.add(si, m, timed: done[si] >= policy.warmup, ringFullExits: backend.ringFullExits)
                done[si] += 1
                if done[si] > policy.warmup { record.stops[si] = policy.stop(after: record.samples[si], repetitionNs: Double(m.repetitionNs)) }
            }
        }
        let stats = try anyVM.vmStats()
        let nUsed = Int((stats["mmu_cache_miss"] ?? 0) &- (stats["mmu_shadow_zapped"] ?? 0))
        let emulatedAfter = try anyVM.vcpuStats()["insn_emulation"] ?? 0
        var extras = KernelExtras(guestMode: anyVM.mode.rawValue)
        extras.sptes4k = stats["pages_4k"] ?? 0
        extras.clock = settings.clock
        extras.emulatedInstructionsPerWrite = writes > 0 ? Double(emulatedAfter &- emulatedBefore) / Double(writes) : 0
        progress.pointDone()
        return record.rows(series: spec.key, nUsed: nUsed, dirtyPages: d, cache: measure.cache, confidence: policy.confidence).map { row in
            var r = row
            r.kernel = extras
            if r.strategy == .kernel(.get) { r.phases = nil }
            return r
        }
    }
}
