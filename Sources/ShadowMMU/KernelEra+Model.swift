import CAtomics
import DirtyLogCore

/// Everything the model does differently by era, in one place: the lock,
/// the write fault's paths and the bits it sets, the shadower's flush rule,
/// how leaves are counted. Code elsewhere asks these, never compares eras.
extension KernelEra {
    /// mmu_lock's kind: a ticket spinlock before 4.2, a queued spinlock
    /// from 4.2 (x86's qspinlock), an rwlock from 5.12 (531810ca).
    var lockKind: UInt32 {
        switch self {
        case .linux3_3to3_5: UInt32(CA_LOCK_TICKET)
        case .linux4_2to5_11: UInt32(CA_LOCK_QUEUED)
        case .linux5_14on: UInt32(CA_LOCK_RW)
        }
    }

    /// Whether the TDP MMU runs a two-dimensional-paging VM: write faults
    /// and the slot's write protection under mmu_lock's read side, sptes
    /// changed by cmpxchg, removed tables torn down (5.10's TDP MMU, on by
    /// default from 5.15; every fact of this era together from 5.14).
    var hasTDPMMU: Bool { self == .linux5_14on }

    /// The bits a write fault sets on the spte it makes writable: writable
    /// and dirty (the hardware sets dirty on the retried write), and
    /// SPTE_MMU_WRITEABLE in the eras that have it (3.6 on). A new leaf
    /// installed writable gets the same.
    var faultWritableBits: UInt64 {
        SPTE.writable | SPTE.dirty | (hasMMUWritable ? SPTE.mmuWritable : 0)
    }

    /// spte_has_volatile_bits() as far as write protection meets it: an spte
    /// the lockless fast page fault could change under mmu_lock's holder,
    /// which the holder must then update atomically. At 3.3 nothing changed
    /// sptes outside the lock; from c7ba5b48 (3.6) any spte both
    /// host-writable and MMU-writable (spte_is_locklessly_modifiable()),
    /// writable or not; the later rule, which 6.1's shadow MMU has, only a
    /// read-only one that is MMU-writable, the one the fast path may make
    /// writable.
    func spteHasVolatileBits(_ spte: UInt64) -> Bool {
        switch self {
        case .linux3_3to3_5: false
        case .linux4_2to5_11: spte & (SPTE.hostWritable | SPTE.mmuWritable) == SPTE.hostWritable | SPTE.mmuWritable
        case .linux5_14on: isLocklesslyWritableSPTE(spte)
        }
    }

    /// What makes a thread that write-protects a guest page table
    /// (mmu_sync_children(), kvm_mmu_get_page()) flush TLBs, given the spte
    /// it found: at 3.3, only a writable bit it cleared itself; from
    /// 198c74f4, also an spte still MMU-writable, which a harvest that
    /// flushes after unlocking leaves behind.
    func shadowerMustFlush(found old: UInt64) -> Bool {
        hasMMUWritable ? old != 0 : isWritableSPTE(old)
    }
}

extension MMU {
    /// The era the VM runs in (`VirtualMachine.enterEra`).
    @inline(__always) var era: KernelEra { vm.pointee.era }

    /// Whether structural changes and faults follow the TDP MMU: its era,
    /// a direct tree, and a VM the TDP MMU runs (`VMState.tdpMMUEnabled`).
    @inline(__always) var tdpMMU: Bool { vm.pointee.era.hasTDPMMU && vm.pointee.tdpRoot >= 0 && vm.pointee.tdpMMUEnabled }

    /// Whether a write fault may try c7ba5b48's fast path for an spte at
    /// `level`: the era has it (3.6 on); the spte is direct (two-dimensional
    /// paging: fast_pf_fix_direct_spte() warns on an indirect one); a large
    /// one only in the TDP MMU (4.2's fast_page_fault() skipped any above
    /// 4 KiB) and only while the slot does not log.
    @inline(__always) func fastPathAllowed(level: Int, slot s: SlotView) -> Bool {
        vm.pointee.era.hasFastPageFault && vm.pointee.tdpRoot >= 0
            && (level == 1 || (tdpMMU && !s.state.pointee.dirtyLogging))
    }
}
