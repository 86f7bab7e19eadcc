import CAtomics
import DirtyLogCore

/// Turning dirty logging on and off as each kernel did
/// (kvm_mmu_slot_apply_flags() and what came before it), for the
/// lifecycle: what happens to the slot's large leaves at enable, and how
/// huge mappings come back at disable.
extension MMU {
    /// KVM_SET_USER_MEMORY_REGION setting KVM_MEM_LOG_DIRTY_PAGES on slot
    /// `s`, the way `policy`'s kernel did it: a zeroed bitmap pair (all
    /// ones in initially-set mode, with nr_dirty_pages to match), then
    ///
    /// - drop: the seed's slot walk (`slotRemoveWriteAccess`), which drops
    ///   large leaves and write-protects 4 KiB ones;
    /// - wrprot: every leaf write-protected, large ones kept: the TDP MMU's
    ///   kvm_tdp_mmu_wrprot_slot() (`tdpWalkWriteProtect`), the shadow
    ///   MMU's slot_handle_all_level(slot_rmap_write_protect)
    ///   (`rmapWalkWriteProtect`);
    /// - eager-split: kvm_mmu_slot_try_split_huge_pages() under the read
    ///   side of mmu_lock, then the TDP MMU's write protection at 4 KiB;
    /// - split-on-clear: nothing protected (initially-set).
    public func enableLogging(slot s: SlotView, policy: EnablePolicy, counters: inout ProtectCounters) {
        s.bitmapHead.update(repeating: 0, count: 2 * s.bitmapWords)
        s.state.pointee.beginLogging()
        switch policy {
        case .drop:
            slotRemoveWriteAccess(slot: s, counters: &counters)
        case .wrprot:
            if tdpMMU { tdpWalkWriteProtect(slot: s, counters: &counters) } else { rmapWalkWriteProtect(slot: s, counters: &counters) }
        case .eagerSplit:
            // kvm_mmu_slot_try_split_huge_pages() splits the TDP MMU's huge
            // leaves only (6.1: it returns unless is_tdp_mmu_enabled());
            // without the TDP MMU, enable write-protects as wrprot does.
            guard tdpMMU else {
                rmapWalkWriteProtect(slot: s, counters: &counters)
                break
            }
            lockMMUShared()
            splitHugePages(slot: s, start: s.baseGFN, end: s.endGFN, shared: true, counters: &counters)
            unlockMMUShared()
            counters.lockAcquisitions &+= 1
            tdpWalkWriteProtect(slot: s, counters: &counters)
        case .splitOnClear:
            // kvm_prepare_memory_region(): bitmap_set(dirty_bitmap, 0, npages).
            let b = s.dirtyBitmap
            b.update(repeating: ~0, count: s.bitmapWords)
            if s.npages & 63 != 0 { b[s.bitmapWords - 1] = (1 << UInt64(s.npages & 63)) - 1 }
            s.state.pointee.nrDirtyPages = s.npages
            s.state.pointee.nrDirtyLines = DirtyBitmap.nonZeroLines(b, words: s.bitmapWords)
            s.state.pointee.initiallySet = true
        }
    }

    /// KVM_SET_USER_MEMORY_REGION clearing KVM_MEM_LOG_DIRTY_PAGES: the slot
    /// stops logging first (the new memslot is published before it is
    /// committed), then, as `policy`'s kernel did:
    ///
    /// - wrprot-walk (3.3): the slot walk again;
    /// - zap-rmap (3ea3b7fa): `zapCollapsibleRmaps`;
    /// - zap, zap-batched, recover: `collapseTDP`.
    public func disableLogging(slot s: SlotView, policy: DisablePolicy, counters: inout ProtectCounters) {
        s.state.pointee.dirtyLogging = false
        s.state.pointee.initiallySet = false
        switch policy {
        case .wrprotWalk: slotRemoveWriteAccess(slot: s, counters: &counters)
        case .zapRmap: zapCollapsibleRmaps(slot: s, counters: &counters)
        case .zap, .zapBatched, .recover: collapseTDP(slot: s, policy: policy, counters: &counters)
        }
    }

