import DirtyLogCore

/// The adaptive rule's cost model: what each candidate would take for this
/// harvest, from constants measured on this VM on this machine and from
/// two counts the write-fault path keeps, so that deciding reads no bitmap:
///
///     cost = fixed + pages · perPage(pages / lines)
///
/// - pages: nr_dirty_pages;
/// - lines: the bitmap's non-zero 64-byte lines, 512-page spans (a leaf
///   table's), kept by mark_page_dirty when a span gets its first page;
/// - fixed: what the candidate costs whatever is dirty (scanning the
///   bitmap; walking the list, the rmaps or the tree);
/// - perPage(ρ): what a dirty page adds when ρ dirty pages share its span,
///   from 1 (a page per span: every page its own misses) to 512 (every
///   page: the neighbours share the lines), kept at four steps an octave
///   (`SpanDensity`) and read linearly between them.
///
/// Each candidate has two such curves, for the two kinds of dirty set the
/// hardware tells apart: regular sets (evenly spaced pages, runs), whose
/// addresses the prefetchers and whose branches the predictors follow, and
/// scattered ones. When both name the same cheapest candidate, that is the
/// choice. Otherwise the rule takes the candidate whose worst excess over
/// either kind's best is least, unless that excess is more than a look at
/// the bitmap costs: then it looks (`MMU.lookAtBitmap`: a few gaps between
/// dirty pages in four short windows) and takes the cheapest for the kind
/// it saw.
public struct CostModel: Sendable, Equatable {
    public var calibrated = false
    /// Whether the VM has the two-dimensional-paging structure the tdp
    /// strategies walk.
    public var hasTDP = false {
        didSet { for lane in Self.tdpLanes { setAvailable(lane) } }
    }
    /// What a look at the bitmap costs, cold (ns).
    public var lookNs = 0.0
    /// The constants as the rule reads them, `CostRows.count` rows of a lane
    /// per candidate: per kind, the fixed costs, then the per-page costs at
    /// each step of ρ (`CostRows` gives the layout).
    var rows = (0..<CostRows.count).map { $0 % CostRows.perKind == 0 ? SIMD8<Float>(repeating: .infinity) : SIMD8<Float>(repeating: 0) }
    /// Each kind's fixed costs as set, kept apart so that a lane can be
    /// disabled and re-enabled.
    var setFixed = [SIMD8<Float>](repeating: SIMD8(repeating: .infinity), count: 2)

    /// The candidates, in lane order (`candidate(lane:)`).
    public static let lanes: [Strategy] = (0..<laneCount).map(candidate(lane:))
    static let laneCount = 6
    static let tdpLanes = [4, 5]

    public init() {}

    /// A candidate's constants; nil for a strategy the rule does not
    /// consider (or a tdp one on a VM without the structure).
    public func candidate(_ s: Strategy) -> CandidateCost? {
        guard let i = Self.lanes.firstIndex(of: s), !s.needsTDP || hasTDP else { return nil }
        return CandidateCost(regular: cost(lane: i, kind: .regular), scattered: cost(lane: i, kind: .scattered))
    }

    /// Sets a candidate's constants.
    public mutating func set(_ s: Strategy, _ c: CandidateCost) {
        guard let i = Self.lanes.firstIndex(of: s) else { preconditionFailure("\(s) is not a candidate of the adaptive rule") }
        precondition(c.regular.perPage.count == SpanDensity.steps && c.scattered.perPage.count == SpanDensity.steps)
        for kind in DirtySetKind.allCases {
            let k = c[kind]
            setFixed[kind.index][i] = Float(k.fixed)
            for step in 0..<SpanDensity.steps { rows[CostRows.perPageRow(kind, step: step)][i] = Float(k.perPage[step]) }
        }
        setAvailable(i)
    }

    /// A lane's fixed costs as set, or infinitely dear when the VM cannot run it.
    private mutating func setAvailable(_ lane: Int) {
        let on = !Self.candidate(lane: lane).needsTDP || hasTDP
        for kind in DirtySetKind.allCases {
            rows[CostRows.fixedRow(kind)][lane] = on ? setFixed[kind.index][lane] : .infinity
        }
    }

