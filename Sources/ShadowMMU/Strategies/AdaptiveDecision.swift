import DirtyLogCore

/// The adaptive rule as the harvest runs it: the decision table's layout,
/// the decision (one record read, and a look at the bitmap when the two
/// kinds of dirty set disagree), and where the table lives. The cost model
/// the table is built from, and its calibration, are the measuring side's
/// (BenchMeasure's `CostModel`, `DecisionTable.build`).

/// The adaptive rule reduced to what a decision needs: per density step
/// (`SpanDensity`), the page counts at which its choice changes, computed
/// once from the calibrated cost model (BenchMeasure's `CostModel`,
/// `DecisionTable.build`). A step's record is 32 bytes, two
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

    /// The candidates, in lane order: the choices' nibbles name them.
    public static let lanes: [Strategy] = (0..<laneCount).map(candidate(lane:))
    public static let laneCount = 6
    /// The lanes of the strategies that walk the two-dimensional-paging structure.
    public static let tdpLanes = [4, 5]

    /// The candidate of a lane, without touching an array on the harvest path.
    @inline(__always)
    public static func candidate(lane: Int) -> Strategy {
        switch lane {
        case 0: .masked
        case 1: .rmap
        case 2: .slotWalk
        case 3: .rmapWalk
        case 4: .tdpMasked
        default: .tdpWalk
        }
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
        if regular == scattered { return candidate(lane: regular) }
        return candidate(lane: look().regular ? regular : scattered)
    }
}


extension VirtualMachine {
    /// Installs a decision table of `DecisionTable.words` words (nil
    /// removes it: the rule then takes masked) where every slot's harvest
    /// reads it, with the page count below which it chooses one lane
    /// without looking (`small`).
    public func installDecisionTable(_ words: [UInt64]?, small: (pages: Int, lane: Int) = (0, 0)) {
        guard let words else {
            if let t = state.pointee.adaptive.table { arena.free(t) }
            state.pointee.adaptive.table = nil
            for slot in slots { slot.view.state.pointee.decisionTable = nil }
            return
        }
        precondition(words.count == DecisionTable.words)
        if state.pointee.adaptive.table == nil {
            state.pointee.adaptive.table = arena.allocate(UInt64.self, count: DecisionTable.words, alignment: 64)
        }
        let t = state.pointee.adaptive.table!
        for i in 0..<words.count { t[i] = words[i] }
        for slot in slots {
            slot.view.state.pointee.decisionTable = t
            slot.view.state.pointee.decisionSmallPages = small.pages
            slot.view.state.pointee.decisionSmallLane = small.lane
        }
    }
}

/// The adaptive rule's decision table (`DecisionTable`), in the VM's
/// arena, nil before calibration; each slot's state holds its address too.
public struct AdaptiveState {
    public var table: UnsafeMutablePointer<UInt64>? = nil
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
        if pages > 0 && pages < state.pointee.decisionSmallPages { return DecisionTable.candidate(lane: state.pointee.decisionSmallLane) }
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