    /// kvm_mmu_zap_collapsible_sptes() of the shadow MMU (3ea3b7fa, 4.2):
    /// under mmu_lock, every 4 KiB rmap of the slot (slot_handle_leaf());
    /// each spte on a direct shadow page, of a gfn whose region the host
    /// maps huge, is zapped (its rmap walked again from the start after
    /// each). Before yielding mmu_lock to a waiter, and at the end, one TLB
    /// flush if anything was zapped.
    func zapCollapsibleRmaps(slot s: SlotView, counters: inout ProtectCounters) {
        let hostLevel = vm.pointee.hostLevel
        let heads = s.rmap1
        var visited = 0, zapped = 0, yields = 0, flushes = 0
        var flush = false
        lockMMUExclusive()
        var i = 0
        while i < s.npages {
            let head = heads + i
            if head.pointee != 0 {
                let gfn = s.gfn(at: SlotOffset(i))
                let collapsible = s.hugeLevel(gfn, hostLevel: hostLevel) > 1
                var it = RmapIterator(head.pointee)
                while let sptep = it.next() {
                    visited &+= 1
                    // sp->role.direct: only the kernel's own tables below a guest huge page.
                    guard collapsible, pages.gfns[Int(pages.page(holding: sptep))] == nil else { continue }
                    descPool._withUnsafeGuaranteedRef { _ = PteList.remove(sptep, from: head, pool: $0) }
                    // mmu_spte_clear_track_bits(): by xchg where the spte has volatile bits.
                    let old = ca_read_once64(sptep)
                    if hasVolatileBits(old) { _ = ca_xchg64(sptep, 0) } else { ca_write_once64(sptep, 0) }
                    accountLeaf(level: 1, -1)
                    zapped &+= 1
                    flush = true
                    it = RmapIterator(head.pointee)
                }
            }
            if mmuLockContended() {
                if flush {
                    flushRemoteTLBs()
                    flushes &+= 1
                    flush = false
                }
                yields &+= 1
                unlockMMUExclusive()
                lockMMUExclusive()
            }
            i &+= 1
        }
        if flush {
            flushRemoteTLBs()
            flushes &+= 1
        }
        unlockMMUExclusive()
        counters.rmapEntriesVisited &+= visited
        counters.largeSptesDropped &+= zapped
        counters.lockAcquisitions &+= 1 &+ yields
        counters.tlbFlushes &+= flushes
        counters.bytesTouched &+= s.npages &* 8 &+ visited &* 16
    }

    /// The TDP MMU's disable path over the slot, under the read side of
    /// mmu_lock, walking from the root down to 2 MiB entries
    /// (for_each_tdp_pte_min_level(..., PG_LEVEL_2M, ...)): each present
    /// non-leaf entry whose region lies in the slot and which the host maps
    /// at its level or above is
    ///
    /// - zap: zapped by tdp_mmu_zap_spte_atomic(), a TLB flush each (6.1's
    ///   85f44f8cc07b to 6.12);
    /// - zap-batched: zapped by cmpxchg to not-present, TLBs flushed once
    ///   at the end and before each yield of mmu_lock (35ef80eb);
    /// - recover: replaced by a huge leaf made from the first leaf below it
    ///   (make_huge_spte()), flushes batched the same way (13e2e4f6).
    ///
    /// Its table is torn down (`handleRemovedTable`). The walk yields
    /// mmu_lock when a writer waits (tdp_mmu_iter_cond_resched()).
    func collapseTDP(slot s: SlotView, policy: DisablePolicy, counters: inout ProtectCounters) {
        var w = CollapseWalker(slot: s, policy: policy, hostLevel: vm.pointee.hostLevel, mmu: self)
        lockMMUShared()
        walkTables(guestRootTable, level: VMLayout.rootLevel, base: 0, start: s.baseGFN.rawValue, end: s.endGFN.rawValue, &w)
        w.flushIfPending()
        unlockMMUShared()
        counters.addTableWalk(tables: w.tables, scanned: w.scanned, yields: w.yields)
        counters.largeSptesDropped &+= w.collapsed
        counters.tlbFlushes &+= w.flushes
    }
}

