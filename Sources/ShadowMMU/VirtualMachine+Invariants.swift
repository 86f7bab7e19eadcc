import CAtomics
import Dispatch
import DirtyLogCore

/// A value handed to another thread that only reads what it points at,
/// while this one waits for it.
private struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// What the invariant checker found: nothing, or the first few violations
/// and how many there were in all.
public struct InvariantReport: Sendable, CustomStringConvertible {
    public private(set) var violations: [String] = []
    public private(set) var count = 0
    static let kept = 8

    public init() {}

    public var ok: Bool { count == 0 }

    mutating func fail(_ message: @autoclosure () -> String) {
        if violations.count < Self.kept { violations.append(message()) }
        count += 1
    }

    public mutating func merge(_ other: InvariantReport) {
        for v in other.violations where violations.count < Self.kept { violations.append(v) }
        count += other.count
    }

    public var description: String {
        ok ? "ok" : "\(count) violation(s): " + violations.joined(separator: "; ") + (count > violations.count ? "; ..." : "")
    }
}

/// When the check runs, which decides what an unprotected leaf means.
public enum CheckPoint: Sendable {
    /// Right after a protection: no leaf of a logging slot may be writable
    /// (or, for a dirty-bit slot, dirty).
    case afterProtection
    /// While the guest runs: such a leaf must map a page that is logged:
    /// its bit set in the current bitmap, an entry pending in a dirty ring,
    /// or a frame waiting in a PML buffer.
    case betweenProtections
}

