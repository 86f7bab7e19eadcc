import CAtomics
import DirtyLogCore

/// How a masked harvest protects the pages of one bitmap word.
public enum MaskProtect: Sendable {
    /// The 4 KiB rmaps of the set bits, writable bits cleared (masked).
    case rmap
    /// The two-dimensional paging structure, down to the word's leaf table
    /// (tdp-masked).
    case tdp
    /// The 4 KiB rmaps, dirty bits cleared (dbit-clear, PML).
    case rmapDirtyBit
}

extension MMU {
    /// KVM_GET_DIRTY_LOG as the kernel does it since Linux 3.4 (5dc99b23
    /// protected per word with kvm_mmu_write_protect_pt_masked; 60c34612
    /// took each word with xchg under one hold of mmu_lock; the code became
    /// kvm_get_dirty_log_protect() in 3.19): the other bitmap half is
    /// cleared as a buffer; under one hold of
    /// mmu_lock, each non-zero word of the current bitmap is taken with
    /// xchg(word, 0), copied to the buffer, and its pages protected
    /// (kvm_arch_mmu_enable_log_dirty_pt_masked); one TLB flush if anything
    /// was dirty, after the lock is released, where 198c74f4 moved it (at
    /// 60c34612 it was inside the hold: with the eras the concurrent
    /// scenario runs this in, 4.2 and 5.14, it is outside). The buffer is
    /// what user space gets. With PML the vCPUs' buffers are flushed into
    /// the bitmap first (kvm_arch_sync_dirty_log).
    @inline(__always)
    func maskedHarvest(slot s: SlotView, protect: MaskProtect, counters: inout ProtectCounters) -> UnsafeMutablePointer<UInt64> {
        if s.state.pointee.protection == .dirtyBit { flushPMLBuffers(slot: s) }
        let words = s.bitmapWords
        let bitmap = s.dirtyBitmap
        let buffer = s.otherBitmap
        buffer.update(repeating: 0, count: words)
        s.state.pointee.resetDirtyCounts()
        var visited = 0, protected = 0, nonZero = 0, tables = 0, pages = 0, scanned = 0
        let bit = protect == .rmapDirtyBit ? SPTE.dirty : SPTE.writable
        lockMMUExclusive()
        var i = 0
        while i < words {
            if bitmap[i] != 0 {
                let mask = ca_xchg64(bitmap + i, 0)
                buffer[i] = mask
                nonZero &+= 1
                pages &+= mask.nonzeroBitCount
                let offset = SlotOffset(i << 6)
                switch protect {
                case .rmap, .rmapDirtyBit:
                    rmapProtectMask(slot: s, offset: offset, mask: mask, clearing: bit, visited: &visited, protected: &protected)
                case .tdp:
                    tdpProtectMask(slot: s, offset: offset, mask: mask, tables: &tables, scanned: &scanned, protected: &protected)
                }
            }
            i &+= 1
        }
        unlockMMUExclusive()
        if nonZero > 0 { flushRemoteTLBs() }

        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.shadowPagesVisited &+= tables
        counters.sptesScanned &+= scanned
        counters.lockAcquisitions &+= 1
        counters.tlbFlushes &+= nonZero > 0 ? 1 : 0
        // Both halves read or written whole; per dirty page its rmap head,
        // per spte reached its address and value; a TDP descent reads one
        // spte per level, then the leaves.
        counters.bytesTouched &+= words &* 16 &+ (protect == .tdp ? tables &* 32 &+ scanned &* 8 : pages &* 8 &+ visited &* 16)
        return buffer
    }
}