    private func cost(lane i: Int, kind: DirtySetKind) -> PerPageCost {
        PerPageCost(fixed: Double(setFixed[kind.index][i]),
                    perPage: (0..<SpanDensity.steps).map { Double(rows[CostRows.perPageRow(kind, step: $0)][i]) })
    }

    /// The cheapest candidate of a kind and its predicted cost.
    public func cheapest(pages: Int, lines: Int, _ kind: DirtySetKind) -> (strategy: Strategy, cost: Double) {
        rows.withUnsafeBufferPointer {
            let (i, m) = CostRows.argmin(CostRows(base: $0.baseAddress!).costs(kind, pages: pages, lines: lines))
            return (Self.candidate(lane: i), Double(m))
        }
    }

    /// The predicted cost of `s` (infinite for one the VM cannot run).
    public func predict(_ s: Strategy, pages: Int, lines: Int, _ kind: DirtySetKind) -> Double {
        guard let i = Self.lanes.firstIndex(of: s) else { return .infinity }
        return rows.withUnsafeBufferPointer { Double(CostRows(base: $0.baseAddress!).costs(kind, pages: pages, lines: lines)[i]) }
    }

    /// The rule's choice for `pages` dirty pages in `lines` spans, as the
    /// harvest makes it; `look` is called only when the kinds disagree by
    /// more than it costs.
    public func choose(pages: Int, lines: Int, look: () -> BitmapLook) -> Strategy {
        rows.withUnsafeBufferPointer {
            CostRows(base: $0.baseAddress!).choose(pages: pages, lines: lines, lookNs: Float(lookNs), calibrated: calibrated, look: look)
        }
    }

    /// The candidate of a lane, without touching an array on the harvest path.
    @inline(__always)
    static func candidate(lane: Int) -> Strategy {
        switch lane {
        case 0: .masked
        case 1: .rmap
        case 2: .slotWalk
        case 3: .rmapWalk
        case 4: .tdpMasked
        default: .tdpWalk
        }
    }
}

/// The adaptive rule's decision table (`DecisionTable`), in the VM's
/// arena, nil before calibration; each slot's state holds its address too.
public struct AdaptiveState {
    public var table: UnsafeMutablePointer<UInt64>? = nil
}

/// The adaptive rule reduced to what a decision needs: per density step
/// (`SpanDensity`), the page counts at which its choice changes, computed
/// once from the calibrated `CostModel`. A step's record is 32 bytes, two
/// to a cache line, aligned:
///
///     words 0-2   six bounds (UInt32, ascending; UInt32.max unused):
///                 segment i covers pages below bound i, from bound i-1
///     word 3      seven choices, a byte per segment: the regular kind's
///                 lane in the low nibble, the scattered kind's in the high;
///                 equal nibbles choose without looking, different ones
///                 look at the bitmap to tell the kind
///
/// A decision reads nr_dirty_pages, the dirty-line count and the table's
/// address (the slot's state, which every harvest reads) and one record:
/// one cache line of its own. The density is rounded to the nearest step (four an octave)
/// where `CostModel` reads between steps; the choices are the model's at
/// each step, segment bounds within 1% of where they change.
public enum DecisionTable {
    public static let wordsPerStep = 4
    public static let segments = 7
    public static var words: Int { SpanDensity.steps * wordsPerStep }

