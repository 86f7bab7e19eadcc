import BenchAnalysis
import CMinimalHarvest
import DirtyLogCore
import ShadowMMU

/// What `bench breakdown` times at one point: the model's own harvest by a
/// strategy, or the minimal C implementation of that strategy's kernel
/// function (CMinimalHarvest) run to one of its steps.
public enum BreakdownVariant: Hashable, Sendable {
    case model(Strategy)
    case minimalRmap(steps: Int)
    case minimalWalk(steps: Int)

    /// The steps of kvm_mmu_rmap_write_protect() per dirty page, in the
    /// order the minimal implementation adds them.
    public static let rmapSteps = [
        "clear the other bitmap half, for_each_set_bit",
        "spin_lock/spin_unlock of mmu_lock per gfn",
        "4 KiB rmap: each spte write-protected",
        "gfn_to_rmap() 2M, 1G: memslot search, head",
    ]
    /// The steps of kvm_mmu_slot_remove_write_access().
    public static let walkSteps = [
        "clear the other half, active_mmu_pages, slot bit",
        "read 512 sptes a page, find the leaves",
        "write-protect each writable 4 KiB leaf",
    ]

    /// The model strategy whose kernel function it is (and whose footprint
    /// an eviction empties from the caches).
    public var strategy: Strategy {
        switch self {
        case .model(let s): s
        case .minimalRmap: .rmap
        case .minimalWalk: .slotWalk
        }
    }

    public var label: String {
        switch self {
        case .model(let s): "model \(s.rawValue)"
        case .minimalRmap(let n): "minimal rmap, steps 1-\(n)"
        case .minimalWalk(let n): "minimal slot-walk, steps 1-\(n)"
        }
    }
}

/// The model with the minimal implementation beside it: the guest's writes,
/// the eviction and the checks are the model's (`ModelBackend`); the timed
/// harvest is either the model's or the C function's on the same bitmap,
/// rmaps and sptes. After a C harvest, what it did is checked (every spte
/// the round made writable protected, once all steps run) and the model's
/// own harvest completes the protocol untimed, so that the next round
/// starts from the state a harvest leaves.
struct BreakdownBackend: HarvestBackend {
    var model: ModelBackend
    /// The memslots in search order, as the C code reads them.
    let slots: UnsafeMutableBufferPointer<mh_slot>
    let measured: Int32
    let lock: UnsafeMutablePointer<mh_ticket_lock>
    let pages: UnsafeMutablePointer<mh_pages>
    private var lastCounts = mh_counts()

    init(vm: VirtualMachine, mmu: MMU) {
        model = ModelBackend(vm: vm, mmu: mmu)
        let views = mmu.memslots
        slots = .allocate(capacity: views.count)
        for (i, v) in views.enumerated() {
            slots[i] = mh_slot(base_gfn: v.baseGFN.rawValue, npages: UInt64(v.npages), rmap: (v.rmap1, v.rmap2, v.rmap3))
        }
        measured = Int32(views.firstIndex { $0.id == VMLayout.measuredSlotID }!)
        lock = .allocate(capacity: 1)
        lock.initialize(to: mh_ticket_lock())
        pages = .allocate(capacity: 1)
        let p = mmu.pages
        pages.initialize(to: mh_pages(next: UnsafePointer(p.next), slot_bitmap: UnsafePointer(p.slotBitmap),
                                      spt: UnsafePointer(p.spt), level: UnsafePointer(p.level), head: mmu.vm.pointee.activeHead))
    }

    func deallocate() {
        slots.deallocate()
        lock.deallocate()
        pages.deallocate()
    }

    mutating func beginRound(_ v: BreakdownVariant, _ round: GuestRound) { model.beginRound(v.strategy, round) }
    mutating func write(_ v: BreakdownVariant, _ round: GuestRound) -> Bool { model.write(v.strategy, round) }
    mutating func harvestFullRing() { model.harvestFullRing() }
    func evict(_ v: BreakdownVariant, _ round: GuestRound, with eviction: CacheEviction) { model.evict(v.strategy, round, with: eviction) }

    @inline(__always)
    mutating func harvest(_ v: BreakdownVariant, phases: inout HarvestPhaseMarks) -> HarvestOutcome {
        let s = model.slot
        switch v {
        case .model(let strategy):
            return model.harvest(strategy, phases: &phases)
        case .minimalRmap(let steps):
            lastCounts = mh_rmap_write_protect(slots.baseAddress, Int32(slots.count), measured, s.dirtyBitmap, s.otherBitmap,
                                               s.bitmapWords, lock, Int32(steps))
        case .minimalWalk(let steps):
            lastCounts = mh_slot_remove_write_access(pages, Int32(s.id), s.otherBitmap, s.bitmapWords, lock, Int32(steps))
        }
        return HarvestOutcome()
    }

