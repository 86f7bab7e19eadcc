import CAtomics
import DirtyLogCore

/// What a range walk does after visiting an entry (`walkTables`).
enum WalkStep {
    /// On to the next entry.
    case next
    /// The same entry again (a cmpxchg lost to another thread).
    case retry
    /// Into this child table (the entry's, as the visitor read it), then on.
    case descend(UnsafeMutablePointer<UInt64>)
}

/// What one walk over the paging structure does at each entry: the
/// visitor half of the kernel's for_each_tdp_pte_min_level() /
/// for_each_shadow_entry() family. `walkTables` clips every table to the
/// gfn range and recurses where the visitor says; the visitor decides
/// everything else (what it counts, protects, splits or zaps, when it
/// yields mmu_lock).
protocol TableVisitor {
    /// A table at `level` is entered. False: skip its entries.
    mutating func enter(table: UnsafeMutablePointer<UInt64>, level: Int) -> Bool
    /// Entry `e` of a table at `level`, which maps the gfns from `gfn`.
    mutating func visit(_ e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int) -> WalkStep
    /// Back from the child of `e`, which `visit` descended into.
    mutating func ascended(from e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int)
}

extension TableVisitor {
    @inline(__always) mutating func enter(table: UnsafeMutablePointer<UInt64>, level: Int) -> Bool { true }
    @inline(__always) mutating func ascended(from e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int) {}
}

extension SPTE {
    /// The entry of `table` (at `level`) on the walk for `gfn`: its 9-bit
    /// index at that level (SPTE_INDEX()).
    @inline(__always)
    static func entry(in table: UnsafeMutablePointer<UInt64>, gfn: GFN, level: Int) -> UnsafeMutablePointer<UInt64> {
        table + Int((gfn.rawValue >> (levelBits &* UInt64(level &- 1))) & 511)
    }

    /// The entries of a table at `level` that maps the gfns from `base`
    /// which overlap [start, end): the one way every walk clips a table to
    /// a slot's range.
    @inline(__always)
    static func entries(level: Int, base: UInt64, overlapping start: UInt64, _ end: UInt64) -> Range<Int> {
        guard base < end else { return 0..<0 }
        let span = pagesPerLeaf(level: level)
        let lo = start > base ? Int(min(512, (start &- base) / span)) : 0
        let hi = Int(min(511, (end &- 1 &- base) / span))
        return lo <= hi ? lo..<(hi &+ 1) : 0..<0
    }
}

/// for_each_tdp_pte over [start, end): every entry of `table` (at `level`,
/// mapping the gfns from `base`) that overlaps the range, and below it the
/// child tables `visitor` descends into.
func walkTables<V: TableVisitor>(_ table: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64,
                                 start: UInt64, end: UInt64, _ visitor: inout V) {
    guard visitor.enter(table: table, level: level) else { return }
    let range = SPTE.entries(level: level, base: base, overlapping: start, end)
    let span = pagesPerLeaf(level: level)
    var i = range.lowerBound
    while i < range.upperBound {
        let e = table + i
        let gfn = base &+ UInt64(i) &* span
        switch visitor.visit(e, gfn: gfn, level: level) {
        case .next:
            i &+= 1
        case .retry:
            continue
        case .descend(let child):
            walkTables(child, level: level &- 1, base: gfn, start: start, end: end, &visitor)
            visitor.ascended(from: e, gfn: gfn, level: level)
            i &+= 1
        }
    }
}

extension MMU {
    /// Every present leaf of the guest's tree (the direct tree, or shadow
    /// paging's address space 0) that overlaps slot `s`, in gfn order: the
    /// first gfn it maps, its level and its value. For the untimed paths:
    /// the lifecycle's checks (BenchMeasure's `LeafCensus`) and snapshots.
    public func forEachGuestLeaf(slot s: SlotView, _ body: (_ gfn: UInt64, _ level: Int, _ spte: UInt64) -> Void) {
        withoutActuallyEscaping(body) { body in
            var v = GuestLeafVisitor(body: body)
            walkTables(guestRootTable, level: VMLayout.rootLevel, base: 0, start: s.baseGFN.rawValue, end: s.endGFN.rawValue, &v)
        }
    }
}

/// `MMU.forEachGuestLeaf`'s visit: leaves to the body, tables descended.
private struct GuestLeafVisitor: TableVisitor {
    let body: (UInt64, Int, UInt64) -> Void

    mutating func visit(_ e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int) -> WalkStep {
        let spte = e.pointee
        guard isShadowPresentSPTE(spte) else { return .next }
        if level == 1 || isLargeSPTE(spte) {
            body(gfn, level, spte)
            return .next
        }
        return .descend(SPTE.childTable(spte))
    }
}