    /// The records for `model` over 1 to `maxPages` dirty pages.
    public static func build(_ model: CostModel, maxPages: Int) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: words)
        for k in 0..<SpanDensity.steps {
            func decision(_ p: Int) -> UInt8 {
                model.rows.withUnsafeBufferPointer {
                    let rows = CostRows(base: $0.baseAddress!)
                    let (r, s) = CostRows.lanes(regular: rows.costs(.regular, pages: p, step: k), scattered: rows.costs(.scattered, pages: p, step: k),
                                                lookNs: Float(model.lookNs))
                    return UInt8(r | s << 4)
                }
            }
            // The choice along a geometric grid of page counts, merged into segments.
            var segs: [(start: Int, choice: UInt8)] = []
            var p = 1
            while p <= max(1, maxPages) {
                let d = decision(p)
                if segs.last?.choice != d { segs.append((p, d)) }
                p = max(p + 1, Int(Double(p) * 1.01))
            }
            // At most `segments`: the narrowest (in octaves) folds into its left neighbour.
            while segs.count > segments {
                var narrowest = 1, least = Double.infinity
                for i in 1..<segs.count {
                    let end = i + 1 < segs.count ? Double(segs[i + 1].start) : Double(max(maxPages, segs[i].start + 1))
                    let w = (end / Double(segs[i].start)).squareRoot()  // monotone in the width in octaves
                    if w < least { least = w; narrowest = i }
                }
                segs.remove(at: narrowest)
                var i = 1
                while i < segs.count { if segs[i].choice == segs[i - 1].choice { segs.remove(at: i) } else { i += 1 } }
            }
            var bounds = [UInt32](repeating: .max, count: 6)
            var choices: UInt64 = 0
            for (i, seg) in segs.enumerated() {
                if i > 0 { bounds[i - 1] = UInt32(min(seg.start, Int(UInt32.max))) }
                choices |= UInt64(seg.choice) << UInt64(8 * i)
            }
            // Unused segments repeat the last choice.
            for i in segs.count..<8 { choices |= UInt64(segs.last!.choice) << UInt64(8 * i) }
            for w in 0..<3 { out[k * wordsPerStep + w] = UInt64(bounds[2 * w]) | UInt64(bounds[2 * w + 1]) << 32 }
            out[k * wordsPerStep + 3] = choices
        }
        return out
    }

    /// The page count below which `table` chooses one lane whatever the
    /// density, without looking, and that lane: every step's first segment
    /// that choice (a step whose first segment differs bounds it by its ρ,
    /// which so few pages cannot reach).
    public static func smallPages(_ table: [UInt64]) -> (pages: Int, lane: Int) {
        let first = Int(table[3] & 0xFF)
        guard first & 15 == first >> 4 else { return (0, 0) }
        var bound = Int(UInt32.max)
        for k in 0..<SpanDensity.steps {
            let c = Int(table[k * wordsPerStep + 3] & 0xFF)
            let end = Int(table[k * wordsPerStep] & 0xFFFF_FFFF)
            bound = min(bound, c == first ? end : Int(SpanDensity.rho(k).rounded(.up)))
        }
        return (bound, first & 15)
    }

    /// The record a decision for `pages` dirty pages in `lines` spans
    /// reads: its density rounded to the nearest step.
    @inline(__always)
    public static func record(_ table: UnsafePointer<UInt64>, pages: Int, lines: Int) -> UnsafePointer<UInt64> {
        let (k0, t) = SpanDensity.position(Float(pages) / Float(max(1, lines)))
        return table + (t >= 0.5 && k0 &+ 1 < SpanDensity.steps ? k0 &+ 1 : k0) &* wordsPerStep
    }

    /// The decision for `pages` dirty pages in `lines` spans: one record read.
    @inline(__always)
    public static func choose(_ table: UnsafePointer<UInt64>, pages: Int, lines: Int, look: () -> BitmapLook) -> Strategy {
        // Nothing dirty: the seed era's protocol returns at once.
        guard pages > 0 else { return .rmap }
        let rec = record(table, pages: pages, lines: lines)
        let p = UInt64(pages)
        let w0 = rec[0], w1 = rec[1], w2 = rec[2]
        var seg = 0
        seg &+= p >= w0 & 0xFFFF_FFFF ? 1 : 0
        seg &+= p >= w0 >> 32 ? 1 : 0
        seg &+= p >= w1 & 0xFFFF_FFFF ? 1 : 0
        seg &+= p >= w1 >> 32 ? 1 : 0
        seg &+= p >= w2 & 0xFFFF_FFFF ? 1 : 0
        seg &+= p >= w2 >> 32 ? 1 : 0
        let c = Int(truncatingIfNeeded: rec[3] >> UInt64(seg &* 8)) & 0xFF
        let regular = c & 15, scattered = c >> 4
        if regular == scattered { return CostModel.candidate(lane: regular) }
        return CostModel.candidate(lane: look().regular ? regular : scattered)
    }
}

