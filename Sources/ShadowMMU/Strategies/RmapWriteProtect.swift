import CAtomics
import DirtyLogCore

extension MMU {
    /// The seed's per-dirty-page branch of write_protect_slot(): for each set
    /// bit of the handed-out bitmap, take mmu_lock, write-protect that gfn
    /// through its rmaps, release the lock. One TLB flush at the end, outside
    /// the lock.
    ///
    /// Cost follows the dirty-page count: per page a few dependent loads
    /// (bitmap word, rmap word, descriptor, spte) and a lock round trip.
    ///
    /// With vCPUs shadowing guest page tables meanwhile this is the seed's
    /// race (fixed by 6dbf79e7, `rmapWriteProtectDirtyOneHold`): between a
    /// gfn's unlock and the flush, a shadower finds its sptes already
    /// read-only, skips its own flush, and returns while a vCPU's TLB still
    /// holds a writable translation. `FaultInjection.flushWindowSpins` widens that
    /// window on purpose, for the test that makes the race happen.
    @inline(never)
    public func rmapWriteProtectDirty(slot s: SlotView, bitmap: UnsafeMutablePointer<UInt64>, counters: inout ProtectCounters) {
        var visited = 0, protected = 0, dropped = 0, locks = 0, descs = 0
        let words = s.bitmapWords
        let lock = lockForLoop()
        var w = 0
        while w < words {
            var mask = bitmap[w]
            while mask != 0 {
                let gfn = s.gfn(at: SlotOffset(w << 6 | mask.trailingZeroBitCount))
                mask &= mask &- 1
                lockMMUExclusive(lock)
                rmapWriteProtect(gfn: gfn, slot: s, visited: &visited, protected: &protected, dropped: &dropped, descs: &descs)
                unlockMMUExclusive(lock)
                locks &+= 1
            }
            w &+= 1
        }
        flushRemoteTLBs()
        record(visited: visited, protected: protected, dropped: dropped, locks: locks, pages: locks, descs: descs, words: words, counters: &counters)
    }

    /// write_protect_slot()'s rmap branch as 6dbf79e7 fixed it: mmu_lock
    /// taken once, every dirty page's rmaps protected, the TLBs flushed,
    /// and only then the lock released, so that a thread write-protecting
    /// a guest page table either runs before (and flushes for itself) or
    /// after the flush.
    @inline(never)
    public func rmapWriteProtectDirtyOneHold(slot s: SlotView, bitmap: UnsafeMutablePointer<UInt64>, counters: inout ProtectCounters) {
        var visited = 0, protected = 0, dropped = 0, descs = 0, pages = 0
        let words = s.bitmapWords
        lockMMUExclusive()
        var w = 0
        while w < words {
            var mask = bitmap[w]
            while mask != 0 {
                let gfn = s.gfn(at: SlotOffset(w << 6 | mask.trailingZeroBitCount))
                mask &= mask &- 1
                pages &+= 1
                rmapWriteProtect(gfn: gfn, slot: s, visited: &visited, protected: &protected, dropped: &dropped, descs: &descs)
            }
            w &+= 1
        }
        flushRemoteTLBs()
        unlockMMUExclusive()
        record(visited: visited, protected: protected, dropped: dropped, locks: 1, pages: pages, descs: descs, words: words, counters: &counters)
    }

    /// One dirty page of an rmap branch: `rmapWriteProtect`, and the
    /// descriptors its 4 KiB rmap chain went through, for the byte count.
    @inline(__always)
    func rmapWriteProtect(gfn: GFN, slot s: SlotView, visited: inout Int, protected: inout Int, dropped: inout Int, descs: inout Int) {
        let before = visited
        rmapWriteProtect(gfn: gfn, slot: s, visited: &visited, protected: &protected, dropped: &dropped)
        let n = visited &- before
        if n > 1 { descs &+= (n &+ PteList.entriesPerDesc &- 1) / PteList.entriesPerDesc }
    }

