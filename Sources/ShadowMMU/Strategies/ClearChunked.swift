import CAtomics
import DirtyLogCore

extension MMU {
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2. GET: the current bitmap is copied
    /// out as it is (no xchg, no protection). CLEAR: user space hands back
    /// what it got, in calls of `clearChunkPages` (64-page aligned); per
    /// call that has anything set, under mmu_lock, each word's bits are
    /// cleared atomically in the bitmap (atomic_long_fetch_andnot) and the
    /// pages that were still set are write-protected; a TLB flush per call
    /// that cleared something (kvm_clear_dirty_log_protect()). In
    /// initially-set mode each word's range is first split to 4 KiB and a
    /// large leaf covering it write-protected (cb00a70b).
    ///
    /// Returns the copy handed out; tells `phases` when GET is done, so a
    /// caller can time the two phases apart.
    @inline(__always)
    func clearChunkedHarvest(slot s: SlotView, counters: inout ProtectCounters, phases: inout HarvestPhaseMarks) -> UnsafeMutablePointer<UInt64> {
        let words = s.bitmapWords
        let bitmap = s.dirtyBitmap
        let copy = s.otherBitmap
        copy.update(from: bitmap, count: words)  // KVM_GET_DIRTY_LOG: copy_to_user()
        phases.firstPhaseEnded()

        let chunkWords = max(1, vm.pointee.clearChunkPages >> 6)
        // kvm_arch_mmu_enable_log_dirty_pt_masked(): the TDP MMU's leaves by
        // its tree (kvm_tdp_mmu_clear_dirty_pt_masked()), the shadow MMU's
        // by rmap.
        let tdp = tdpMMU
        let initiallySet = s.state.pointee.initiallySet
        var visited = 0, protected = 0, locks = 0, flushes = 0, cleared = 0, cleanedLines = 0, tables = 0, scanned = 0
        var first = 0
        while first < words {
            let last = min(words, first &+ chunkWords)
            // User space issues KVM_CLEAR_DIRTY_LOG only for chunks it saw dirty.
            var any = false
            var w = first
            while w < last { if copy[w] != 0 { any = true; break }; w &+= 1 }
            if any {
                lockMMUExclusive()
                locks &+= 1
                let clearedBefore = cleared
                w = first
                while w < last {
                    let mask = copy[w]
                    if mask != 0 {
                        let old = ca_fetch_andnot64(bitmap + w, mask)
                        let still = old & mask
                        if old != 0 && old & ~mask == 0 && s.lineIsClean(around: w) { cleanedLines &+= 1 }
                        if still != 0 {
                            cleared &+= still.nonzeroBitCount
                            let offset = SlotOffset(w << 6)
                            if initiallySet { splitForClear(slot: s, offset: offset, mask: still, counters: &counters) }
                            if tdp {
                                tdpProtectMask(slot: s, offset: offset, mask: still, tables: &tables, scanned: &scanned, protected: &protected)
                            } else {
                                rmapProtectMask(slot: s, offset: offset, mask: still, clearing: SPTE.writable,
                                                visited: &visited, protected: &protected)
                            }
                        }
                    }
                    w &+= 1
                }
                unlockMMUExclusive()
                // kvm_clear_dirty_log_protect() flushes when a bit it was
                // asked to clear was still set, whatever the sptes were: at
                // the first CLEAR of initially-set mode a range's sptes may
                // all be large leaves it write-protects whole (the kernel
                // lab's shadow boot counts that flush).
                if cleared > clearedBefore {
                    flushRemoteTLBs()
                    flushes &+= 1
                }
            }
            first = last
        }
        s.state.pointee.nrDirtyPages &-= cleared
        s.state.pointee.nrDirtyLines &-= cleanedLines
        counters.rmapEntriesVisited &+= visited
        counters.shadowPagesVisited &+= tables
        counters.sptesScanned &+= scanned
        counters.sptesProtected &+= protected
        counters.lockAcquisitions &+= locks
        counters.tlbFlushes &+= flushes
        // The bitmap copied (read and written), the copy read back, the
        // dirty words cleared; per dirty page its head, per spte 16 bytes.
        counters.bytesTouched &+= words &* 24 &+ cleared &* 8 &+ visited &* 16
        return copy
    }
}

extension MMU {
    /// kvm_arch_mmu_enable_log_dirty_pt_masked()'s first step in
    /// initially-set mode (cb00a70b, with eager_page_split on): the huge
    /// leaves over the word's range [first set bit, last set bit] split to
    /// 4 KiB (kvm_mmu_try_split_huge_pages(), under the write side of
    /// mmu_lock that KVM_CLEAR_DIRTY_LOG holds), then any large leaf left
    /// there write-protected (kvm_mmu_slot_gfn_write_protect() at 2 MiB,
    /// for both ends: the range may cross two).
    ///
    /// kvm_mmu_try_split_huge_pages() splits only where the TDP MMU runs
    /// (6.1: it returns unless is_tdp_mmu_enabled()); the shadow MMU's
    /// large leaves are write-protected whole.
    @inline(__always)
    func splitForClear(slot s: SlotView, offset: SlotOffset, mask: UInt64, counters: inout ProtectCounters) {
        let start = s.gfn(at: SlotOffset(offset.index &+ mask.trailingZeroBitCount))
        let end = s.gfn(at: SlotOffset(offset.index &+ 63 &- mask.leadingZeroBitCount))
        if tdpMMU { splitHugePages(slot: s, start: start, end: GFN(end.rawValue &+ 1), shared: false, counters: &counters) }
        protectLargeLeaf(of: start, counters: &counters)
        if end.rawValue >> SPTE.levelBits != start.rawValue >> SPTE.levelBits { protectLargeLeaf(of: end, counters: &counters) }
    }

    /// kvm_mmu_slot_gfn_write_protect() from 2 MiB up: the large leaf
    /// mapping `gfn`, if any, loses its writable bit.
    @inline(__always)
    func protectLargeLeaf(of gfn: GFN, counters: inout ProtectCounters) {
        let (sptep, level, spte) = walkGuestTree(gfn)
        if level > 1, isShadowPresentSPTE(spte), spteWriteProtect(sptep, spte) != 0 { counters.sptesProtected &+= 1 }
    }
}