/// The constants' layout: for each kind (regular, then scattered), one row
/// of fixed costs, then one row per step of ρ, a lane per candidate (lanes
/// past the candidates, and unavailable ones, infinitely dear). A decision
/// reads the fixed row and the two rows around ρ of each kind: six lines
/// of 32 bytes, all it touches.
public struct CostRows {
    public let base: UnsafePointer<SIMD8<Float>>

    @inline(__always) public init(base: UnsafePointer<SIMD8<Float>>) { self.base = base }

    static let perKind = 1 + SpanDensity.steps
    public static let count = 2 * perKind

    @inline(__always) static func fixedRow(_ kind: DirtySetKind) -> Int { kind == .regular ? 0 : perKind }
    @inline(__always) static func perPageRow(_ kind: DirtySetKind, step: Int) -> Int { fixedRow(kind) &+ 1 &+ step }

    /// Every candidate's predicted cost: ρ = pages / lines, the step below
    /// it and the linear position to the next, the per-page cost read
    /// between the two.
    @inline(__always)
    func costs(_ kind: DirtySetKind, pages: Int, lines: Int) -> SIMD8<Float> {
        let (k, t) = SpanDensity.position(Float(pages) / Float(max(1, lines)))
        let row = base + Self.fixedRow(kind)
        let lo = row[1 &+ k], hi = row[1 &+ min(k &+ 1, SpanDensity.steps &- 1)]
        return row[0] + (lo + (hi - lo) * t) * Float(pages)
    }

    /// Every candidate's predicted cost at exactly step `k` of ρ.
    @inline(__always)
    func costs(_ kind: DirtySetKind, pages: Int, step k: Int) -> SIMD8<Float> {
        let row = base + Self.fixedRow(kind)
        return row[0] + row[1 &+ k] * Float(pages)
    }

    /// The cheapest candidate. When both kinds name the same one, that is
    /// the choice. Otherwise the candidate whose larger excess over the two
    /// kinds' bests is least, unless that excess is more than a look costs:
    /// then `look` says which kind this set is.
    @inline(__always)
    func choose(pages: Int, lines: Int, lookNs: Float, calibrated: Bool, look: () -> BitmapLook) -> Strategy {
        guard calibrated else { return .masked }
        // Nothing dirty: the seed era's protocol returns at once.
        guard pages > 0 else { return .rmap }
        let (ir, iS) = Self.lanes(regular: costs(.regular, pages: pages, lines: lines), scattered: costs(.scattered, pages: pages, lines: lines),
                                  lookNs: lookNs)
        if ir == iS { return CostModel.candidate(lane: ir) }
        return CostModel.candidate(lane: look().regular ? ir : iS)
    }

    /// The rule's lanes for one dirty set, given each kind's predicted
    /// costs: the same lane twice when it chooses without looking (both
    /// kinds' cheapest, or the blind choice: the candidate whose larger
    /// excess over the two bests is least, when that is no more than a
    /// look costs); else each kind's cheapest, for a look to pick.
    @inline(__always)
    static func lanes(regular r: SIMD8<Float>, scattered s: SIMD8<Float>, lookNs: Float) -> (regular: Int, scattered: Int) {
        let (ir, bestR) = argmin(r), (iS, bestS) = argmin(s)
        if ir == iS { return (ir, ir) }
        var blind = 0, least = Float.infinity
        var i = 0
        while i < CostModel.laneCount {
            let e = max(r[i] - bestR, s[i] - bestS)
            if e < least { least = e; blind = i }
            i &+= 1
        }
        return least <= lookNs ? (blind, blind) : (ir, iS)
    }

    /// The cheapest lane and its cost, first on ties.
    @inline(__always)
    static func argmin(_ v: SIMD8<Float>) -> (Int, Float) {
        var best = 0, m = v[0]
        var i = 1
        while i < CostModel.laneCount {
            if v[i] < m { m = v[i]; best = i }
            i &+= 1
        }
        return (best, m)
    }
}

