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

    /// The sides a breakdown times: the two branches of the seed.
    public static let sides: [Strategy] = [.rmap, .slotWalk]

    /// The steps of `side`'s kernel function, by name.
    public static func steps(of side: Strategy) -> [String] { side == .rmap ? rmapSteps : walkSteps }

    /// The minimal implementation of `side` run to its first `steps` steps.
    public static func minimal(_ side: Strategy, steps: Int) -> BreakdownVariant {
        side == .rmap ? .minimalRmap(steps: steps) : .minimalWalk(steps: steps)
    }

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
        let complete = v == .minimal(v.strategy, steps: BreakdownVariant.steps(of: v.strategy).count)
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
        BreakdownVariant.sides.flatMap { side in
            [.model(side)] + (1...BreakdownVariant.steps(of: side).count).map { BreakdownVariant.minimal(side, steps: $0) }
        }
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
        public func ratio(_ cache: CacheMode, _ side: Strategy) -> Double {
            median(cache, .model(side)) / median(cache, .minimal(side, steps: BreakdownVariant.steps(of: side).count))
        }

        /// One line of the breakdown: a step of the minimal function, with
        /// what it adds over the steps before it, or the model's harvest
        /// (`step` nil), with what it adds over the whole minimal function.
        public struct Line: Sendable {
            public var cache: CacheMode
            public var side: Strategy
            public var step: Int?
            public var name: String
            public var reps: Int
            public var medianNs: Double
            public var addedNs: Double
        }

        /// Per cache and side, each step in order, then the model.
        public var lines: [Line] {
            var out: [Line] = []
            for cache in [CacheMode.warm, .cold] {
                for side in BreakdownVariant.sides {
                    var before = 0.0
                    func add(_ v: BreakdownVariant, step: Int?, name: String) {
                        let row = rows.first { $0.cache == cache && $0.variant == v }
                        let m = row?.median ?? .nan
                        out.append(Line(cache: cache, side: side, step: step, name: name, reps: row?.samples.count ?? 0, medianNs: m, addedNs: m - before))
                        before = m
                    }
                    for (i, name) in BreakdownVariant.steps(of: side).enumerated() { add(.minimal(side, steps: i + 1), step: i + 1, name: name) }
                    add(.model(side), step: nil, name: "the model's harvest")
                }
            }
            return out
        }

        /// Sptes the `side`'s model harvest visited: what per-spte costs are of.
        func sptes(_ side: Strategy) -> Double { Double(side == .rmap ? rmapSptes : walkSptes) }

        public var table: CSVTable {
            var t = CSVTable(columns: ["paging", "sptes_per_gfn", "slot_pages", "dirty_pages", "cache", "side", "variant", "step", "step_name",
                                       "reps", "median_ns", "ns_per_page", "ns_per_spte", "step_ns_per_page", "step_ns_per_spte"])
            let pages = Double(dirtyPages)
            for l in lines {
                t.append([layout.paging.mode.rawValue, "\(layout.paging.sptesPerGFN)", "\(layout.slotPages)", "\(dirtyPages)", l.cache.rawValue,
                          l.side.rawValue, l.step == nil ? "model" : "minimal", l.step.map { "\($0)" } ?? "all", l.name, "\(l.reps)",
                          String(format: "%.0f", l.medianNs), String(format: "%.3f", l.medianNs / pages), String(format: "%.3f", l.medianNs / sptes(l.side)),
                          String(format: "%.3f", l.addedNs / pages), String(format: "%.3f", l.addedNs / sptes(l.side))])
            }
            return t
        }

        /// For the terminal and the closing notes.
        public var summary: String {
            var out = [["", "", "median", "ns/page", "ns/spte", "+ns/page"]]
            let pages = Double(dirtyPages)
            for l in lines {
                if l.side == BreakdownVariant.sides[0] && l.step == 1 { out.append(["\(l.cache.rawValue):", "", "", "", "", ""]) }
                let what = l.step.map { "\($0) \(l.name)" } ?? "the model: \(String(format: "%.2fx", ratio(l.cache, l.side))) the minimal"
                out.append([l.side.rawValue, what, Reports.duration(l.medianNs), String(format: "%.2f", l.medianNs / pages),
                            String(format: "%.2f", l.medianNs / sptes(l.side)), String(format: "%+.2f", l.addedNs / pages)])
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
