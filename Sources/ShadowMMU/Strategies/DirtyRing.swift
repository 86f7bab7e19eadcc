import CAtomics
import DirtyLogCore

extension MMU {
    /// A dirty-ring harvest, both halves of it. User space walks each
    /// vCPU's ring from its fetch index while entries are DIRTY
    /// (acquire-load of the flags), records the page in its own bitmap
    /// (`into`, which the caller has cleared) and marks the entry RESET
    /// (release-store). Then KVM_RESET_DIRTY_RINGS: the kernel walks each
    /// ring from its reset index over the RESET entries, merging entries of
    /// one slot that fall within 64 pages of the first into one mask
    /// (kvm_dirty_ring_reset()), and write-protects each mask under
    /// mmu_lock, taken per mask (kvm_reset_dirty_gfn()); one TLB flush if
    /// anything was reset. No bitmap is scanned.
    @inline(__always)
    func ringHarvest(slot s: SlotView, into user: UnsafeMutablePointer<UInt64>, counters: inout ProtectCounters) {
        var collected = 0
        // User space: collect.
        var v = 0
        while v < vcpus.count {
            let cpu = vcpus.baseAddress! + v
            let mask = cpu.pointee.ringEntries &- 1
            let ring = cpu.pointee.ring
            var fetch = cpu.pointee.fetchIndex
            while true {
                let e = ring + (fetch & mask)
                let flags = withUnsafeMutablePointer(to: &e.pointee.flags) { ca_load_acquire32($0) }
                if flags & DirtyGFN.dirty == 0 { break }
                let off = Int(e.pointee.offset)
                user[off >> 6] |= 1 << UInt64(off & 63)
                withUnsafeMutablePointer(to: &e.pointee.flags) { ca_store_release32($0, DirtyGFN.reset) }
                fetch &+= 1
                collected &+= 1
            }
            cpu.pointee.fetchIndex = fetch
            v &+= 1
        }
        // The kernel: reset and protect, mask by mask.
        var visited = 0, protected = 0, locks = 0
        v = 0
        while v < vcpus.count {
            let cpu = vcpus.baseAddress! + v
            let ringMask = cpu.pointee.ringEntries &- 1
            let ring = cpu.pointee.ring
            var reset = cpu.pointee.resetIndex
            var curOffset: UInt64 = 0, mask: UInt64 = 0
            while reset != cpu.pointee.dirtyIndex {
                let e = ring + (reset & ringMask)
                if e.pointee.flags & DirtyGFN.reset == 0 { break }
                let offset = e.pointee.offset
                e.pointee.flags = 0
                reset &+= 1
                if mask != 0 {
                    // Coalesce forwards, or backwards while the mask still fits.
                    if offset >= curOffset && offset &- curOffset < 64 {
                        mask |= 1 << (offset &- curOffset)
                        continue
                    }
                    if offset < curOffset && curOffset &- offset < 64 {
                        let shift = curOffset &- offset
                        if (mask << shift) >> shift == mask {
                            mask = (mask << shift) | 1
                            curOffset = offset
                            continue
                        }
                    }
                    resetDirtyGFN(slot: s, offset: SlotOffset(Int(curOffset)), mask: mask, visited: &visited, protected: &protected, locks: &locks)
                }
                curOffset = offset
                mask = 1
            }
            if mask != 0 { resetDirtyGFN(slot: s, offset: SlotOffset(Int(curOffset)), mask: mask, visited: &visited, protected: &protected, locks: &locks) }
            cpu.pointee.resetIndex = reset
            v &+= 1
        }
        if collected > 0 { flushRemoteTLBs() }
        s.state.pointee.nrDirtyPages &-= collected
        counters.rmapEntriesVisited &+= visited
        counters.sptesProtected &+= protected
        counters.lockAcquisitions &+= locks
        counters.tlbFlushes &+= collected > 0 ? 1 : 0
        // Each entry read and written twice (collect, reset), the user's bit,
        // per page its rmap head, per spte 16 bytes.
        counters.bytesTouched &+= collected &* (32 &+ 8 &+ 8) &+ visited &* 16
    }

    /// kvm_reset_dirty_gfn(): one merged mask, under its own hold of mmu_lock.
    @inline(__always)
    func resetDirtyGFN(slot s: SlotView, offset: SlotOffset, mask: UInt64, visited: inout Int, protected: inout Int, locks: inout Int) {
        lockMMUExclusive()
        rmapProtectMask(slot: s, offset: offset, mask: mask, clearing: SPTE.writable, visited: &visited, protected: &protected)
        unlockMMUExclusive()
        locks &+= 1
    }
}
