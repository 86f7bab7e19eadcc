import CAtomics
import DirtyLogCore

/// The changes to the shape of the paging structure that logging's
/// lifecycle makes: a large leaf split or zapped, a table zapped or
/// recovered into a huge leaf. Under the TDP MMU (`shared`: the read side
/// of mmu_lock) each is a cmpxchg that may lose to another thread; under
/// the shadow MMU's exclusive lock, a plain store.
extension MMU {
    /// The root table of the guest's own map of its memory.
    @inline(__always) var guestRootTable: UnsafeMutablePointer<UInt64> { pages.spt[Int(vm.pointee.guestRoot)].unsafelyUnwrapped }

    /// The gfn of entry `sptep` at `level` of the walk for `gfn`: the first
    /// gfn the entry maps.
    @inline(__always) static func regionStart(_ gfn: GFN, level: Int) -> GFN {
        GFN(gfn.rawValue & ~(pagesPerLeaf(level: level) &- 1))
    }

    /// A leaf of `level` leaves the page statistics, and its rmap where the
    /// VM keeps rmaps (drop_spte() / handle_changed_spte()).
    @inline(__always)
    func forgetLeaf(_ sptep: UnsafeMutablePointer<UInt64>, gfn: GFN, level: Int) {
        if vm.pointee.memslotsHaveRmaps, let s = gfnToMemslot(gfn) {
            let head = s.rmapHead(gfn: gfn, level: level)
            descPool._withUnsafeGuaranteedRef { _ = PteList.remove(sptep, from: head, pool: $0) }
        }
        accountLeaf(level: level, -1)
    }

    /// The write fault's removal of a large leaf it must map below
    /// (logging is on): drop_large_spte() in the shadow MMU, the TDP MMU's
    /// tdp_mmu_zap_spte_atomic() (frozen, TLBs flushed, then cleared).
    /// Either flushes: a vCPU's TLB may hold the huge translation. False
    /// when another thread changed the entry first.
    @inline(__always)
    func zapLargeLeaf(_ sptep: UnsafeMutablePointer<UInt64>, old: UInt64, gfn: GFN, level: Int, shared: Bool) -> Bool {
        if shared {
            guard ca_cmpxchg64(sptep, old, SPTE.frozen) != 0 else { return false }
        } else {
            ca_write_once64(sptep, 0)
        }
        forgetLeaf(sptep, gfn: Self.regionStart(gfn, level: level), level: level)
        flushRemoteTLBs(widen: false)
        if shared { ca_write_once64(sptep, 0) }
        return true
    }

    /// Replaces the non-leaf entry `sptep` (holding `old`, at `level`) with
    /// `replacement` (0, or a huge leaf), and tears its table down
    /// (handle_removed_pt()): every entry below frozen and forgotten, the
    /// tables unlinked, their memory freed when nothing walks them. Under
    /// the shadow MMU, which has no such teardown, see `unlinkChildTable`.
    /// False when another thread changed the entry first.
    @inline(__always)
    func zapNonLeaf(_ sptep: UnsafeMutablePointer<UInt64>, old: UInt64, level: Int, replacement: UInt64, shared: Bool) -> Bool {
        if shared {
            guard ca_cmpxchg64(sptep, old, replacement) != 0 else { return false }
        } else {
            ca_write_once64(sptep, replacement)
        }
        handleRemovedTable(SPTE.childTable(old), level: level &- 1, shared: shared)
        return true
    }

    /// handle_removed_pt(): each entry of a table no longer linked frozen
    /// (by xchg under the read side: a fault may be installing into it),
    /// its leaf forgotten or its child torn down in turn; the page off the
    /// lists.
    func handleRemovedTable(_ table: UnsafeMutablePointer<UInt64>, level: Int, shared: Bool) {
        let page = pages.page(holding: table)
        precondition(page >= 0, "tearing down a table that is no shadow page's")
        var i = 0
        while i < SPTE.perPage {
            let e = table + i
            let old = shared ? ca_xchg64(e, SPTE.frozen) : e.pointee
            if !shared { e.pointee = SPTE.frozen }
            if isShadowPresentSPTE(old) {
                if level == 1 || isLargeSPTE(old) {
                    forgetLeaf(e, gfn: pages.gfn(ofPage: Int(page), index: i), level: level)
                } else {
                    handleRemovedTable(SPTE.childTable(old), level: level &- 1, shared: shared)
                }
            }
            i &+= 1
        }
        unlinkZappedPage(page)
    }

    /// mmu_set_spte() over a present non-leaf entry in the shadow MMU
    /// (drop_parent_pte()): the entry stops pointing at its table, which
    /// keeps its sptes, stays on active_mmu_pages and counts in
    /// n_used_mmu_pages: nothing frees a parentless shadow page until it
    /// is zapped for another reason. TLBs flushed.
    @inline(__always)
    func unlinkChildTable(_ sptep: UnsafeMutablePointer<UInt64>) {
        ca_write_once64(sptep, 0)
        flushRemoteTLBs(widen: false)
    }