extension VirtualMachine {
    /// The whole invariant, over every shadow page and every rmap of the VM:
    ///
    /// - n_used_mmu_pages equals the pages on `active_mmu_pages`, which equals
    ///   the live pages (allocated, not freed or zapped);
    /// - every present leaf spte sits in its gfn's rmap, at its level, exactly
    ///   once, its page's slot bitmap has the slot, and no rmap holds anything
    ///   else (a VM without rmaps, as the TDP MMU keeps its sptes: every
    ///   rmap empty);
    /// - the page statistics (pages_4k, pages_2m, pages_1g) count the
    ///   present leaves of each level;
    /// - a logging slot's writable leaves obey `point`; a large leaf there
    ///   is read-only, or, between protections, every page it maps is
    ///   logged (initially-set: the bitmap starts all ones);
    /// - nr_dirty_pages equals the bits set in the current bitmap, and the
    ///   count of dirty lines its non-zero lines;
    /// - when given, the bitmap a harvest handed out equals `expected`.
    ///
    /// The rmap condition is checked as an equality of multisets: the shadow
    /// pages are scanned in list order and the rmaps in gfn order, each side
    /// summing a 64-bit hash of (spte address, level, rmap index) and counting
    /// entries per slot. Both passes are sequential, so the check costs about
    /// two slot walks instead of a random rmap search per spte. Only when the
    /// sums differ does a precise pass search each spte's rmap, to name the
    /// sptes at fault.
    public func checkInvariants(slotID: Int, at point: CheckPoint,
                                harvested: UnsafePointer<UInt64>? = nil,
                                expected: UnsafePointer<UInt64>? = nil) -> InvariantReport {
        var report = InvariantReport()
        withMMU { mmu in
            let cols = mmu.pages
            let logged = point == .betweenProtections ? loggedGFNs(mmu) : []
            var pageSide = [RmapDigest](repeating: RmapDigest(), count: 64)
            // The rmaps' side on another thread meanwhile: both only read.
            let rmapSides = UnsafeMutableBufferPointer<RmapDigest>.allocate(capacity: mmu.memslots.count)
            rmapSides.initialize(repeating: RmapDigest())
            defer { rmapSides.deallocate() }
            let rmapsDone = DispatchSemaphore(value: 0)
            let memslots = UnsafeSendable(mmu.memslots), sides = UnsafeSendable(rmapSides)
            DispatchQueue.global().async {
                for (si, s) in memslots.value.enumerated() { sides.value[si] = Self.rmapDigest(s) }
                rmapsDone.signal()
            }
            var leaves = LeafCounts()
            let onList = mmu.forEachLeafSPTE(limit: table.rowsUsed + 1) { sptep, p, i, level in
                let spte = sptep.pointee
                let gfn = cols.gfn(ofPage: p, index: i)
                leaves[level] += 1
                guard let s = mmu.gfnToMemslot(gfn) else {
                    report.fail("page \(p) index \(i) maps gfn \(gfn), in no slot")
                    return
                }
                pageSide[s.id].add(sptep: sptep, level: level, index: s.index(of: gfn, level: level))
                if cols.slotBitmap[p] & (1 << UInt64(s.id)) == 0 {
                    report.fail("page \(p) holds a leaf of slot \(s.id) but its slot bitmap lacks it")
                }
                guard s.state.pointee.dirtyLogging else { return }
                if isLargeSPTE(spte) {
                    guard isWritableSPTE(spte) else { return }
                    if point == .afterProtection || !Self.regionLogged(s, gfn: gfn, level: level) {
                        report.fail("writable \(level == 2 ? "2 MiB" : "1 GiB") leaf for gfn \(gfn) in logging slot \(s.id) with pages not logged")
                    }
                    return
                }
                let dirtyBitMode = s.state.pointee.protection == .dirtyBit
                if dirtyBitMode ? spte & SPTE.dirty != 0 : isWritableSPTE(spte) {
                    let what = dirtyBitMode ? "dirty" : "writable"
                    switch point {
                    case .afterProtection:
                        report.fail("gfn \(gfn) left \(what) (page \(p) index \(i)) after protection")
                    case .betweenProtections:
                        if !logged.contains(gfn) { report.fail("gfn \(gfn) is \(what) but not logged") }
                    }
                }
            }
            let nUsed = mmu.vm.pointee.nUsedMMUPages
            if onList != nUsed || nUsed != shadowPagesAllocated {
                report.fail("n_used_mmu_pages \(nUsed), \(onList) on active_mmu_pages, \(shadowPagesAllocated) live")
            }
            if leaves != leafPages {
                report.fail("page statistics say \(leafPages) but the tables hold \(leaves) present leaves")
            }
            rmapsDone.wait()
            let rmaps = mmu.vm.pointee.memslotsHaveRmaps
            for (si, s) in mmu.memslots.enumerated() {
                let rmapSide = rmapSides[si]
                if !rmaps {
                    if rmapSide.count != 0 { report.fail("slot \(s.id): \(rmapSide.count) rmap entries in a VM without rmaps") }
                } else if rmapSide != pageSide[s.id] {
                    report.fail("slot \(s.id): rmaps hold \(rmapSide.count) entries for \(pageSide[s.id].count) leaf sptes, or not the same ones")
                    locateRmapFaults(mmu: mmu, slot: s, into: &report)
                }
                let bits = DirtyBitmap.popcount(s.dirtyBitmap, words: s.bitmapWords)
                if mmu.vm.pointee.dirtyRing {
                    let pending = mmu.vcpus.reduce(0) { $0 + $1.dirtyIndex - $1.resetIndex }
                    if bits != 0 { report.fail("slot \(s.id): \(bits) bitmap bits set while logging to dirty rings") }
                    if s.id == slotID && s.state.pointee.nrDirtyPages != pending {
                        report.fail("slot \(s.id): nr_dirty_pages \(s.state.pointee.nrDirtyPages) but \(pending) ring entries pending")
                    }
                } else {
                    if bits != s.state.pointee.nrDirtyPages {
                        report.fail("slot \(s.id): nr_dirty_pages \(s.state.pointee.nrDirtyPages) but \(bits) bits set")
                    }
                    let lines = DirtyBitmap.nonZeroLines(s.dirtyBitmap, words: s.bitmapWords)
                    if lines != s.state.pointee.nrDirtyLines {
                        report.fail("slot \(s.id): \(s.state.pointee.nrDirtyLines) dirty lines counted but \(lines) in the bitmap")
                    }
                }
            }
            if let h = harvested, let e = expected {
                report.merge(compareHarvest(slot: mmu.slot(id: slotID), harvested: h, expected: e))
            }
        }
        return report
    }

    /// Whether every page of `gfn`'s region at `level` is set in the
    /// slot's current bitmap.
    static func regionLogged(_ s: SlotView, gfn: GFN, level: Int) -> Bool {
        let span = Int(pagesPerLeaf(level: level))
        let first = s.offset(of: GFN(gfn.rawValue & ~UInt64(span - 1))).index
        let b = s.dirtyBitmap
        var w = first >> 6
        let end = (first + span) >> 6
        while w < end {
            if b[w] != ~0 { return false }
            w += 1
        }
        return true
    }

    /// The multiset digest of every (spte, level, index) the slot's rmaps hold.
    private static func rmapDigest(_ s: SlotView) -> RmapDigest {
        var d = RmapDigest()
        for level in 1...3 {
            let (heads, n) = s.rmaps(level: level)
            for i in 0..<n where heads[i] != 0 {
                // Descriptors lie in allocation order, not gfn order: fetch ahead.
                if i + 16 < n, heads[i + 16] & 1 != 0 { ca_prefetch(UnsafeRawPointer(bitPattern: heads[i + 16] & ~1)) }
                var it = RmapIterator(heads[i])
                while let e = it.next() { d.add(sptep: e, level: level, index: i) }
            }
        }
        return d
    }