extension VirtualMachine {
    /// Installs the adaptive rule's decision table, built from `model` for
    /// up to the measured slot's pages, where its decision reads it; an
    /// uncalibrated model removes it (the rule then takes masked).
    public func install(_ model: CostModel) {
        guard model.calibrated else {
            if let t = state.pointee.adaptive.table { arena.free(t) }
            state.pointee.adaptive.table = nil
            for slot in slots { slot.view.state.pointee.decisionTable = nil }
            return
        }
        if state.pointee.adaptive.table == nil {
            state.pointee.adaptive.table = arena.allocate(UInt64.self, count: DecisionTable.words, alignment: 64)
        }
        let maxPages = slots.map(\.view.npages).max() ?? 1
        let words = DecisionTable.build(model, maxPages: maxPages)
        let t = state.pointee.adaptive.table!
        for i in 0..<words.count { t[i] = words[i] }
        let small = DecisionTable.smallPages(words)
        for slot in slots {
            slot.view.state.pointee.decisionTable = t
            slot.view.state.pointee.decisionSmallPages = small.pages
            slot.view.state.pointee.decisionSmallLane = small.lane
        }
    }
}

extension MMU {
    /// The adaptive rule's decision for the slot's next harvest: one record
    /// of its decision table (`DecisionTable.choose`) and, when the kinds
    /// disagree by more than a look costs, a look at the bitmap.
    ///
    /// Below the pages where one candidate holds at every density, the
    /// decision is three loads of the slot's state (whose line the harvest
    /// reads anyway) and a compare, inline; the table's path is out of
    /// line, so that the few instruction lines a decision on the small
    /// path adds to the harvest (each a miss after the eviction) stay few.
    @inline(__always)
    func chooseAdaptive(slot s: SlotView) -> Strategy {
        let state = s.state
        let pages = state.pointee.nrDirtyPages
        if pages > 0 && pages < state.pointee.decisionSmallPages { return CostModel.candidate(lane: state.pointee.decisionSmallLane) }
        return chooseAdaptiveFromTable(slot: s)
    }

    @inline(never)
    func chooseAdaptiveFromTable(slot s: SlotView) -> Strategy {
        guard let table = s.state.pointee.decisionTable else { return .masked }
        let current = s.dirtyBitmap
        return DecisionTable.choose(table, pages: s.state.pointee.nrDirtyPages, lines: s.state.pointee.nrDirtyLines) {
            MMU.lookAtBitmap(current, words: s.bitmapWords)
        }
    }

    /// The record `chooseAdaptive` will read: its cache line.
    func adaptiveRecord(slot s: SlotView) -> UnsafeRawPointer? {
        guard let table = s.state.pointee.decisionTable else { return nil }
        let pages = s.state.pointee.nrDirtyPages
        guard pages > 0, pages >= s.state.pointee.decisionSmallPages else { return nil }
        return UnsafeRawPointer(DecisionTable.record(table, pages: pages, lines: s.state.pointee.nrDirtyLines))
    }
}

/// The densities ρ (dirty pages per 512-page span) the per-page costs are
/// kept at: four steps an octave, 1, 1.25, 1.5, 1.75, 2, 2.5, ..., 448,
/// 512, since the cost per page can jump within an octave (here, tdp-masked
/// on evenly spaced pages: 2.8 ns a page 13 pages apart, ρ = 39; 12.5 ns 16
/// apart, ρ = 32, where the prefetchers stop following).
///
/// Step k is ρ = 2^(k / 4) · (1 + (k % 4) / 4): the exponent and the top
/// two mantissa bits of ρ as a Float, so finding it takes no logarithm.
public enum SpanDensity {
    public static let steps = 37
    /// ρ of step `k`.
    public static func rho(_ k: Int) -> Double { Double(1 << (k / 4)) * (1 + Double(k % 4) / 4) }

    /// Where ρ (at least 1) falls on the steps: k + t, t in [0, 1).
    @inline(__always)
    public static func position(_ rho: Float) -> (k: Int, t: Float) {
        let bits = max(1, rho).bitPattern
        let k = Int((bits >> 23) &- 127) << 2 | Int((bits >> 21) & 3)
        guard k < steps &- 1 else { return (steps &- 1, 0) }
        return (k, Float(bits & 0x1F_FFFF) * (1 / Float(0x20_0000)))
    }
}

