import CAtomics

extension MMU {
    /// spte_write_protect() through mmu_spte_update(): the one way the model
    /// write-protects an spte. Clears the writable bit and, with
    /// `ptProtect` (a guest page table being shadowed), SPTE_MMU_WRITEABLE,
    /// from `sptep`, whose value the caller read as `spte`, if it has
    /// either.
    ///
    /// - Under the exclusive side of mmu_lock the kernel stores the new
    ///   value plainly, unless the spte has volatile bits
    ///   (spte_has_volatile_bits(), by the era's rule: one the lockless
    ///   fast page fault may change meanwhile): then atomically, so that a
    ///   fix it raced is not lost.
    /// - Under the read side of the TDP MMU's rwlock (`shared`), faults
    ///   change sptes beside it: tdp_mmu_set_spte_atomic() by cmpxchg,
    ///   retried on the value a fault left.
    ///
    /// Returns the value it replaced, 0 when it changed nothing (a present
    /// spte is never 0): whether a TLB flush is owed.
    @inline(__always) @discardableResult
    func spteWriteProtect(_ sptep: UnsafeMutablePointer<UInt64>, _ spte: UInt64, ptProtect: Bool = false,
                          shared: Bool = false) -> UInt64 {
        let clear = ptProtect ? SPTE.writable | SPTE.mmuWritable : SPTE.writable
        var old = spte
        while old & clear != 0 {
            if shared || hasVolatileBits(old) {
                if ca_cmpxchg64(sptep, old, old & ~clear) != 0 { return old }
                old = ca_read_once64(sptep)
                continue
            }
            ca_write_once64(sptep, old & ~clear)
            return old
        }
        return 0
    }

    /// spte_clear_dirty(): what dbit-clear (PML) takes away instead of the
    /// writable bit. Returns the value it replaced, 0 when it was clean.
    @inline(__always) @discardableResult
    func spteClearDirty(_ sptep: UnsafeMutablePointer<UInt64>, _ spte: UInt64) -> UInt64 {
        guard spte & SPTE.dirty != 0 else { return 0 }
        ca_write_once64(sptep, spte & ~SPTE.dirty)
        return spte
    }

    /// spte_has_volatile_bits(), by the era's rule (`KernelEra.spteHasVolatileBits`).
    @inline(__always) func hasVolatileBits(_ spte: UInt64) -> Bool { vm.pointee.era.spteHasVolatileBits(spte) }
}
