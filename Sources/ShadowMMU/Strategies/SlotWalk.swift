import DirtyLogCore

extension MMU {
    /// kvm_mmu_slot_remove_write_access() as of the seed: under one hold of
    /// mmu_lock, follow `active_mmu_pages` through every shadow page of the
    /// VM; skip a page whose slot bitmap lacks the slot; otherwise scan all
    /// 512 sptes, dropping large leaves and clearing the writable bit of
    /// writable 4 KiB leaves (read first, write only if writable, so clean
    /// lines stay clean). One TLB flush, under the lock.
    ///
    /// Cost follows the VM's shadow-page count, not the dirty-page count.
    @inline(never)
    public func slotRemoveWriteAccess(slot s: SlotView, counters: inout ProtectCounters) {
        let next = pages.next
        let slotBitmap = pages.slotBitmap
        let sptColumn = pages.spt
        let levelColumn = pages.level
        let slotBit: UInt64 = 1 << UInt64(s.id)
        var visited = 0, scanned = 0, protected = 0, dropped = 0

        lockMMUExclusive()
        var sp = vm.pointee.activeHead
        while sp >= 0 {
            let p = Int(sp)
            visited &+= 1
            if slotBitmap[p] & slotBit != 0 {
                let pt = sptColumn[p].unsafelyUnwrapped
                let level = Int(levelColumn[p])
                // The kernel's one loop, in two passes: 4 KiB leaves first
                // in a loop that calls nothing (so its counts stay in
                // registers), then, in a table that had any, the large
                // leaves dropped. The same sptes change, under the same hold.
                var tableProtected = 0
                var sawLarge = false
                var i = 0
                while i < SPTE.perPage {
                    let spte = pt[i]
                    if isShadowPresentSPTE(spte) && isLastSPTE(spte, level: level) {
                        if isLargeSPTE(spte) {
                            sawLarge = true
                        } else if spteWriteProtect(pt + i, spte) != 0 {
                            tableProtected &+= 1
                        }
                    }
                    i &+= 1
                }
                if sawLarge && !plantedLeaveLarge {
                    for j in 0..<SPTE.perPage where isShadowPresentSPTE(pt[j]) && isLargeSPTE(pt[j]) {
                        dropLargeSPTE(pt + j, gfn: pages.gfn(ofPage: p, index: j), level: level)
                        dropped &+= 1
                    }
                }
                protected &+= tableProtected
                scanned &+= SPTE.perPage
            }
            sp = next[p]
        }
        flushRemoteTLBs()
        unlockMMUExclusive()

        counters.shadowPagesVisited &+= visited
        counters.sptesScanned &+= scanned
        // Per page on the list: its next link and slot bitmap; per scanned
        // table: its spt pointer, level and 512 sptes.
        counters.bytesTouched &+= visited &* 12 &+ (scanned / SPTE.perPage) &* (9 &+ SPTE.perPage &* 8)
        counters.sptesProtected &+= protected
        counters.largeSptesDropped &+= dropped
        counters.lockAcquisitions &+= 1
        counters.tlbFlushes &+= 1
    }
}
