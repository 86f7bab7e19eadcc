import DirtyLogCore

extension MMU {
    /// slot_handle_level(kvm, slot, slot_rmap_write_protect, 4K, 1G): every
    /// rmap head of the slot, at every level, in gfn order; every spte on a
    /// non-empty one loses its writable bit if it has it. After each head,
    /// if another thread waits for mmu_lock (spin_needbreak(), a fully
    /// preemptible kernel's rule), the lock is released and retaken
    /// (cond_resched_lock()), without a flush (flush_on_yield is false for
    /// write protection). One TLB flush at the end, after unlocking
    /// (198c74f4).
    ///
    /// Cost follows the slot's size (and sptes per gfn), not the VM's
    /// shadow-page count nor the dirty pages.
    @inline(never)
    public func rmapWalkWriteProtect(slot s: SlotView, counters: inout ProtectCounters) {
        var visited = 0, protected = 0, yields = 0, heads = 0
        lockMMUExclusive()
        var level = 1
        while level <= 3 {
            let (rmap, n) = s.rmaps(level: level)
            var i = 0
            while i < n {
                let word = rmap[i]
                if word != 0 && !(level > 1 && plantedLeaveLarge) { rmapClearBit(word, SPTE.writable, visited: &visited, protected: &protected) }
                heads &+= 1
                if mmuLockContended() {
                    yields &+= 1
                    unlockMMUExclusive()
                    lockMMUExclusive()
                }
                i &+= 1
            }
            level &+= 1
        }
        unlockMMUExclusive()
        flushRemoteTLBs()
        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.lockAcquisitions &+= 1 &+ yields
        counters.tlbFlushes &+= 1
        counters.bytesTouched &+= heads &* 8 &+ visited &* 16
    }
}