/// One walk of `MMU.collapseTDP`.
struct CollapseWalker: TableVisitor {
    let slot: SlotView
    let policy: DisablePolicy
    let hostLevel: Int
    let mmu: MMU
    var tables = 0, scanned = 0, collapsed = 0, flushes = 0, yields = 0
    var flushPending = false

    init(slot: SlotView, policy: DisablePolicy, hostLevel: Int, mmu: MMU) {
        self.slot = slot
        self.policy = policy
        self.hostLevel = hostLevel
        self.mmu = mmu
    }

    @inline(__always)
    mutating func flushIfPending() {
        guard flushPending else { return }
        mmu.flushRemoteTLBs()
        flushes &+= 1
        flushPending = false
    }

    /// make_huge_spte(): the first leaf below `table` (at `level`) made a
    /// huge leaf of `level` + 1: its bits, the page-size bit, its frame
    /// rounded down to the huge page. Nil when the table holds no leaf.
    static func hugeLeaf(below table: UnsafeMutablePointer<UInt64>, level: Int) -> UInt64? {
        var i = 0
        while i < SPTE.perPage {
            let e = ca_read_once64(table + i)
            if isShadowPresentSPTE(e) {
                if level == 1 || isLargeSPTE(e) {
                    let bytes = pagesPerLeaf(level: level &+ 1) << 12
                    return (e & ~SPTE.addressMask) | SPTE.pageSize | (e & SPTE.addressMask & ~(bytes &- 1))
                }
                if let h = hugeLeaf(below: SPTE.childTable(e), level: level &- 1) {
                    let bytes = pagesPerLeaf(level: level &+ 1) << 12
                    return (h & ~SPTE.addressMask) | SPTE.pageSize | (h & SPTE.addressMask & ~(bytes &- 1))
                }
            }
            i &+= 1
        }
        return nil
    }

    mutating func enter(table: UnsafeMutablePointer<UInt64>, level: Int) -> Bool {
        tables &+= 1
        return true
    }

    mutating func visit(_ e: UnsafeMutablePointer<UInt64>, gfn g: UInt64, level: Int) -> WalkStep {
        if mmu.mmuLockContended() {
            // Flush before dropping the lock (mmu_notifiers must not see
            // zapped tables still cached).
            flushIfPending()
            yields &+= 1
            mmu.unlockMMUShared()
            mmu.lockMMUShared()
        }
        let old = ca_read_once64(e)
        scanned &+= 1
        guard isShadowPresentSPTE(old), level > 1, !isLargeSPTE(old) else { return .next }
        let span = pagesPerLeaf(level: level)
        let start = slot.baseGFN.rawValue, end = slot.endGFN.rawValue
        // KVM_MAX_HUGEPAGE_LEVEL and the slot's edges, then the host's page size.
        guard level <= 3, g >= start, g &+ span <= end, slot.hugeLevel(GFN(g), hostLevel: hostLevel) >= level else {
            return level > 2 ? .descend(SPTE.childTable(old)) : .next
        }
        var replacement: UInt64 = 0
        if policy == .recover {
            guard let h = Self.hugeLeaf(below: SPTE.childTable(old), level: level &- 1) else { return .next }
            replacement = h
        }
        guard mmu.zapNonLeaf(e, old: old, level: level, replacement: replacement, shared: mmu.tdpMMU) else { return .retry }
        if policy == .recover {
            mmu.accountLeaf(level: level, 1)
            let page = Int(mmu.pages.page(holding: e))
            _ = ca_fetch_or64(mmu.pages.slotBitmap + page, 1 << UInt64(slot.id))
        }
        collapsed &+= 1
        if policy == .zap {
            mmu.flushRemoteTLBs()
            flushes &+= 1
        } else {
            flushPending = true
        }
        return .next
    }
}
