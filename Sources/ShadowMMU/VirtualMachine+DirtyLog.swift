import CAtomics

extension VirtualMachine {
    /// KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES on an existing
    /// slot: a cleared bitmap pair, then every spte of the slot write-protected
    /// (and large leaves dropped) by the seed era's slot walk.
    public func enableDirtyLogging(slotID: Int) {
        withMMU { mmu in
            let s = mmu.slot(id: slotID)
            s.bitmapHead.update(repeating: 0, count: 2 * s.bitmapWords)
            s.state.pointee = SlotState(activeHalf: 0, nrDirtyPages: 0, dirtyLogging: true)
            var counters = ProtectCounters()
            mmu.slotRemoveWriteAccess(slot: s, counters: &counters)
        }
    }
}

extension MMU {
    /// mark_page_dirty(): set the gfn's bit in the current bitmap, counting
    /// nr_dirty_pages up only when the bit was clear.
    @inline(__always)
    public func markPageDirty(slot s: SlotView, gfn: UInt64) {
        let rel = Int(gfn &- s.baseGFN)
        let word = s.dirtyBitmap + (rel >> 6)
        if ca_test_and_set_bit64(word, UInt32(rel & 63)) == 0 {
            s.state.pointee.nrDirtyPages &+= 1
        }
    }

    /// The guest writes a page through `sptep`, the spte its translation
    /// reached. A writable spte takes the write without a fault. A read-only
    /// one faults: under mmu_lock the spte becomes writable (and dirty, as
    /// the hardware sets it on the retried write) and the page is marked
    /// dirty, the only way a leaf of a logging slot becomes writable.
    /// Returns whether it faulted.
    @inline(__always) @discardableResult
    public func guestWrite(slot s: SlotView, gfn: UInt64, sptep: UnsafeMutablePointer<UInt64>) -> Bool {
        let spte = ca_read_once64(sptep)
        if isWritableSPTE(spte) { return false }
        spinLock()
        ca_write_once64(sptep, spte | SPTE.writable | SPTE.dirty)
        if s.state.pointee.dirtyLogging { markPageDirty(slot: s, gfn: gfn) }
        spinUnlock()
        return true
    }

    /// The spte through which address space `mapping` maps `gfn`: entry
    /// `mapping` of its rmap, since populating added one spte per address
    /// space in address-space order. The model's guest resolves its writes
    /// this way instead of walking guest page tables, which it does not model.
    public func spte(gfn: UInt64, mapping: Int, slot s: SlotView) -> UnsafeMutablePointer<UInt64>? {
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        var i = 0
        while let p = it.next() {
            if i == mapping { return p }
            i += 1
        }
        return nil
    }

    /// KVM_GET_DIRTY_LOG as each strategy's kernel did it: if anything is
    /// dirty, hand out the current bitmap half and make the other, cleared,
    /// current; write-protect what the handed-out half names; flush TLBs.
    /// Everything between the two timestamps of a measurement is this call.
    @inline(__always)
    public func getDirtyLog(slot s: SlotView, strategy: Strategy) -> Harvest {
        var counters = ProtectCounters()
        let nrDirty = s.state.pointee.nrDirtyPages
        // "If nothing is dirty, don't bother messing with page tables."
        if nrDirty == 0 {
            return Harvest(bitmap: s.dirtyBitmap, nrDirtyPages: 0, choice: nil, counters: counters)
        }
        let old = s.dirtyBitmap
        let new = s.otherBitmap
        new.update(repeating: 0, count: s.bitmapWords)
        s.state.pointee.activeHalf ^= 1
        s.state.pointee.nrDirtyPages = 0
        counters.bytesTouched = s.bitmapWords &* 8  // the cleared half
        let choice = writeProtect(slot: s, bitmap: old, nrDirtyPages: nrDirty, strategy: strategy, counters: &counters)
        return Harvest(bitmap: old, nrDirtyPages: nrDirty, choice: choice, counters: counters)
    }
}

/// What a harvest handed out and what it cost.
public struct Harvest {
    /// The bitmap the harvest handed out (valid until the next harvest).
    public let bitmap: UnsafeMutablePointer<UInt64>
    /// nr_dirty_pages at the harvest.
    public let nrDirtyPages: Int
    /// For a rule choosing between strategies: the one it chose.
    public let choice: Strategy?
    public let counters: ProtectCounters
}
