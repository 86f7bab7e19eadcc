import DirtyLogCore

// What a guest's write or access did, as the one write path
// (`MMU+GuestWrite.swift`) reports it to whoever runs the guest.

/// What mark_page_dirty() did.
public struct DirtyMark: Equatable, Sendable {
    /// The page's bit was clear and is now set: logged anew since the last
    /// harvest took it (with a dirty ring: pushed).
    public var newlyLogged: Bool
    /// The vCPU's dirty ring is now soft-full.
    public var ringFull: Bool
}

/// What a guest write did.
public enum GuestWrite: Equatable, Sendable {
    /// The spte allowed it: no exit (or, with PML, logged by the hardware).
    case noFault
    /// It faulted and was logged.
    case faulted
    /// It faulted, was logged, and the vCPU's dirty ring is now soft-full:
    /// the vCPU stops (KVM_EXIT_DIRTY_RING_FULL) until user space harvests.
    case ringFull
}

/// What a vCPU's write did, short of a fault (`MMU.vcpuWrite`).
public enum VCPUWrite: Equatable, Sendable {
    /// Through a writable translation its TLB held, the spte still writable.
    case cached
    /// Through a cached writable translation whose spte has since been
    /// write-protected: a TLB flush the vCPU has not yet served. Harmless
    /// while the harvest that protected it has not returned (the page is in
    /// the log it hands out); after that, a flush that did not happen.
    case cachedStale
    /// Through a cached writable translation of the guest page table its
    /// own shadowing fault returned believing write-protected: the seed's
    /// race (6dbf79e7).
    case cachedRace
    /// The spte was writable: the page walk's translation is now cached.
    case walked
    /// The spte is write-protected: the write faults (`MMU.vcpuWriteFault`).
    case mustFault
}

/// What a vCPU's fault did (`MMU.vcpuWriteFault`, `MMU.vcpuShadowingFault`).
public struct VCPUFault: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// c7ba5b48's fast path made the spte writable by cmpxchg, without mmu_lock.
        case fastPath
        /// The locked path made it writable.
        case madeWritable
        /// Someone else had made it writable first.
        case alreadyWritable
        /// The page is a tracked guest page table: the write was emulated
        /// and logged, the spte stays read-only.
        case emulated
        /// The fault shadowed a guest page table: write-protected it (and,
        /// if the era's rule said so, flushed TLBs) under mmu_lock.
        case shadowed(flushed: Bool)
    }

    public var kind: Kind
    /// The fault set the page's bit in the log (it was clear): the page is
    /// logged again since the last harvest took it.
    public var newlyLogged = false

    public init(_ kind: Kind, newlyLogged: Bool = false) {
        self.kind = kind
        self.newlyLogged = newlyLogged
    }
}

/// What one guest access did (`MMU.vcpuAccess`): nothing the kernel saw,
/// a write fault on a read-only leaf, or a fault that built the mapping.
public struct VCPUAccess: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// The translation allowed it: no exit.
        case none
        /// A write fault on a read-only leaf, fixed as `VCPUFault.Kind` says.
        case fixed(VCPUFault.Kind)
        /// A fault that installed a leaf of `level` where the walk found
        /// none, or found a large leaf it had to map below.
        case mapped
    }

    public var kind: Kind
    /// `mapped`: the new leaf's level.
    public var level = 0
    /// `mapped`: shadow pages the fault allocated.
    public var tables = 0
    /// `mapped`: it first removed what was there: a write-protected large
    /// leaf (split on write) or a table a huge leaf now replaces.
    public var zapped = false
    /// `mapped`: it split a write-protected large leaf in place (the TDP
    /// MMU from 6.2) instead.
    public var split = false
    /// The page was logged anew.
    public var newlyLogged = false

    public init(_ kind: Kind) { self.kind = kind }

    /// Whether the access cost a VM exit.
    public var faulted: Bool { kind != .none }
}
