/// A way to write-protect a slot at harvest time, with the protocol it
/// hands the log out by.
public enum Strategy: String, CaseIterable, Sendable, Hashable {
    /// kvm_mmu_slot_remove_write_access() at the seed: walk every shadow page of the VM.
    case slotWalk = "slot-walk"
    /// The seed's new branch: per dirty page, lock and walk its rmaps.
    case rmap
    /// The seed's rule: `rmap` when nr_dirty_pages < n_used_mmu_pages, else `slot-walk`.
    case seed
    /// Linux 3.4-3.5: one lock hold; per non-zero bitmap word, xchg it to
    /// zero and write-protect the 4 KiB rmap of each set bit.
    case masked
    /// The whole slot through its rmap arrays, every gfn at every level,
    /// yielding the lock every so many gfns (slot_handle_level).
    case rmapWalk = "rmap-walk"
    /// The TDP MMU's range walk: the paging structure over the slot's gfn
    /// range, no rmaps (kvm_tdp_mmu_wrprot_slot). Two-dimensional paging only.
    case tdpWalk = "tdp-walk"
    /// The same structure visited per bitmap word, for its set bits only
    /// (clear_dirty_pt_masked). Two-dimensional paging only.
    case tdpMasked = "tdp-masked"
    /// PML: harvest clears dirty bits instead of writable bits; guest
    /// writes do not fault, the hardware logs them.
    case dbitClear = "dbit-clear"
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: GET only copies the bitmap, CLEAR
    /// re-protects in 64-page-aligned chunks, the lock taken per chunk.
    case clearChunked = "clear-chunked"
    /// KVM_CAP_DIRTY_LOG_RING: per-vCPU rings of (slot, offset); harvest
    /// collects them and resets, merging entries within 64 pages into masks.
    case ring
    /// The project's rule: per harvest, the cheapest of the KVM_GET_DIRTY_LOG
    /// family by a cost model measured on the machine.
    case adaptive

    /// What the seed's rule picks at this many dirty pages.
    @inline(__always)
    public static func seedChoice(nrDirtyPages: Int, nUsedMMUPages: Int) -> Strategy {
        nrDirtyPages < nUsedMMUPages ? .rmap : .slotWalk
    }

    /// Strategies that pick another per harvest rather than protect on their own.
    public var isRule: Bool { self == .seed || self == .adaptive }

    /// Whether the strategy walks the two-dimensional-paging structure, so
    /// needs the VM to have one.
    public var needsTDP: Bool { self == .tdpWalk || self == .tdpMasked }

    /// What the slot's leaves keep cleared between harvests.
    public var protection: Protection { self == .dbitClear ? .dirtyBit : .writeProtect }

    /// Whether guest writes are logged to dirty rings rather than the bitmap.
    public var usesRing: Bool { self == .ring }

    /// The strategies one KVM_GET_DIRTY_LOG implementation could switch
    /// between per call: same protocol with user space (a bitmap handed out,
    /// pages write-protected), same write path. Rules are measured against
    /// the best of these. dbit-clear, clear-chunked and ring change the
    /// protocol or the hardware path and are reported beside them.
    public static let getDirtyLogFamily: [Strategy] = [.slotWalk, .rmap, .masked, .rmapWalk, .tdpWalk, .tdpMasked]

    /// What adaptive chooses among.
    public static let adaptiveCandidates: [Strategy] = [.masked, .tdpMasked, .rmap, .slotWalk, .rmapWalk, .tdpWalk]

    public var summary: String {
        switch self {
        case .slotWalk: "every shadow page on the VM-wide list, the slot's tables scanned whole (seed era)"
        case .rmap: "per dirty page: take mmu_lock, walk its 4 KiB rmap, look up its large-page rmaps (the seed's branch)"
        case .seed: "the seed's rule: rmap when nr_dirty_pages < n_used_mmu_pages, else slot-walk"
        case .masked: "one lock hold; per non-zero bitmap word: xchg to zero, protect the 4 KiB rmap of each set bit"
        case .rmapWalk: "every gfn's rmap at every level of the slot, yielding the lock periodically"
        case .tdpWalk: "the two-dimensional paging structure over the slot's range, no rmaps"
        case .tdpMasked: "the two-dimensional paging structure, visited per bitmap word for its set bits"
        case .dbitClear: "PML: clear dirty bits per bitmap word; guest writes set them without faulting"
        case .clearChunked: "manual protect: GET copies the bitmap; CLEAR re-protects in chunks, a lock per chunk"
        case .ring: "per-vCPU dirty rings; collect, reset, merge entries within 64 pages into masks"
        case .adaptive: "per harvest, the cheapest of slot-walk, rmap, masked, rmap-walk, tdp-walk, tdp-masked by a cost model measured here"
        }
    }
}

/// What a protection did, counted inside its hot loop (in registers,
/// stored once at the end).
public struct ProtectCounters: Equatable, Sendable {
    /// Shadow pages reached on the VM-wide list, or tables visited by a TDP walk.
    public var shadowPagesVisited = 0
    /// Sptes read by scanning whole tables.
    public var sptesScanned = 0
    /// Sptes whose writable (or, for dbit-clear, dirty) bit was cleared.
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