    /// Every gfn logged and not yet harvested: bitmap bits, pending ring
    /// entries, frames in PML buffers.
    private func loggedGFNs(_ mmu: MMU) -> Set<GFN> {
        var out = Set<GFN>()
        for s in mmu.memslots {
            DirtyBitmap.forEachSetBit(s.dirtyBitmap, words: s.bitmapWords) { out.insert(s.gfn(at: $0)) }
        }
        for v in mmu.vcpus {
            var i = v.resetIndex
            while i != v.dirtyIndex {
                let e = v.ring[i & (v.ringEntries - 1)]
                if let s = mmu.memslots.first(where: { $0.id == Int(e.slot) }) { out.insert(s.gfn(at: SlotOffset(Int(e.offset)))) }
                i += 1
            }
            for j in 0..<v.pmlCount { out.insert(v.pml[j]) }
        }
        return out
    }

    /// The precise pass: search each leaf spte of the slot in its rmap and
    /// name those found other than once.
    private func locateRmapFaults(mmu: MMU, slot s: SlotView, into report: inout InvariantReport) {
        let cols = mmu.pages
        mmu.forEachLeafSPTE(limit: table.rowsUsed) { sptep, p, i, level in
            let gfn = cols.gfn(ofPage: p, index: i)
            guard s.contains(gfn) else { return }
            var seen = 0
            var it = RmapIterator(s.rmapHead(gfn: gfn, level: level).pointee)
            while let e = it.next() { if e == sptep { seen += 1 } }
            if seen != 1 {
                report.fail("spte of gfn \(gfn) (page \(p) index \(i), level \(level)) is on its rmap \(seen) times")
            }
        }
    }

    /// The check that runs after every measured protection, outside the
    /// timed region:
    ///
    /// - no leaf spte the round's writes could have made writable is still
    ///   writable, and none is a large leaf;
    /// - the handed-out bitmap equals the written set, the new current one is
    ///   empty (nothing was written since) and n_used_mmu_pages is unchanged.
    ///
    /// The fault path is the only writer of the writable bit, so the sptes of
    /// the written pages are the only ones a round can have made writable.
    /// For a few pages they are reached through their rmaps; once that would
    /// cost more than a sequential pass over the slot's tables, every leaf of
    /// the slot is scanned instead, which checks the stronger claim that no
    /// leaf of the slot is writable. `checkInvariants` covers everything
    /// else; the bench runs it at the end of every point.
    public func checkProtected(slotID: Int, written: UnsafeBufferPointer<SlotOffset>,
                               harvested: UnsafePointer<UInt64>, expected: UnsafePointer<UInt64>) -> InvariantReport {
        var report = InvariantReport()
        withMMU { mmu in
            let s = mmu.slot(id: slotID)
            let cols = mmu.pages
            let dirtyBitMode = s.state.pointee.protection == .dirtyBit
            let unprotected = dirtyBitMode ? SPTE.dirty : SPTE.writable
            let what = dirtyBitMode ? "dirty" : "writable"
            let slotTables = mmu.slotTableCount(s)
            // A random rmap visit costs about as much as scanning 32 sptes in
            // order; without rmaps, the scan it is.
            if written.count * 32 >= slotTables * SPTE.perPage || !mmu.vm.pointee.memslotsHaveRmaps {
                mmu.forEachLeafSPTE(inTablesOf: s) { sptep, p, i, _ in
                    let spte = sptep.pointee
                    guard spte & unprotected != 0 else { return }
                    let gfn = cols.gfn(ofPage: p, index: i)
                    guard s.contains(gfn) else { return }
                    report.fail(isLargeSPTE(spte) ? "gfn \(gfn) has a writable large leaf in a logging slot"
                                                  : "gfn \(gfn) left \(what) (page \(p) index \(i)) after protection")
                }
            } else {
                for off in written {
                    let gfn = s.gfn(at: off)
                    var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
                    var n = 0
                    while let e = it.next() {
                        n += 1
                        if e.pointee & unprotected != 0 { report.fail("gfn \(gfn) left \(what) after protection") }
                    }
                    if n == 0 { report.fail("gfn \(gfn) was written but has no spte") }
                    for level in 2...3 {
                        var large = RmapIterator(s.rmapHead(gfn: gfn, level: level).pointee)
                        while let e = large.next() {
                            if isWritableSPTE(e.pointee) { report.fail("gfn \(gfn) has a writable large leaf in a logging slot") }
                        }
                    }
                }
            }
            report.merge(compareHarvest(slot: s, harvested: harvested, expected: expected))
            if s.state.pointee.nrDirtyPages != 0 || s.state.pointee.nrDirtyLines != 0 {
                report.fail("nr_dirty_pages \(s.state.pointee.nrDirtyPages), dirty lines \(s.state.pointee.nrDirtyLines) right after a harvest")
            }
            if DirtyBitmap.popcount(s.dirtyBitmap, words: s.bitmapWords) != 0 {
                report.fail("the current bitmap is not empty right after a harvest")
            }
            for (i, v) in mmu.vcpus.enumerated() {
                if v.pmlCount != 0 { report.fail("vCPU \(i): \(v.pmlCount) frames left in its PML buffer") }
                if v.dirtyIndex != v.fetchIndex || v.dirtyIndex != v.resetIndex {
                    report.fail("vCPU \(i): dirty ring not drained (pushed \(v.dirtyIndex), collected \(v.fetchIndex), reset \(v.resetIndex))")
                }
            }
            let nUsed = mmu.vm.pointee.nUsedMMUPages
            if nUsed != shadowPagesAllocated { report.fail("n_used_mmu_pages \(nUsed) but \(shadowPagesAllocated) pages live") }
        }
        return report
    }

