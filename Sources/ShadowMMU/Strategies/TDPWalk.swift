import CAtomics
import DirtyLogCore

extension MMU {
    /// The root of the VM's direct tree (two-dimensional paging): its table.
    @inline(__always) var tdpRootTable: UnsafeMutablePointer<UInt64>? {
        let r = vm.pointee.tdpRoot
        return r < 0 ? nil : pages.spt[Int(r)]
    }

    /// kvm_tdp_mmu_wrprot_slot() → wrprot_gfn_range(), the TDP MMU's way
    /// to enable logging (kvm_mmu_slot_remove_write_access()): walk the
    /// paging structure from the root over the slot's gfn range,
    /// descending into present non-leaf entries, write-protecting every
    /// present writable leaf. No rmap is read. At each entry, if another
    /// thread waits for mmu_lock (tdp_mmu_iter_cond_resched(): rwlock_needbreak(),
    /// a fully preemptible kernel's rule), the lock is released and
    /// retaken. One TLB flush, after unlocking.
    ///
    /// With vCPUs running in the TDP MMU's era (5.13 on) the walk holds
    /// the read side of mmu_lock, as faults do, and clears each bit by
    /// cmpxchg (tdp_mmu_set_spte_atomic()), retrying when a fault changed
    /// the spte; a thread waiting for the read side never waits for it.
    @inline(never)
    public func tdpWalkWriteProtect(slot s: SlotView, counters: inout ProtectCounters) {
        guard let root = tdpRootTable else { return }
        let shared = tdpMMU
        var w = TDPWalker(shared: shared, mmu: self)
        w.lock()
        walkTables(root, level: VMLayout.rootLevel, base: 0, start: s.baseGFN.rawValue, end: s.endGFN.rawValue, &w)
        w.unlock()
        flushRemoteTLBs()
        counters.addTableWalk(tables: w.tables, scanned: w.scanned, yields: w.yields)
        counters.sptesProtected &+= w.protected
        counters.tlbFlushes &+= 1
    }

    /// clear_dirty_pt_masked() with write protection: descend from the root
    /// to the leaf table holding gfn `base + offset` (the 64 gfns of a
    /// bitmap word share one), then walk its leaves as
    /// tdp_root_for_each_leaf_pte(gfn + __ffs(mask), gfn + 64) does: every
    /// leaf from the first set bit's on, clearing the writable bit of each
    /// set bit's, until the mask is spent (the loop's `if (!mask) break`
    /// reads one leaf past the last set bit's, within the word). The caller
    /// holds mmu_lock. `scanned` counts the leaves read.
    @inline(__always)
    func tdpProtectMask(slot s: SlotView, offset: SlotOffset, mask: UInt64, tables: inout Int, scanned: inout Int, protected: inout Int) {
        guard var pt = tdpRootTable else { return }
        let gfn = s.gfn(at: offset).rawValue
        var level = VMLayout.rootLevel
        while level > 1 {
            let e = SPTE.entry(in: pt, gfn: GFN(gfn), level: level).pointee
            tables &+= 1
            guard isShadowPresentSPTE(e), !isLargeSPTE(e) else { return }
            pt = SPTE.childTable(e)
            level &-= 1
        }
        tables &+= 1
        let word = pt + Int(gfn & 511)
        var m = mask
        var i = mask.trailingZeroBitCount
        while i < 64 {
            let p = word + i
            let spte = p.pointee
            scanned &+= 1
            guard m != 0 else { break }
            let bit: UInt64 = 1 << UInt64(i)
            if m & bit != 0 {
                m &= ~bit
                if isShadowPresentSPTE(spte) && spteWriteProtect(p, spte) != 0 { protected &+= 1 }
            }
            i &+= 1
        }
    }
}

/// The state of one tdp-walk: the counts, the lock yields.
struct TDPWalker: TableVisitor {
    /// Under the read side of mmu_lock, beside faults: bits cleared by cmpxchg.
    let shared: Bool
    let mmu: MMU
    var tables = 0, scanned = 0, protected = 0, yields = 0

    init(shared: Bool, mmu: MMU) {
        self.shared = shared
        self.mmu = mmu
    }

    /// The read side, which is the whole lock but for the TDP MMU's rwlock.
    @inline(__always) func lock() { mmu.lockMMUShared() }
    @inline(__always) func unlock() { mmu.unlockMMUShared() }

    /// tdp_mmu_iter_cond_resched(): yield mmu_lock if someone waits for it.
    @inline(__always)
    mutating func yieldIfContended() {
        guard mmu.mmuLockContended() else { return }
        yields &+= 1
        unlock()
        lock()
    }

    /// Write-protects a leaf that is present and writable.
    @inline(__always)
    mutating func protect(_ p: UnsafeMutablePointer<UInt64>) {
        let spte = p.pointee
        if isLargeSPTE(spte) && mmu.plantedLeaveLarge { return }
        guard isShadowPresentSPTE(spte), mmu.spteWriteProtect(p, spte, shared: shared) != 0 else { return }
        protected &+= 1
    }

    @inline(__always)
    mutating func enter(table: UnsafeMutablePointer<UInt64>, level: Int) -> Bool {
        tables &+= 1
        return true
    }

    @inline(__always)
    mutating func visit(_ e: UnsafeMutablePointer<UInt64>, gfn: UInt64, level: Int) -> WalkStep {
        yieldIfContended()
        let spte = e.pointee
        scanned &+= 1
        if level == 1 || isLargeSPTE(spte) {
            protect(e)
        } else if isShadowPresentSPTE(spte) {
            return .descend(SPTE.childTable(spte))
        }
        return .next
    }
}
