import Foundation

/// The adaptive rule's cost model: what each candidate would take for this
/// harvest, from constants measured on this VM on this machine.
///
///     masked, tdp-masked, rmap:          fixed + dirty · perPage(ρ)
///     slot-walk, rmap-walk, tdp-walk:    fixed + edges · perEdge
///
/// `fixed` is what a candidate costs whatever is dirty: scanning the bitmap
/// for the first three; walking the list, the rmaps or the tree for the
/// walks. For the first three each dirty page adds its rmap or tree
/// descent, cheaper when pages cluster: ρ is the dirty pages per non-zero
/// bitmap word, 1 (isolated) to 64 (full words), and perPage(ρ) runs
/// geometrically between what an isolated page and a page among
/// neighbours cost. The walks read every spte anyway; what dirty pages add
/// is the scan's branch on the writable bit going the other way: `edges`
/// counts the places where a dirty page meets a clean one.
///
/// Both per-page and per-edge costs come in two kinds, measured apart,
/// because the hardware's prefetchers and branch predictors see two
/// kinds of dirty set: regular ones (evenly spaced pages, runs), whose
/// addresses and branches they predict, and scattered ones (random pages),
/// whose they do not. The rule tells them apart from a sample of the gaps
/// between dirty pages.
///
/// The rule knows the dirty count without looking (nr_dirty_pages); it
/// makes its one pass over the bitmap (non-zero words, edges, sampled gaps)
/// only when the cheapest candidate depends on them.
public struct CostModel: Sendable, Equatable {
    public var calibrated = false
    public var masked = CandidateCost()
    public var tdpMasked = CandidateCost()
    public var rmap = CandidateCost()
    public var slotWalk = CandidateCost()
    public var rmapWalk = CandidateCost()
    public var tdpWalk = CandidateCost()
    /// Whether the VM has the two-dimensional-paging structure the tdp
    /// strategies walk.
    public var hasTDP = false
    /// A lock round trip, for the report (rmap pays one per page: its
    /// per-page cost includes it).
    public var lockRoundTripNs = 0.0

    public init() {}

    /// The constants by name, for reports.
    public var constants: [(String, Double)] {
        var c: [(String, Double)] = []
        for (name, k) in [("masked", masked), ("rmap", rmap), ("slot-walk", slotWalk), ("rmap-walk", rmapWalk)]
            + (hasTDP ? [("tdp-masked", tdpMasked), ("tdp-walk", tdpWalk)] : []) {
            c.append(("\(name) fixed_ns", k.fixed))
            if name.hasSuffix("walk") {
                c += [("\(name) per_edge_regular_ns", k.perEdge.regular), ("\(name) per_edge_scattered_ns", k.perEdge.scattered)]
            } else {
                c += [("\(name) per_page_regular_isolated_ns", k.perPage.regular.sparse),
                      ("\(name) per_page_scattered_isolated_ns", k.perPage.scattered.sparse),
                      ("\(name) per_page_clustered_ns", k.perPage.regular.dense)]
            }
        }
        return c + [("lock_round_trip_ns", lockRoundTripNs)]
    }

    @inline(__always)
    func candidate(_ s: Strategy) -> CandidateCost? {
        switch s {
        case .masked: masked
        case .rmap: rmap
        case .slotWalk: slotWalk
        case .rmapWalk: rmapWalk
        case .tdpMasked: hasTDP ? tdpMasked : nil
        case .tdpWalk: hasTDP ? tdpWalk : nil
        default: nil
        }
    }

    /// The predicted cost of `s` for `dirty` pages of the given shape.
    @inline(__always)
    public func predict(_ s: Strategy, dirty: Int, shape: BitmapShape) -> Double {
        guard let c = candidate(s) else { return .infinity }
        let rho = dirty / max(1, shape.nonZeroWords)
        let perPage = shape.regular ? c.perPage.regular.cost(rho: rho) : c.perPage.scattered.cost(rho: rho)
        let perEdge = shape.regular ? c.perEdge.regular : c.perEdge.scattered
        return c.fixed + Double(dirty) * perPage + Double(shape.edges) * perEdge
    }

