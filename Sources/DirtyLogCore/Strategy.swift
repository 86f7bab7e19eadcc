/// A way to write-protect a slot at harvest time, with the protocol it
/// hands the log out by: the names the model, the reports and the command
/// line share. What each does is in ShadowMMU's `Strategies/`.
public enum Strategy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// kvm_mmu_slot_remove_write_access() at the seed: walk every shadow page of the VM.
    case slotWalk = "slot-walk"
    /// The seed's new branch as written: per dirty page, lock and walk its
    /// rmaps, release the lock; one TLB flush after the last, outside it.
    case rmap
    /// The same branch as 6dbf79e7 fixed it ("KVM: Fix write protection race
    /// during dirty logging"): one hold of mmu_lock over every dirty page
    /// and the TLB flush.
    case rmapFixed = "rmap-fixed"
    /// The seed's rule: `rmap` when nr_dirty_pages < n_used_mmu_pages, else `slot-walk`.
    case seed
    /// Linux 3.4 (kvm_mmu_write_protect_pt_masked, 5dc99b23; one lock hold
    /// and xchg per word since 60c34612): per non-zero bitmap word, xchg it
    /// to zero and write-protect the 4 KiB rmap of each set bit.
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

    /// What a run measures when no strategy is named: every one but
    /// rmap-fixed, which only differs from rmap when vCPUs run through the
    /// harvest (the concurrent scenario's default has it).
    public static let sweepDefaults: [Strategy] = allCases.filter { $0 != .rmapFixed }

    /// What the concurrent scenario measures by default: the seed's two
    /// branches, its branch as fixed, and the kernel's later bitmap strategies.
    public static let concurrentDefaults: [Strategy] = [.slotWalk, .rmap, .rmapFixed, .masked, .tdpWalk, .tdpMasked]

    /// Whether vCPUs can run through the strategy's harvest in the model: the
    /// write-protecting KVM_GET_DIRTY_LOG family (dbit-clear, clear-chunked,
    /// ring and adaptive are measured without them).
    public var runsConcurrently: Bool { Self.getDirtyLogFamily.contains(self) || self == .rmapFixed || self == .seed }

    /// Whether the strategy releases mmu_lock before its TLB flush while
    /// page-table shadowing of its era flushes only when it cleared the
    /// writable bit itself: the seed's race (rmap, and the seed's rule when
    /// it picks rmap). Its race violations are counted apart.
    public var racesWithShadowing: Bool { self == .rmap || self == .seed }

    /// The kernel era whose mmu_lock, fault path and page-table shadowing a
    /// concurrent harvest by this strategy runs with.
    public var era: KernelEra {
        switch self {
        case .slotWalk, .rmap, .rmapFixed, .seed: .seed
        case .tdpWalk, .tdpMasked: .tdpMMU
        default: .modern
        }
    }

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

    /// Whether guest writes are logged to dirty rings rather than the bitmap.
    public var usesRing: Bool { self == .ring }

    /// Whether the harvest has two phases timed apart (GET, then CLEAR).
    public var hasTwoPhases: Bool { self == .clearChunked }

    /// The strategies one KVM_GET_DIRTY_LOG implementation could switch
    /// between per call: same protocol with user space (a bitmap handed out,
    /// pages write-protected), same write path. Rules are measured against
    /// the best of these. dbit-clear, clear-chunked and ring change the
    /// protocol or the hardware path and are reported beside them.
    public static let getDirtyLogFamily: [Strategy] = [.slotWalk, .rmap, .masked, .rmapWalk, .tdpWalk, .tdpMasked]

    /// What adaptive chooses among.
    public static let adaptiveCandidates: [Strategy] = [.masked, .tdpMasked, .rmap, .slotWalk, .rmapWalk, .tdpWalk]

    /// The model strategy that does what the kernel's KVM_GET_DIRTY_LOG does
    /// with the shadow MMU (tdp_mmu=N): per non-zero bitmap word, under one
    /// hold of mmu_lock, write-protect the word's pages through their rmaps
    /// (kvm_mmu_write_protect_pt_masked; MODEL.md's "masked rmap").
    public static let counterpartOfKernelGet = Strategy.masked

    public var summary: String {
        switch self {
        case .slotWalk: "every shadow page on the VM-wide list, the slot's tables scanned whole (seed era)"
        case .rmap: "per dirty page: take mmu_lock, walk its 4 KiB rmap, look up its large-page rmaps (the seed's branch)"
        case .rmapFixed: "rmap under one hold of mmu_lock, the TLB flush inside it (6dbf79e7's fix of the seed's race)"
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

    /// Declaration order.
    public static func < (a: Strategy, b: Strategy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The ways the real kernel hands out a dirty log, as `points.csv` names them.
public enum KernelStrategy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// KVM_GET_DIRTY_LOG: the kernel copies the bitmap out and re-protects.
    case get = "kvm-get"
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG only reads,
    /// KVM_CLEAR_DIRTY_LOG of what it returned re-protects.
    case getClear = "kvm-get+clear"
    /// KVM_CAP_DIRTY_LOG_RING: read the vCPU's ring, then KVM_RESET_DIRTY_RINGS.
    case ring = "kvm-ring"

    /// Whether the strategy needs a VM of its own (the ring must be enabled
    /// before the vCPU exists and rules out the bitmap ioctls).
    public var usesRing: Bool { self == .ring }

    public static func < (a: KernelStrategy, b: KernelStrategy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// Which implementation a row measured.
public enum Backend: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The struct-of-arrays model.
    case model
    /// The real kernel through /dev/kvm.
    case kvm

    public static func < (a: Backend, b: Backend) -> Bool { a.rawValue < b.rawValue }
}

/// A strategy of either backend: what a row of points.csv measured.
public enum MeasuredStrategy: Hashable, Sendable, Comparable, CustomStringConvertible {
    case model(Strategy)
    case kernel(KernelStrategy)

    public var backend: Backend {
        switch self {
        case .model: .model
        case .kernel: .kvm
        }
    }

    /// The name in points.csv: the model's and the kernel's names do not overlap.
    public var name: String {
        switch self {
        case .model(let s): s.rawValue
        case .kernel(let k): k.rawValue
        }
    }

    public var description: String { name }

    public init?(name: String) {
        if let s = Strategy(rawValue: name) { self = .model(s) } else if let k = KernelStrategy(rawValue: name) { self = .kernel(k) } else { return nil }
    }

    /// The model strategy, when it is one.
    public var model: Strategy? {
        if case .model(let s) = self { return s }
        return nil
    }

    /// Whether harvests during the guest's writes (full rings) belong to the round's cost.
    public var usesRing: Bool {
        switch self {
        case .model(let s): s.usesRing
        case .kernel(let k): k.usesRing
        }
    }

    public static func < (a: MeasuredStrategy, b: MeasuredStrategy) -> Bool {
        switch (a, b) {
        case (.kernel(let x), .kernel(let y)): x < y
        case (.model(let x), .model(let y)): x < y
        case (.kernel, .model): true
        case (.model, .kernel): false
        }
    }
}

/// The kernel a concurrent harvest runs in: what mmu_lock is, and what a
/// thread write-protecting a guest page table (mmu_sync_children(),
/// kvm_mmu_get_page()) flushes on.
public enum KernelEra: String, Sendable, Hashable, CaseIterable {
    /// Linux 3.3, the seed: a ticket spinlock; the shadower flushes only if
    /// it cleared a writable bit itself.
    case seed
    /// 4.2 on, the shadow MMU: a queued spinlock; since 198c74f4 the shadower
    /// also flushes when an spte is still writable for the fast path
    /// (SPTE_MMU_WRITEABLE), so a harvest may flush after unlocking.
    case modern
    /// 5.10 on, the TDP MMU: mmu_lock a rwlock, faults and tdp-walk under
    /// its read side (sptes changed by cmpxchg), tdp-masked under its write
    /// side; no guest page tables to shadow.
    case tdpMMU = "tdp-mmu"
}

/// How a vCPU's write to a write-protected spte is handled.
public enum FaultPath: String, Sendable, Hashable, CaseIterable, Comparable {
    /// As at the seed: the fault takes mmu_lock, makes the spte writable and
    /// marks the page dirty under it (the TDP MMU: under its read side).
    case locked
    /// c7ba5b48's fast path: an spte write-protected only for dirty logging
    /// (still SPTE_MMU_WRITEABLE) is made writable by cmpxchg without the
    /// lock, and the page marked dirty after; anything else takes the lock.
    case fast

    public static func < (a: FaultPath, b: FaultPath) -> Bool { a.rawValue > b.rawValue }
}