    mutating func verify(_ v: BreakdownVariant, _ round: GuestRound, _ outcome: HarvestOutcome) -> Verdict {
        if case .model(let strategy) = v { return model.verify(strategy, round, outcome) }
        var verdict = Verdict()
        let complete = if case .minimalRmap(let n) = v { n >= BreakdownVariant.rmapSteps.count } else { v == .minimalWalk(steps: BreakdownVariant.walkSteps.count) }
        if complete {
            let left = round.sptes.reduce(0) { $0 + ($1.pointee & SPTE.writable != 0 ? 1 : 0) }
            if left != 0 { verdict.fail("\(v.label): \(left) of the \(round.count) sptes written left writable") }
            if lastCounts.protected_ != UInt64(round.count) {
                verdict.fail("\(v.label): \(lastCounts.protected_) sptes protected, \(round.count) written")
            }
        }
        if lastCounts.large_writable != 0 { verdict.fail("\(v.label): \(lastCounts.large_writable) writable large leaves") }
        // The rest of the seed's protocol (the halves swapped, whatever a
        // partial run left writable protected), untimed; then the model's check.
        var marks = HarvestPhaseMarks()
        let out = model.harvest(.rmap, phases: &marks)
        verdict.merge(model.verify(.rmap, round, out))
        return verdict
    }
}

/// `bench breakdown`: rmap's and slot-walk's cost per page at one dirty
/// count, the model's harvest beside the minimal C implementation run step
/// by step, warm and cold, interleaved repetition by repetition through the
/// one timed path.
public struct CostBreakdown {
    public var layout: VMLayout
    public var dirtyPages: Int
    public var reps: Int
    public var seed: UInt64

    public init(layout: VMLayout, dirtyPages: Int, reps: Int, seed: UInt64) {
        self.layout = layout
        self.dirtyPages = dirtyPages
        self.reps = reps
        self.seed = seed
    }

    public static var variants: [BreakdownVariant] {
        [.model(.rmap)] + (1...BreakdownVariant.rmapSteps.count).map { .minimalRmap(steps: $0) }
            + [.model(.slotWalk)] + (1...BreakdownVariant.walkSteps.count).map { .minimalWalk(steps: $0) }
    }

    public struct Row: Sendable {
        public var cache: CacheMode
        public var variant: BreakdownVariant
        public var samples: [Double]
        public var median: Double { Statistics.median(samples) }
    }

    public struct Result: Sendable {
        public var layout: VMLayout
        public var dirtyPages: Int
        /// Sptes the rmap branch visits (every spte of a dirty page) and the
        /// slot walk reads (512 per shadow page of the slot).
        public var rmapSptes: Int
        public var walkSptes: Int
        public var rows: [Row]
        public var violations: Int
        public var messages: [String]

        func median(_ cache: CacheMode, _ v: BreakdownVariant) -> Double {
            rows.first { $0.cache == cache && $0.variant == v }?.median ?? .nan
        }

        /// The model's harvest over the minimal implementation's with all its steps.
        public func ratio(_ cache: CacheMode, _ strategy: Strategy) -> Double {
            let full: BreakdownVariant = strategy == .rmap ? .minimalRmap(steps: BreakdownVariant.rmapSteps.count)
                : .minimalWalk(steps: BreakdownVariant.walkSteps.count)
            return median(cache, .model(strategy)) / median(cache, full)
        }

        public var table: CSVTable {
            var t = CSVTable(columns: ["paging", "sptes_per_gfn", "slot_pages", "dirty_pages", "cache", "side", "variant", "step", "step_name",
                                       "reps", "median_ns", "ns_per_page", "ns_per_spte", "step_ns_per_page", "step_ns_per_spte"])
            for cache in [CacheMode.warm, .cold] {
                for (side, strategy, steps) in [("rmap", Strategy.rmap, BreakdownVariant.rmapSteps), ("slot-walk", .slotWalk, BreakdownVariant.walkSteps)] {
                    let sptes = Double(strategy == .rmap ? rmapSptes : walkSptes)
                    func line(_ v: BreakdownVariant, step: String, name: String, added: Double?) {
                        let m = median(cache, v)
                        let n = rows.first { $0.cache == cache && $0.variant == v }?.samples.count ?? 0
                        t.append([layout.paging.mode.rawValue, "\(layout.paging.sptesPerGFN)", "\(layout.slotPages)", "\(dirtyPages)", cache.rawValue,
                                  side, v == .model(strategy) ? "model" : "minimal", step, name, "\(n)", String(format: "%.0f", m),
                                  String(format: "%.3f", m / Double(dirtyPages)), String(format: "%.3f", m / sptes),
                                  added.map { String(format: "%.3f", $0 / Double(dirtyPages)) } ?? "",
                                  added.map { String(format: "%.3f", $0 / sptes) } ?? ""])
                    }
                    var before = 0.0
                    for (i, name) in steps.enumerated() {
                        let v: BreakdownVariant = strategy == .rmap ? .minimalRmap(steps: i + 1) : .minimalWalk(steps: i + 1)
                        let m = median(cache, v)
                        line(v, step: "\(i + 1)", name: name, added: m - before)
                        before = m
                    }
                    line(.model(strategy), step: "all", name: "the model's harvest", added: median(cache, .model(strategy)) - before)
                }
            }
            return t
        }