    /// The cheapest candidate for `dirty` pages in a slot of `pages` pages
    /// (a `words`-word bitmap). `measure` (one pass over the bitmap) is
    /// called only when the answer depends on how the pages lie: when the
    /// cheapest differs between the extremes the count allows (all in runs;
    /// one per word, evenly spaced; one per word, scattered).
    @inline(__always)
    public func choose(dirty: Int, pages: Int, words: Int, measure: () -> BitmapShape) -> Strategy {
        guard calibrated, dirty > 0 else { return .masked }
        let spreadWords = min(dirty, words)
        let spreadEdges = 2 &* min(dirty, pages &- dirty)
        let a = cheapest(dirty: dirty, shape: BitmapShape(nonZeroWords: (dirty &+ 63) >> 6, edges: dirty >= pages ? 0 : 2, regular: true))
        let b = cheapest(dirty: dirty, shape: BitmapShape(nonZeroWords: spreadWords, edges: spreadEdges, regular: true))
        let c = cheapest(dirty: dirty, shape: BitmapShape(nonZeroWords: spreadWords, edges: spreadEdges, regular: false))
        if a == b && b == c { return a }
        return cheapest(dirty: dirty, shape: measure())
    }

    @inline(__always)
    func cheapest(dirty: Int, shape: BitmapShape) -> Strategy {
        var best = Strategy.masked
        var cost = predict(.masked, dirty: dirty, shape: shape)
        consider(.rmap, dirty: dirty, shape: shape, best: &best, cost: &cost)
        consider(.slotWalk, dirty: dirty, shape: shape, best: &best, cost: &cost)
        consider(.rmapWalk, dirty: dirty, shape: shape, best: &best, cost: &cost)
        if hasTDP {
            consider(.tdpMasked, dirty: dirty, shape: shape, best: &best, cost: &cost)
            consider(.tdpWalk, dirty: dirty, shape: shape, best: &best, cost: &cost)
        }
        return best
    }

    @inline(__always)
    func consider(_ s: Strategy, dirty: Int, shape: BitmapShape, best: inout Strategy, cost: inout Double) {
        let c = predict(s, dirty: dirty, shape: shape)
        if c < cost {
            best = s
            cost = c
        }
    }
}

/// One candidate's cost: `fixed + dirty · perPage(ρ) + edges · perEdge`,
/// the per-page and per-edge costs for regular and for scattered sets.
public struct CandidateCost: Sendable, Equatable {
    public var fixed = 0.0
    public var perPage = Kinds(regular: PerPageCurve(), scattered: PerPageCurve())
    public var perEdge = Kinds(regular: 0.0, scattered: 0.0)

    public struct Kinds<T: Equatable & Sendable>: Sendable, Equatable {
        public var regular: T
        public var scattered: T
        public init(regular: T, scattered: T) {
            self.regular = regular
            self.scattered = scattered
        }
    }

    public init() {}
}

/// What the rule's one pass over the bitmap sees.
public struct BitmapShape: Sendable, Equatable {
    public var nonZeroWords: Int
    /// Places where a set bit meets a clear one.
    public var edges: Int
    /// Whether the sampled gaps between dirty pages are mostly one value
    /// shorter than 512 pages (evenly spaced pages, or runs): a set the
    /// hardware predicts.
    public var regular: Bool

    public init(nonZeroWords: Int, edges: Int, regular: Bool) {
        self.nonZeroWords = nonZeroWords
        self.edges = edges
        self.regular = regular
    }
}

/// A per-page cost that runs geometrically from isolated pages (one per
/// bitmap word) at ρ = 1 to pages among neighbours at ρ = `denseRho`,
/// looked up by the octave of ρ: no logarithm at harvest time.
public struct PerPageCurve: Sendable, Equatable {
    public let sparse: Double
    public let dense: Double
    private let steps: (Double, Double, Double, Double, Double, Double, Double)

