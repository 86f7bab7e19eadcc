/// A way to write-protect a slot at harvest time.
public enum Strategy: String, CaseIterable, Sendable, Hashable {
    /// kvm_mmu_slot_remove_write_access(): walk every shadow page of the VM.
    case slotWalk = "slot-walk"
    /// The seed's new branch: per dirty page, lock and walk its rmaps.
    case rmap
    /// The seed's rule: `rmap` when nr_dirty_pages < n_used_mmu_pages, else `slot-walk`.
    case seed

    /// What the seed's rule picks at this many dirty pages.
    @inline(__always)
    public static func seedChoice(nrDirtyPages: Int, nUsedMMUPages: Int) -> Strategy {
        nrDirtyPages < nUsedMMUPages ? .rmap : .slotWalk
    }

    /// Strategies that pick another per harvest rather than protect on their own.
    public var isRule: Bool { self == .seed }

    public var summary: String {
        switch self {
        case .slotWalk: "walk every shadow page on the VM-wide list, scan the slot's tables (seed era)"
        case .rmap: "per dirty page: take mmu_lock, walk its 4 KiB rmap and look up its large-page rmaps (the seed's branch)"
        case .seed: "the seed's rule: rmap when nr_dirty_pages < n_used_mmu_pages, else slot-walk"
        }
    }
}

/// What a protection did, counted inside its hot loop (in registers,
/// stored once at the end).
public struct ProtectCounters: Equatable, Sendable {
    /// Shadow pages reached on the VM-wide list.
    public var shadowPagesVisited = 0
    /// Sptes read by scanning whole tables.
    public var sptesScanned = 0
    /// Sptes whose writable bit was cleared.
    public var sptesProtected = 0
    /// Large leaves dropped.
    public var largeSptesDropped = 0
    /// Sptes reached through reverse maps (each one read).
    public var rmapEntriesVisited = 0
    /// mmu_lock acquisitions.
    public var lockAcquisitions = 0
    /// kvm_flush_remote_tlbs() calls.
    public var tlbFlushes = 0
    /// Bytes of MMU data the harvest read or wrote: bitmap words, list links
    /// and slot bitmaps, whole tables, rmap heads, descriptors and sptes.
    /// The quantity to set against the machine's bandwidth.
    public var bytesTouched = 0

    public init() {}
}

extension MMU {
    /// write_protect_slot(): protect every spte the handed-out bitmap names
    /// (and, for the walks, everything else of the slot) the way `strategy` does.
    /// Returns the strategy a rule chose.
    @inline(__always)
    func writeProtect(slot s: SlotView, bitmap: UnsafeMutablePointer<UInt64>, nrDirtyPages: Int,
                      strategy: Strategy, counters: inout ProtectCounters) -> Strategy? {
        switch strategy {
        case .slotWalk:
            slotRemoveWriteAccess(slot: s, counters: &counters)
            return nil
        case .rmap:
            rmapWriteProtectDirty(slot: s, bitmap: bitmap, counters: &counters)
            return nil
        case .seed:
            // Not many dirty pages compared to # of shadow pages.
            if nrDirtyPages < vm.pointee.nUsedMMUPages {
                rmapWriteProtectDirty(slot: s, bitmap: bitmap, counters: &counters)
                return .rmap
            }
            slotRemoveWriteAccess(slot: s, counters: &counters)
            return .slotWalk
        }
    }
}
