import DirtyLogCore

extension MMU {
    /// slot_handle_level(kvm, slot, slot_rmap_write_protect, 4K, 1G): every
    /// rmap head of the slot, at every level, in gfn order; every spte on a
    /// non-empty one loses its writable bit if it has it. mmu_lock is
    /// released and retaken every `yieldEveryGFNs` heads (cond_resched). One
    /// TLB flush.
    ///
    /// Cost follows the slot's size (and sptes per gfn), not the VM's
    /// shadow-page count nor the dirty pages.
    @inline(never)
    public func rmapWalkWriteProtect(slot s: SlotView, counters: inout ProtectCounters) {
        let yieldEvery = max(1, vm.pointee.yieldEveryGFNs)
        var visited = 0, protected = 0, yields = 0, heads = 0, sinceYield = 0
        spinLock()
        var level = 1
        while level <= 3 {
            let (rmap, n) = s.rmaps(level: level)
            var i = 0
            while i < n {
                let word = rmap[i]
                if word != 0 { rmapClearBit(word, SPTE.writable, visited: &visited, protected: &protected) }
                heads &+= 1
                sinceYield &+= 1
                if sinceYield == yieldEvery {
                    sinceYield = 0
                    yields &+= 1
                    spinUnlock()
                    spinLock()
                }
                i &+= 1
            }
            level &+= 1
        }
        spinUnlock()
        flushRemoteTLBs()
        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.lockAcquisitions &+= 1 &+ yields
        counters.tlbFlushes &+= 1
        counters.bytesTouched &+= heads &* 8 &+ visited &* 16
    }
}
