import CAtomics
import DirtyLogCore

extension MMU {
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2. GET: the current bitmap is copied
    /// out as it is (no xchg, no protection). CLEAR: user space hands back
    /// what it got, in calls of `clearChunkPages` (64-page aligned); per
    /// call that has anything set, under mmu_lock, each word's bits are
    /// cleared atomically in the bitmap (atomic_long_fetch_andnot) and the
    /// pages that were still set are write-protected; a TLB flush per call
    /// that protected something (kvm_clear_dirty_log_protect()).
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
        var visited = 0, protected = 0, locks = 0, flushes = 0, cleared = 0, cleanedLines = 0
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
                let before = protected
                w = first
                while w < last {
                    let mask = copy[w]
                    if mask != 0 {
                        let old = ca_fetch_andnot64(bitmap + w, mask)
                        let still = old & mask
                        if old != 0 && old & ~mask == 0 && s.lineIsClean(around: w) { cleanedLines &+= 1 }
                        if still != 0 {
                            cleared &+= still.nonzeroBitCount
                            rmapProtectMask(slot: s, offset: SlotOffset(w << 6), mask: still, clearing: SPTE.writable,
                                            visited: &visited, protected: &protected)
                        }
                    }
                    w &+= 1
                }
                unlockMMUExclusive()
                if protected > before {
                    flushRemoteTLBs()
                    flushes &+= 1
                }
            }
            first = last
        }
        s.state.pointee.nrDirtyPages &-= cleared
        s.state.pointee.nrDirtyLines &-= cleanedLines
        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.lockAcquisitions &+= locks
        counters.tlbFlushes &+= flushes
        // The bitmap copied (read and written), the copy read back, the
        // dirty words cleared; per dirty page its head, per spte 16 bytes.
        counters.bytesTouched &+= words &* 24 &+ cleared &* 8 &+ visited &* 16
        return copy
    }
}