        /// For the terminal and the closing notes.
        public var summary: String {
            var out = [["", "", "median", "ns/page", "ns/spte", "+ns/page"]]
            for cache in [CacheMode.warm, .cold] {
                out.append(["\(cache.rawValue):", "", "", "", "", ""])
                for (side, strategy, steps) in [("rmap", Strategy.rmap, BreakdownVariant.rmapSteps), ("slot-walk", .slotWalk, BreakdownVariant.walkSteps)] {
                    let sptes = Double(strategy == .rmap ? rmapSptes : walkSptes)
                    var before = 0.0
                    func line(_ what: String, _ m: Double) {
                        out.append([side, what, Reports.duration(m), String(format: "%.2f", m / Double(dirtyPages)),
                                    String(format: "%.2f", m / sptes), String(format: "%+.2f", (m - before) / Double(dirtyPages))])
                        before = m
                    }
                    for (i, name) in steps.enumerated() {
                        line("\(i + 1) \(name)", median(cache, strategy == .rmap ? .minimalRmap(steps: i + 1) : .minimalWalk(steps: i + 1)))
                    }
                    line("the model: \(String(format: "%.2fx", ratio(cache, strategy))) the minimal", median(cache, .model(strategy)))
                }
            }
            return "\(layout.paging) \(Bytes.pages(layout.slotPages)), \(dirtyPages) dirty pages, \(rows.first?.samples.count ?? 0) repetitions:\n"
                + Reports.layout(out)
        }
    }

    /// Runs every variant, warm then cold, interleaved in a seeded order.
    public func run(progress: Progress) throws -> Result {
        precondition(reps >= 1 && dirtyPages >= 1 && dirtyPages <= layout.slotPages)
        progress.plan([("breakdown \(layout.paging) \(Bytes.pages(layout.slotPages))", 2, 1)])
        progress.beginSeries(0)
        progress.point("building the VM")
        let vm = VirtualMachine(layout: layout, vcpus: 2, ringEntries: 65536)
        let set = DirtyPattern.even.dirtySet(count: dirtyPages, slotPages: layout.slotPages, seed: seed)
        let round = GuestRound(vm: vm, set: set, sptesPerGFN: layout.paging.sptesPerGFN, seed: seed)
        var rows: [Row] = []
        var verdict = Verdict()
        var rmapSptes = 0, walkSptes = 0
        try vm.withMMU { mmu in
            var backend = BreakdownBackend(vm: vm, mmu: mmu)
            defer { backend.deallocate() }
            var order = SeededGenerator(seed: seed ^ 0xB7EA)
            let variants = Self.variants
            for cache in [CacheMode.warm, .cold] {
                progress.point("\(cache.rawValue) caches")
                var timer = TimedHarvest(eviction: cache == .cold ? CacheEviction() : nil)
                var samples = [[Double]](repeating: [], count: variants.count)
                for rep in 0..<(reps + 1) {
                    for vi in variants.indices.shuffled(using: &order) {
                        if Termination.requested != nil { throw Termination.Stopped() }
                        let m = try timer.measure(&backend, variants[vi], round)
                        verdict.merge(m.verdict)
                        // What the model's harvests visited: the sptes per-spte costs are of.
                        if let c = m.outcome.counters {
                            if variants[vi] == .model(.rmap) { rmapSptes = c.rmapEntriesVisited }
                            if variants[vi] == .model(.slotWalk) { walkSptes = c.sptesScanned }
                        }
                        if rep > 0 { samples[vi].append(Double(m.ns)) }
                    }
                }
                rows += variants.indices.map { Row(cache: cache, variant: variants[$0], samples: samples[$0]) }
                progress.pointDone()
            }
        }
        progress.finish()
        return Result(layout: layout, dirtyPages: dirtyPages, rmapSptes: rmapSptes,
                      walkSptes: walkSptes, rows: rows, violations: verdict.count, messages: verdict.messages)
    }
}