    /// A new direct table below `sptep` (not present) at `level` - 1,
    /// mapping the region of `gfn` at `level`; linked by cmpxchg under the
    /// read side (tdp_mmu_link_sp()). Nil when another thread linked one
    /// first (the new page is zapped at once: nothing saw it).
    @inline(__always)
    func linkNewTable(_ sptep: UnsafeMutablePointer<UInt64>, old: UInt64, gfn: GFN, level: Int, direct: Bool,
                      shared: Bool) -> UnsafeMutablePointer<UInt64>? {
        let childGFN: GFN
        if direct {
            childGFN = Self.regionStart(gfn, level: level)
        } else {
            childGFN = GFN(vm.pointee.nextGuestTableGFN)
            vm.pointee.nextGuestTableGFN &+= 1
        }
        let child = allocShadowPage(gfn: childGFN, level: level &- 1, direct: direct)
        let table = pages.spt[Int(child)].unsafelyUnwrapped
        let entry = SPTE.nonLeaf(child: table)
        if shared {
            guard ca_cmpxchg64(sptep, old, entry) != 0 else {
                unlinkZappedPage(child)
                return nil
            }
        } else {
            ca_write_once64(sptep, entry)
        }
        return table
    }

    /// tdp_mmu_split_huge_page() (a3fe5dbd): a large leaf at `level`
    /// replaced by a table of 512 leaves one level down, each keeping the
    /// huge leaf's bits (make_huge_page_split_spte(): writable if it was,
    /// the page-size bit only above 4 KiB); no TLB flush (the mappings do
    /// not change). False when another thread changed the entry first.
    @inline(__always)
    func splitLargeLeaf(_ sptep: UnsafeMutablePointer<UInt64>, old: UInt64, gfn: GFN, level: Int, slot s: SlotView,
                        shared: Bool) -> Bool {
        let start = Self.regionStart(gfn, level: level)
        let child = allocShadowPage(gfn: start, level: level &- 1, direct: true)
        let table = pages.spt[Int(child)].unsafelyUnwrapped
        let childLevel = level &- 1
        let span = pagesPerLeaf(level: childLevel)
        let base = SPTE.childTable(old)  // the huge leaf's frame field, as an address
        let frame = UInt64(UInt(bitPattern: base)) >> 12
        let bits = old & ~SPTE.addressMask & ~(childLevel == 1 ? SPTE.pageSize : 0)
        var i = 0
        while i < SPTE.perPage {
            table[i] = ((frame &+ UInt64(i) &* span) << 12) & SPTE.addressMask | bits
            i &+= 1
        }
        pages.slotBitmap[Int(child)] = 1 << UInt64(s.id)
        let entry = SPTE.nonLeaf(child: table)
        if shared {
            guard ca_cmpxchg64(sptep, old, entry) != 0 else {
                table.update(repeating: 0, count: SPTE.perPage)
                unlinkZappedPage(child)
                return false
            }
        } else {
            ca_write_once64(sptep, entry)
        }
        if vm.pointee.memslotsHaveRmaps {
            descPool._withUnsafeGuaranteedRef { pool in
                PteList.remove(sptep, from: s.rmapHead(gfn: start, level: level), pool: pool)
                for j in 0..<SPTE.perPage {
                    PteList.add(table + j, to: s.rmapHead(gfn: GFN(start.rawValue &+ UInt64(j) &* span), level: childLevel), pool: pool)
                }
            }
        }
        accountLeaf(level: level, -1)
        accountLeaf(level: childLevel, SPTE.perPage)
        return true
    }

    /// tdp_mmu_split_huge_pages_root() over [start, end) of the slot: every
    /// large leaf there split, 1 GiB ones down to 2 MiB and then to 4 KiB,
    /// walking from the root and yielding mmu_lock when another thread
    /// waits for it. The caller holds the lock (`shared`: its read side).
    func splitHugePages(slot s: SlotView, start: GFN, end: GFN, shared: Bool, counters: inout ProtectCounters) {
        var w = SplitWalker(slot: s, shared: shared, mmu: self)
        walkTables(guestRootTable, level: VMLayout.rootLevel, base: 0, start: start.rawValue, end: end.rawValue, &w)
        counters.shadowPagesVisited &+= w.tables
        counters.sptesScanned &+= w.scanned
        counters.largeSptesDropped &+= w.splits
        counters.lockAcquisitions &+= w.yields
    }
}

/// One split walk (`MMU.splitHugePages`).
struct SplitWalker: TableVisitor {
    let slot: SlotView
    let shared: Bool
    let mmu: MMU
    var tables = 0, scanned = 0, splits = 0, yields = 0

    init(slot: SlotView, shared: Bool, mmu: MMU) {
        self.slot = slot
        self.shared = shared
        self.mmu = mmu
    }

    /// 4 KiB tables hold nothing to split: counted, not scanned.
    mutating func enter(table: UnsafeMutablePointer<UInt64>, level: Int) -> Bool {
        tables &+= 1
        return level > 1
    }

    mutating func visit(_ e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int) -> WalkStep {
        if mmu.mmuLockContended() {
            yields &+= 1
            if shared { mmu.unlockMMUShared(); mmu.lockMMUShared() } else { mmu.unlockMMUExclusive(); mmu.lockMMUExclusive() }
        }
        let old = ca_read_once64(e)
        scanned &+= 1
        if isShadowPresentSPTE(old) && isLargeSPTE(old) && !mmu.plantedLeaveLarge {
            guard mmu.splitLargeLeaf(e, old: old, gfn: GFN(gfn), level: level, slot: slot, shared: shared) else {
                return .retry  // lost a race: read it again
            }
            splits &+= 1
        }
        let now = ca_read_once64(e)
        if isShadowPresentSPTE(now) && !isLargeSPTE(now) && level > 2 {
            return .descend(SPTE.childTable(now))
        } else if isShadowPresentSPTE(now) && !isLargeSPTE(now) {
            tables &+= 1  // the 4 KiB table: nothing to split there
        }
        return .next
    }
}