    public init(sparse: Double = 0, dense: Double = 0, denseRho: Double = 64) {
        self.sparse = sparse
        self.dense = dense
        let span = max(1, log2(max(2, denseRho)))
        func at(_ k: Double) -> Double {
            let f = min(1, k / span)
            return sparse > 0 && dense > 0 ? sparse * pow(dense / sparse, f) : max(sparse, dense)
        }
        steps = (at(0), at(1), at(2), at(3), at(4), at(5), at(6))
    }

    /// The cost per page when `rho` pages share each non-zero word.
    @inline(__always)
    public func cost(rho: Int) -> Double {
        switch 63 &- max(1, rho).leadingZeroBitCount {
        case 0: steps.0
        case 1: steps.1
        case 2: steps.2
        case 3: steps.3
        case 4: steps.4
        case 5: steps.5
        default: steps.6
        }
    }

    public static func == (a: PerPageCurve, b: PerPageCurve) -> Bool { a.sparse == b.sparse && a.dense == b.dense }
}

extension MMU {
    /// A bitmap's shape in one pass: its non-zero words; its edges (bit i
    /// differs from bit i - 1, across words too); and whether it is
    /// regular, from the gaps between consecutive dirty pages in four
    /// windows of up to 16 gaps, starting at each quarter of the bitmap:
    /// regular when the most frequent gap is at least three in four and
    /// shorter than a leaf table (512 pages).
    @inline(__always)
    public static func bitmapShape(_ bitmap: UnsafePointer<UInt64>, words: Int) -> BitmapShape {
        var nz = 0, edges = 0
        var carry: UInt64 = 0  // the previous word's top bit
        // Gap sampling: up to 4 windows × 16 gaps, kept in registers-sized state.
        var gaps: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)  // up to 8 distinct gaps
        var gapCounts: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
        var distinct = 0, sampled = 0, overflow = 0
        var window = 0, inWindow = 0, last = -1
        var nextWindowWord = 0
        var i = 0
        while i < words {
            let w = bitmap[i]
            nz &+= w != 0 ? 1 : 0
            edges &+= (w ^ (w << 1 | carry)).nonzeroBitCount
            carry = w >> 63
            if i >= nextWindowWord && window < 4 && w != 0 {
                var x = w
                while x != 0 && inWindow <= 16 {
                    let bit = i << 6 | x.trailingZeroBitCount
                    x &= x &- 1
                    if last >= 0 {
                        let g = bit &- last
                        sampled &+= 1
                        var found = false
                        withUnsafeMutableBytes(of: &gaps) { gb in
                            withUnsafeMutableBytes(of: &gapCounts) { cb in
                                let gp = gb.bindMemory(to: Int.self), cp = cb.bindMemory(to: Int.self)
                                var j = 0
                                while j < distinct { if gp[j] == g { cp[j] &+= 1; found = true; break }; j &+= 1 }
                                if !found {
                                    if distinct < 8 { gp[distinct] = g; cp[distinct] = 1; distinct &+= 1 } else { overflow &+= 1 }
                                }
                            }
                        }
                    }
                    last = bit
                    inWindow &+= 1
                }
                if inWindow > 16 {
                    window &+= 1
                    inWindow = 0
                    last = -1
                    nextWindowWord = words &* window / 4
                }
            }
            i &+= 1
        }
        // The most frequent gap, and whether it is short enough for the
        // prefetchers, which stop at 4 KiB pages: 512 gfns of 8-byte rmap
        // heads or sptes.
        var most = 0, mostGap = 0
        withUnsafeBytes(of: &gapCounts) { cb in
            withUnsafeBytes(of: &gaps) { gb in
                let cp = cb.bindMemory(to: Int.self), gp = gb.bindMemory(to: Int.self)
                for j in 0..<distinct where cp[j] > most { most = cp[j]; mostGap = gp[j] }
            }
        }
        _ = overflow
        let regular = sampled == 0 || (most &* 4 >= sampled &* 3 && mostGap < SPTE.perPage)
        return BitmapShape(nonZeroWords: nz, edges: edges &+ Int(carry), regular: regular)
    }
}
