import DirtyLogCore

extension MMU {
    /// The root of the VM's direct tree (two-dimensional paging): its table.
    @inline(__always) var tdpRootTable: UnsafeMutablePointer<UInt64>? {
        let r = vm.pointee.tdpRoot
        return r < 0 ? nil : pages.spt[Int(r)]
    }

    /// kvm_tdp_mmu_wrprot_slot() → wrprot_gfn_range(): walk the paging
    /// structure from the root over the slot's gfn range, descending into
    /// present non-leaf entries, clearing the writable bit of every present
    /// writable leaf. No rmap is read. mmu_lock is released and retaken
    /// every `yieldEveryGFNs` gfns covered (tdp_mmu_iter_cond_resched). One
    /// TLB flush.
    @inline(never)
    public func tdpWalkWriteProtect(slot s: SlotView, counters: inout ProtectCounters) {
        guard let root = tdpRootTable else { return }
        var w = TDPWalker(start: s.baseGFN.rawValue, end: s.endGFN.rawValue, yieldEvery: vm.pointee.yieldEveryGFNs, mmu: self)
        spinLock()
        w.walk(root, level: VMLayout.rootLevel, base: 0)
        spinUnlock()
        flushRemoteTLBs()
        counters.shadowPagesVisited &+= w.tables
        counters.sptesScanned &+= w.scanned
        counters.sptesProtected &+= w.protected
        counters.lockAcquisitions &+= 1 &+ w.yields
        counters.tlbFlushes &+= 1
        counters.bytesTouched &+= w.scanned &* 8
    }

    /// clear_dirty_pt_masked() with write protection: descend from the root
    /// to the leaf table holding gfn `base + offset` (the 64 gfns of a
    /// bitmap word share one), then clear the writable bit of the leaf of
    /// each set bit. The caller holds mmu_lock.
    @inline(__always)
    func tdpProtectMask(slot s: SlotView, offset: SlotOffset, mask: UInt64, tables: inout Int, protected: inout Int) {
        guard var pt = tdpRootTable else { return }
        let gfn = s.gfn(at: offset).rawValue
        var level = VMLayout.rootLevel
        while level > 1 {
            let e = pt[Int((gfn >> (SPTE.levelBits &* UInt64(level &- 1))) & 511)]
            tables &+= 1
            guard isShadowPresentSPTE(e), !isLargeSPTE(e) else { return }
            pt = SPTE.childTable(e)
            level &-= 1
        }
        tables &+= 1
        let first = Int(gfn & 511)
        var m = mask
        while m != 0 {
            let p = pt + (first &+ m.trailingZeroBitCount)
            m &= m &- 1
            let spte = p.pointee
            if isShadowPresentSPTE(spte) && isWritableSPTE(spte) {
                p.pointee = spte & ~SPTE.writable
                protected &+= 1
            }
        }
    }
}

/// The state of one tdp-walk: the gfn range, the counts, the lock yields.
struct TDPWalker {
    let start: UInt64
    let end: UInt64
    let yieldEvery: Int
    let mmu: MMU
    var tables = 0, scanned = 0, protected = 0, yields = 0
    var sinceYield = 0

    init(start: UInt64, end: UInt64, yieldEvery: Int, mmu: MMU) {
        self.start = start
        self.end = end
        self.yieldEvery = max(1, yieldEvery)
        self.mmu = mmu
    }

    /// for_each_tdp_pte_min_level() over [start, end) below `table`, which
    /// maps the gfns from `base` at `level`.
    mutating func walk(_ table: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64) {
        tables &+= 1
        let span = pagesPerLeaf(level: level)  // gfns one entry covers
        let lo = start > base ? Int((start &- base) / span) : 0
        let hi = Int(min(511, (end &- 1 &- base) / span))
        guard lo <= hi else { return }
        if level == 1 {
            var i = lo
            while i <= hi {
                let spte = table[i]
                if isShadowPresentSPTE(spte) && isWritableSPTE(spte) {
                    table[i] = spte & ~SPTE.writable
                    protected &+= 1
                }
                i &+= 1
            }
            scanned &+= hi &- lo &+ 1
            sinceYield &+= hi &- lo &+ 1
            if sinceYield >= yieldEvery {
                sinceYield = 0
                yields &+= 1
                mmu.spinUnlock()
                mmu.spinLock()
            }
            return
        }
        var i = lo
        while i <= hi {
            let e = table[i]
            scanned &+= 1
            if isShadowPresentSPTE(e) {
                if isLargeSPTE(e) {
                    if isWritableSPTE(e) {
                        table[i] = e & ~SPTE.writable
                        protected &+= 1
                    }
                } else {
                    walk(SPTE.childTable(e), level: level &- 1, base: base &+ UInt64(i) &* span)
                }
            }
            i &+= 1
        }
    }
}