    /// The log a harvest handed out equals `expected`, page for page: for
    /// the concurrent scenario, whose first check cannot yet ask for more
    /// (its vCPUs are still writing).
    public func checkHandedOut(slotID: Int, harvested: UnsafePointer<UInt64>, expected: UnsafePointer<UInt64>) -> InvariantReport {
        withMMU { compareHarvest(slot: $0.slot(id: slotID), harvested: harvested, expected: expected) }
    }

    /// The concurrent scenario's second check, after the harvest that
    /// followed the timed one with the vCPUs stopped: every page they
    /// wrote (`written`, the round's pages) was in the first log (checked
    /// by `checkHandedOut`) or is in this one, `next`; every page written
    /// after the first harvest returned is in `next`; `next` holds nothing
    /// else; and `checkProtected`'s conditions hold for `written`.
    public func checkNextHarvest(slotID: Int, written: UnsafeBufferPointer<SlotOffset>, next: UnsafePointer<UInt64>,
                                 writtenAfterFirst: UnsafeBufferPointer<SlotOffset>) -> InvariantReport {
        var report = InvariantReport()
        let s = slot(slotID)
        let words = s.bitmapWords
        let writtenBits = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
        writtenBits.initialize(repeating: 0, count: words)
        defer { writtenBits.deallocate() }
        for off in written { writtenBits[off.word] |= off.bit }
        let extra = DirtyBitmap.difference(next, writtenBits, words: words, limit: 4)
        if !extra.isEmpty { report.fail("the next harvest has pages no vCPU wrote \(extra)") }
        var lost = 0
        for off in writtenAfterFirst where next[off.word] & off.bit == 0 {
            if lost < 4 { report.fail("gfn \(s.gfn(at: off)) written after the harvest returned is not in the next log") }
            lost += 1
        }
        report.merge(checkProtected(slotID: slotID, written: written, harvested: next, expected: next))
        return report
    }

    private func compareHarvest(slot s: SlotView, harvested: UnsafePointer<UInt64>, expected: UnsafePointer<UInt64>) -> InvariantReport {
        var report = InvariantReport()
        let missing = DirtyBitmap.difference(expected, harvested, words: s.bitmapWords, limit: 4)
        let extra = DirtyBitmap.difference(harvested, expected, words: s.bitmapWords, limit: 4)
        if !missing.isEmpty { report.fail("harvest lacks written pages \(missing)") }
        if !extra.isEmpty { report.fail("harvest has unwritten pages \(extra)") }
        return report
    }
}

/// A multiset digest of (spte address, level, rmap index) triples: a count
/// and a wrapping sum of 64-bit hashes, equal for equal multisets and, for
/// any difference that is not adversarial, different with probability
/// 1 - 2^-64.
struct RmapDigest: Equatable {
    private(set) var count = 0
    private var sum: UInt64 = 0

    @inline(__always)
    mutating func add(sptep: UnsafeMutablePointer<UInt64>, level: Int, index: Int) {
        count += 1
        sum &+= mix64(UInt64(UInt(bitPattern: sptep)) ^ mix64(UInt64(index) << 2 | UInt64(level)))
    }
}
