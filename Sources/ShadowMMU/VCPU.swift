import CAtomics
import DirtyLogCore

/// struct kvm_dirty_gfn: one dirty-ring entry, shared between the kernel,
/// which pushes it, and user space, which collects it and marks it for reset.
public struct DirtyGFN {
    public var flags: UInt32
    public var slot: UInt32
    public var offset: UInt64

    /// KVM_DIRTY_GFN_F_DIRTY: pushed, not yet collected.
    public static let dirty: UInt32 = 1
    /// KVM_DIRTY_GFN_F_RESET: collected; the next KVM_RESET_DIRTY_RINGS
    /// re-protects the page and frees the entry.
    public static let reset: UInt32 = 2
}

/// A vCPU's dirty-logging buffers: its dirty ring (KVM_CAP_DIRTY_LOG_RING)
/// and its PML buffer (Intel's page-modification log).
///
/// The ring's three indices: the kernel pushes at `dirtyIndex` and resets
/// from `resetIndex`; user space collects from `fetchIndex`.
public struct VCPULogBuffers {
    public var ring: UnsafeMutablePointer<DirtyGFN>
    public var ringEntries: Int
    public var dirtyIndex = 0
    public var resetIndex = 0
    public var fetchIndex = 0
    /// Guest-physical frames the hardware logged (PML_ENTITY_NUM of them
    /// fill it), with how many are in.
    public var pml: UnsafeMutablePointer<GFN>
    public var pmlCount = 0

    /// PML_ENTITY_NUM
    public static let pmlEntries = 512
    /// KVM_DIRTY_RING_RSVD_ENTRIES: entries kept free past the soft limit,
    /// so that a vCPU can finish what it is doing before it stops.
    public static let ringReserved = 64

    /// kvm_dirty_ring_soft_full()
    @inline(__always) public var ringSoftFull: Bool {
        dirtyIndex &- resetIndex >= ringEntries - Self.ringReserved
    }
}

extension MMU {
    /// kvm_dirty_ring_push(): the kernel records (slot, offset) in the vCPU's
    /// ring. Returns whether the ring is now soft-full, which stops the vCPU
    /// (KVM_EXIT_DIRTY_RING_FULL) until user space harvests.
    @inline(__always)
    func dirtyRingPush(vcpu: Int, slot: SlotView, offset: SlotOffset) -> Bool {
        let v = vcpus.baseAddress! + vcpu
        let e = v.pointee.ring + (v.pointee.dirtyIndex & (v.pointee.ringEntries - 1))
        e.pointee.slot = UInt32(slot.id)
        e.pointee.offset = UInt64(offset.rawValue)
        withUnsafeMutablePointer(to: &e.pointee.flags) { ca_store_release32($0, DirtyGFN.dirty) }
        v.pointee.dirtyIndex &+= 1
        return v.pointee.ringSoftFull
    }

    /// vmx_flush_pml_buffer() for every vCPU: each logged frame is marked
    /// dirty in the slot's log, and the buffers are emptied. The kernel does
    /// it at the start of a harvest (kvm_arch_sync_dirty_log) and when a
    /// buffer fills (a PML-full exit).
    @inline(__always)
    public func flushPMLBuffers(slot s: SlotView) {
        var i = 0
        while i < vcpus.count {
            let v = vcpus.baseAddress! + i
            let n = v.pointee.pmlCount
            var j = 0
            while j < n {
                markPageDirty(slot: s, gfn: v.pointee.pml[j], vcpu: i)
                j &+= 1
            }
            v.pointee.pmlCount = 0
            i &+= 1
        }
    }
}