/// The two kinds of dirty set a candidate's constants are measured for.
public enum DirtySetKind: String, Sendable, CaseIterable {
    /// Evenly spaced pages, or runs: what prefetchers and branch
    /// predictors follow (the model's tables and rmaps lie in huge pages,
    /// so a stride of a leaf table or more is followed too).
    case regular
    /// Anything else: random pages, mixed gaps.
    case scattered

    var index: Int { self == .regular ? 0 : 1 }
}

/// One candidate's constants for each kind of dirty set.
public struct CandidateCost: Sendable, Equatable {
    public var regular: PerPageCost
    public var scattered: PerPageCost

    public init(regular: PerPageCost, scattered: PerPageCost) {
        self.regular = regular
        self.scattered = scattered
    }

    @inline(__always)
    public subscript(kind: DirtySetKind) -> PerPageCost {
        get { kind == .regular ? regular : scattered }
        set { if kind == .regular { regular = newValue } else { scattered = newValue } }
    }
}

/// `fixed + pages · perPage(ρ)`, ns; `perPage[k]` at ρ = `SpanDensity.rho(k)`.
public struct PerPageCost: Sendable, Equatable {
    public var fixed: Double
    public var perPage: [Double]

    public init(fixed: Double, perPage: [Double]) {
        precondition(perPage.count == SpanDensity.steps)
        self.fixed = fixed
        self.perPage = perPage
    }

    /// The same per-page cost at every ρ.
    public init(fixed: Double, perPage: Double = 0) {
        self.init(fixed: fixed, perPage: [Double](repeating: perPage, count: SpanDensity.steps))
    }
}

/// What a look at the bitmap saw.
public struct BitmapLook: Sendable, Equatable {
    /// Whether the set is regular: evenly spaced pages, or runs.
    public var regular: Bool

    public init(regular: Bool) {
        self.regular = regular
    }
}

extension MMU {
    /// Windows a look reads, and words per window: at most 256 words, 32
    /// lines, in four sequential runs the prefetchers follow.
    public static let lookWindows = 4
    public static let lookWindowWords = 64
    /// Gaps a window records.
    public static let lookGapsPerWindow = 16

    /// A look at a bitmap: in four windows of 64 words, starting at its
    /// quarters, the gaps between consecutive dirty pages (up to 16 each).
    /// Regular when one gap makes up three in four of at least four gaps
    /// (a sparser set shows too few to tell, and counts as scattered).
    @inline(__always)
    public static func lookAtBitmap(_ bitmap: UnsafePointer<UInt64>, words: Int) -> BitmapLook {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * lookWindows * lookGapsPerWindow) { buf in
            let gaps = buf.baseAddress!, counts = gaps + lookWindows * lookGapsPerWindow
            var distinct = 0, sampled = 0
            var q = 0
            while q < lookWindows {
                let start = words &* q / lookWindows
                let end = min(words, start &+ lookWindowWords)
                var last = -1, inWindow = 0
                var i = start
                scan: while i < end {
                    var x = bitmap[i]
                    while x != 0 {
                        let bit = i << 6 | x.trailingZeroBitCount
                        x &= x &- 1
                        if last >= 0 {
                            let g = bit &- last
                            sampled &+= 1
                            var j = 0
                            while j < distinct && gaps[j] != g { j &+= 1 }
                            if j == distinct { gaps[j] = g; counts[j] = 0; distinct &+= 1 }
                            counts[j] &+= 1
                            inWindow &+= 1
                            if inWindow == lookGapsPerWindow { break scan }
                        }
                        last = bit
                    }
                    i &+= 1
                }
                q &+= 1
            }
            var most = 0
            for j in 0..<distinct where counts[j] > most { most = counts[j] }
            let regular = sampled >= 4 && most &* 4 >= sampled &* 3
            return BitmapLook(regular: regular)
        }
    }
}