    /// The counters of an rmap branch: `pages` dirty pages protected under
    /// `locks` acquisitions, one flush.
    @inline(__always)
    private func record(visited: Int, protected: Int, dropped: Int, locks: Int, pages: Int, descs: Int, words: Int, counters: inout ProtectCounters) {
        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.largeSptesDropped &+= dropped
        counters.lockAcquisitions &+= locks
        counters.tlbFlushes &+= 1
        // The bitmap scanned whole; per dirty page three rmap heads (4 KiB,
        // 2 MiB, 1 GiB); per spte reached its address and value; descriptors.
        counters.bytesTouched &+= words &* 8 &+ pages &* 24 &+ visited &* 16 &+ descs &* 40
    }

    /// kvm_mmu_rmap_write_protect() as of the seed: clear the writable bit of
    /// every writable spte on the gfn's 4 KiB rmap; then, for the 2 MiB and
    /// 1 GiB levels, find the rmap through gfn_to_rmap(), which searches the
    /// memslots again, and drop any writable large leaf there.
    @inline(__always)
    func rmapWriteProtect(gfn: GFN, slot s: SlotView, visited: inout Int, protected: inout Int, dropped: inout Int) {
        rmapClearBit(s.rmapHead(gfn: gfn, level: 1).pointee, SPTE.writable, visited: &visited, protected: &protected)
        dropWritableLarge(gfn: gfn, level: 2, visited: &visited, dropped: &dropped)
        dropWritableLarge(gfn: gfn, level: 3, visited: &visited, dropped: &dropped)
    }

    /// One large level of kvm_mmu_rmap_write_protect(): gfn_to_rmap(), then
    /// every writable leaf on that rmap dropped.
    @inline(__always)
    func dropWritableLarge(gfn: GFN, level: Int, visited: inout Int, dropped: inout Int) {
        guard let ls = gfnToMemslot(gfn) else { return }
        let head = ls.rmapHead(gfn: gfn, level: level)
        guard head.pointee != 0 else { return }
        var large = RmapIterator(head.pointee)
        while let sptep = large.next() {
            visited &+= 1
            if isWritableSPTE(sptep.pointee) {
                dropLargeSPTE(sptep, gfn: gfn, level: level)
                dropped &+= 1
                // The list changed under the iterator: start over, as the kernel does.
                large = RmapIterator(head.pointee)
            }
        }
    }
}

extension MMU {
    /// kvm_mmu_write_protect_pt_masked() (or, with `clearing` = dirty bit,
    /// kvm_mmu_clear_dirty_pt_masked()): for each set bit of `mask`, lowest
    /// first, the 4 KiB rmap of gfn `base + offset + bit`; every spte on it
    /// loses the bit if it has it. No large-page lookups: there are none
    /// while logging. The caller holds mmu_lock.
    @inline(__always)
    func rmapProtectMask(slot s: SlotView, offset: SlotOffset, mask: UInt64, clearing bit: UInt64,
                         visited: inout Int, protected: inout Int) {
        var m = mask
        let heads = s.rmap1 + offset.index
        while m != 0 {
            let head = heads + m.trailingZeroBitCount
            m &= m &- 1
            rmapClearBit(head.pointee, bit, visited: &visited, protected: &protected)
        }
    }

    /// __rmap_write_protect() (`bit` the writable bit: spte_write_protect()
    /// of each) and __rmap_clear_dirty() (the dirty bit: spte_clear_dirty()):
    /// every spte on one rmap loses the bit if it has it.
    @inline(__always)
    func rmapClearBit(_ rmap: UInt, _ bit: UInt64, visited: inout Int, protected: inout Int) {
        var it = RmapIterator(rmap)
        while let sptep = it.next() {
            visited &+= 1
            let spte = sptep.pointee
            let old = bit == SPTE.writable ? spteWriteProtect(sptep, spte) : spteClearDirty(sptep, spte)
            if old != 0 { protected &+= 1 }
        }
    }
}
