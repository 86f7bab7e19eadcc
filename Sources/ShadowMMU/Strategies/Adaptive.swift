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
        didSet {
            tables.0.available(Self.tdpLanes, hasTDP)
            tables.1.available(Self.tdpLanes, hasTDP)
        }
    }
    /// What a look at the bitmap costs, cold (ns).
    public var lookNs = 0.0
    /// The constants, one table per kind, a lane per candidate: deciding
    /// reads three rows of each (fixed, and the two steps of ρ around it), a
    /// few cache lines, since at harvest time both the constants and the
    /// code are cold.
    var tables = (CostTable(), CostTable())

    /// The candidates, in lane order (`candidate(lane:)`).
    public static let lanes: [Strategy] = (0..<laneCount).map(candidate(lane:))
    static let laneCount = 6
    static let tdpLanes = [4, 5]

    public init() {}

    /// A candidate's constants; nil for a strategy the rule does not
    /// consider (or a tdp one on a VM without the structure).
    public func candidate(_ s: Strategy) -> CandidateCost? {
        guard let i = Self.lanes.firstIndex(of: s), !s.needsTDP || hasTDP else { return nil }
        return CandidateCost(regular: tables.0.cost(lane: i), scattered: tables.1.cost(lane: i))
    }

    /// Sets a candidate's constants.
    public mutating func set(_ s: Strategy, _ c: CandidateCost) {
        guard let i = Self.lanes.firstIndex(of: s) else { preconditionFailure("\(s) is not a candidate of the adaptive rule") }
        tables.0.set(lane: i, c.regular)
        tables.1.set(lane: i, c.scattered)
        tables.0.available([i], !s.needsTDP || hasTDP)
        tables.1.available([i], !s.needsTDP || hasTDP)
    }

    /// The cheapest candidate for `pages` dirty pages in `lines` spans.
    /// `look` (a few bitmap lines) is called only when the kinds disagree
    /// by more than it costs.
    @inline(__always)
    public func choose(pages: Int, lines: Int, look: () -> BitmapLook) -> Strategy {
        guard calibrated else { return .masked }
        // Nothing dirty: the seed era's protocol returns at once.
        guard pages > 0 else { return .rmap }
        let r = tables.0.costs(pages: pages, lines: lines), s = tables.1.costs(pages: pages, lines: lines)
        let (ir, bestR) = Self.argmin(r), (iS, bestS) = Self.argmin(s)
        if ir == iS { return Self.candidate(lane: ir) }
        // Blind: the candidate whose larger excess over the two kinds' bests is least.
        var blind = 0, least = Float.infinity
        var i = 0
        while i < Self.laneCount {
            let e = max(r[i] - bestR, s[i] - bestS)
            if e < least { least = e; blind = i }
            i &+= 1
        }
        if Double(least) <= lookNs { return Self.candidate(lane: blind) }
        return Self.candidate(lane: look().regular ? ir : iS)
    }

    /// The cheapest candidate of a kind and its predicted cost.
    public func cheapest(pages: Int, lines: Int, _ kind: DirtySetKind) -> (strategy: Strategy, cost: Double) {
        let (i, m) = Self.argmin(kind == .regular ? tables.0.costs(pages: pages, lines: lines) : tables.1.costs(pages: pages, lines: lines))
        return (Self.candidate(lane: i), Double(m))
    }

    /// The predicted cost of `s` (infinite for one the VM cannot run).
    public func predict(_ s: Strategy, pages: Int, lines: Int, _ kind: DirtySetKind) -> Double {
        guard let i = Self.lanes.firstIndex(of: s) else { return .infinity }
        return Double((kind == .regular ? tables.0 : tables.1).costs(pages: pages, lines: lines)[i])
    }

    /// The cheapest lane and its cost, first on ties.
    @inline(__always)
    static func argmin(_ v: SIMD8<Float>) -> (Int, Float) {
        var best = 0, m = v[0]
        var i = 1
        while i < laneCount {
            if v[i] < m { m = v[i]; best = i }
            i &+= 1
        }
        return (best, m)
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

    public static func == (a: CostModel, b: CostModel) -> Bool {
        a.calibrated == b.calibrated && a.hasTDP == b.hasTDP && a.lookNs == b.lookNs && a.tables.0 == b.tables.0 && a.tables.1 == b.tables.1
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

/// One kind's constants for every candidate: a lane per candidate, lanes
/// past the candidates (and unavailable ones) infinitely dear.
struct CostTable: Sendable, Equatable {
    var fixed = SIMD8<Float>(repeating: .infinity)
    /// Per-page cost at each step of ρ, stored inline: reading two rows
    /// touches those two rows.
    var perPage = InlineArray<37, SIMD8<Float>>(repeating: SIMD8(repeating: 0))
    /// The fixed costs as set, kept apart so a lane can be disabled and re-enabled.
    var setFixed = SIMD8<Float>(repeating: .infinity)

    /// Every candidate's predicted cost: ρ = pages / lines, the step below
    /// it and the linear position to the next, the per-page cost read
    /// between the two.
    @inline(__always)
    func costs(pages: Int, lines: Int) -> SIMD8<Float> {
        let (k, t) = SpanDensity.position(Float(pages) / Float(max(1, lines)))
        let lo = perPage[k], hi = perPage[min(k &+ 1, SpanDensity.steps &- 1)]
        return fixed + (lo + (hi - lo) * t) * Float(pages)
    }

    func cost(lane i: Int) -> PerPageCost {
        PerPageCost(fixed: Double(setFixed[i]), perPage: (0..<SpanDensity.steps).map { Double(perPage[$0][i]) })
    }

    static func == (a: CostTable, b: CostTable) -> Bool {
        a.fixed == b.fixed && a.setFixed == b.setFixed && (0..<SpanDensity.steps).allSatisfy { a.perPage[$0] == b.perPage[$0] }
    }

    mutating func set(lane i: Int, _ c: PerPageCost) {
        precondition(c.perPage.count == SpanDensity.steps && perPage.count == SpanDensity.steps)
        setFixed[i] = Float(c.fixed)
        fixed[i] = Float(c.fixed)
        for k in 0..<SpanDensity.steps { perPage[k][i] = Float(c.perPage[k]) }
    }

    mutating func available(_ lanes: [Int], _ on: Bool) {
        for i in lanes { fixed[i] = on ? setFixed[i] : .infinity }
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
