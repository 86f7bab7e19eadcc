import DirtyLogCore
import ShadowMMU

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

    /// The candidates, in lane order (`DecisionTable.candidate(lane:)`).
    public static let lanes: [Strategy] = DecisionTable.lanes
    static let laneCount = DecisionTable.laneCount
    static let tdpLanes = DecisionTable.tdpLanes

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
        let on = !DecisionTable.candidate(lane: lane).needsTDP || hasTDP
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
            return (DecisionTable.candidate(lane: i), Double(m))
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
}

/// The constants' layout: for each kind (regular, then scattered), one row
/// of fixed costs, then one row per step of ρ, a lane per candidate (lanes
/// past the candidates, and unavailable ones, infinitely dear). A decision
/// reads the fixed row and the two rows around ρ of each kind: six lines
/// of 32 bytes, all it touches.
struct CostRows {
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
        if ir == iS { return DecisionTable.candidate(lane: ir) }
        return DecisionTable.candidate(lane: look().regular ? ir : iS)
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

