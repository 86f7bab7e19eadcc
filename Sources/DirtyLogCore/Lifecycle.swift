/// What backs guest memory on the host, and so the largest leaf a slot's
/// pages can be mapped by (dirty_log_perf_test's -s: anonymous, THP or
/// HugeTLB 2 MiB, HugeTLB 1 GiB).
public enum Backing: String, CaseIterable, Sendable, Hashable, Comparable {
    /// 4 KiB pages: every leaf is a 4 KiB one.
    case page4K = "4k"
    /// 2 MiB pages (THP or hugetlbfs): 2 MiB leaves where the slot covers
    /// the whole aligned 2 MiB region.
    case page2M = "2m"
    /// 1 GiB hugetlbfs pages: 1 GiB leaves likewise, 2 MiB or 4 KiB at
    /// the slot's unaligned edges.
    case page1G = "1g"

    /// The paging level of its leaves: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB).
    public var level: Int {
        switch self {
        case .page4K: 1
        case .page2M: 2
        case .page1G: 3
        }
    }

    /// 4 KiB pages per host page.
    public var pages: Int { 1 << (9 * (level - 1)) }

    public var label: String {
        switch self {
        case .page4K: "4 KiB"
        case .page2M: "2 MiB"
        case .page1G: "1 GiB"
        }
    }

    public static func < (a: Backing, b: Backing) -> Bool { a.level < b.level }
}

/// How the kernel treats a slot's large leaves when dirty logging is
/// turned on: what KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES
/// does to them, and so what the first round of writes costs.
public enum EnablePolicy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The seed (3.3): kvm_mmu_slot_remove_write_access() walks every
    /// shadow page and drops every large leaf of the slot; the guest
    /// re-faults its memory at 4 KiB during the first round, and
    /// n_used_mmu_pages grows as it does.
    case drop
    /// Large leaves write-protected, not dropped (c126d94f, "KVM: MMU:
    /// lazily drop large spte", 3.14; the TDP MMU's wrprot_gfn_range()
    /// since 5.10): a read goes through them; the first write to a 2 MiB
    /// region zaps its leaf, flushes, and maps the page at 4 KiB.
    case wrprot
    /// a3fe5dbd (5.17, TDP MMU): every large leaf split to 4 KiB at enable
    /// (kvm_mmu_slot_try_split_huge_pages()), the split leaves then
    /// write-protected: enable costs more, the first round no splits.
    case eagerSplit = "eager-split"
    /// cb00a70b (5.17, TDP MMU) with manual protect and initially-set
    /// (3c9bd400): enable does nothing (the bitmap starts all set); the
    /// first KVM_CLEAR_DIRTY_LOG of a range splits its large leaves and
    /// write-protects the pages it clears.
    case splitOnClear = "split-on-clear"

    /// The kernels that enabled logging this way under `paging`, each run
    /// with its own write fault and disable: the TDP MMU's policies need
    /// two-dimensional paging; wrprot under shadow paging is the shadow MMU's.
    /// A host with the TDP MMU off (`tdpMMU` false: the kernel lab's npt=0
    /// boot) runs 6.1's and 6.13's paths alike, in the shadow MMU: 6.1
    /// alone, the release the lab boots.
    public func kernels(paging: PagingMode, tdpMMU: Bool = true) -> [LifecycleKernel] {
        let modern: [LifecycleKernel] = tdpMMU ? [.linux6_1, .linux6_13] : [.linux6_1]
        switch self {
        case .drop: return [.linux3_3]
        case .wrprot: return paging == .tdp ? modern : [.linux4_2to5_11]
        case .eagerSplit, .splitOnClear: return paging == .tdp ? modern : []
        }
    }

    /// Why no kernel ran the policy under `paging`, or nil.
    public func skipReason(paging: PagingMode) -> String? {
        guard kernels(paging: paging).isEmpty else { return nil }
        return "\(rawValue): eager page splitting is the TDP MMU's (kvm_mmu_slot_try_split_huge_pages() returns unless tdp_mmu_enabled, a3fe5dbd), which shadow paging has not"
    }

    /// Whether the slot uses KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2's
    /// initially-set mode: its bitmap starts all ones, enable protects
    /// nothing.
    public var initiallySet: Bool { self == .splitOnClear }

    /// The commit a report cites for it.
    public var commit: String {
        switch self {
        case .drop: "3.3, kvm_mmu_slot_remove_write_access()"
        case .wrprot: "c126d94f (3.14); TDP MMU: 5.10"
        case .eagerSplit: "a3fe5dbd (5.17)"
        case .splitOnClear: "cb00a70b (5.17), initially-set 3c9bd400"
        }
    }

    public static func < (a: EnablePolicy, b: EnablePolicy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What the kernel does to a slot's 4 KiB leaves when dirty logging is
/// turned off, so that huge mappings come back.
public enum DisablePolicy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The seed (3.3): kvm_arch_commit_memory_region() runs the slot walk
    /// on every update of a slot, this one included, so every leaf stays
    /// 4 KiB and write-protected; a write fault then maps its 2 MiB region
    /// huge again (mmu_set_spte() unlinks the 4 KiB table, which stays
    /// allocated and on active_mmu_pages).
    case wrprotWalk = "wrprot-walk"
    /// 3ea3b7fa (4.2), the shadow MMU's kvm_mmu_zap_collapsible_sptes():
    /// under mmu_lock, every 4 KiB rmap of the slot; each spte on a direct
    /// shadow page whose region the host maps huge is zapped; one TLB flush
    /// for the slot. Faults map the regions huge again, unlinking the
    /// emptied tables.
    case zapRmap = "zap-rmap"
    /// The TDP MMU, 6.1 (85f44f8cc07b) to 6.12: under the read side of
    /// mmu_lock, every non-leaf spte of the slot that could map its region
    /// huge is zapped with tdp_mmu_zap_spte_atomic(), a TLB flush each;
    /// its table is freed; faults map the region huge.
    case zap
    /// 35ef80eb (6.13): the same zaps, one TLB flush for them all (and one
    /// before each yield of mmu_lock).
    case zapBatched = "zap-batched"
    /// 13e2e4f6 (6.13): each such non-leaf spte replaced in place by a huge
    /// leaf made from its first leaf (make_huge_spte()), TLB flushes
    /// batched: no faults afterwards.
    case recover

    /// Whether the policy is the TDP MMU's.
    public var isTDPMMU: Bool { self == .zap || self == .zapBatched || self == .recover }

    /// The disable policies of the kernels that enabled logging by
    /// `enable` under `paging`.
    public static func policies(for enable: EnablePolicy, paging: PagingMode) -> [DisablePolicy] {
        enable.kernels(paging: paging).flatMap { $0.disablePolicies() }
    }

    public var commit: String {
        switch self {
        case .wrprotWalk: "3.3, kvm_arch_commit_memory_region()"
        case .zapRmap: "3ea3b7fa (4.2)"
        case .zap: "85f44f8cc07b (6.1) to 6.12"
        case .zapBatched: "35ef80eb (6.13)"
        case .recover: "13e2e4f6 (6.13)"
        }
    }

    public static func < (a: DisablePolicy, b: DisablePolicy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The kernel release whose enable, write-fault and disable paths a
/// lifecycle runs together, so that each of its figures is one a kernel
/// produced: no 6.13 disable beside a 6.1 write fault.
public enum LifecycleKernel: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The seed: logging drops large leaves (drop), the slot walk at
    /// disable (wrprot-walk), a write fault under the ticket lock.
    case linux3_3 = "3.3"
    /// The shadow MMU from 3ea3b7fa (4.2): large leaves write-protected
    /// (c126d94f, 3.14), the rmap zap at disable (zap-rmap).
    case linux4_2to5_11 = "4.2-5.11"
    /// The TDP MMU of 6.1: a write fault on a write-protected huge leaf
    /// zaps it (tdp_mmu_zap_spte_atomic(), a TLB flush) and the fault maps
    /// 4 KiB below it, the region's other pages faulting in turn; the
    /// disable zaps collapsible tables, a flush each (85f44f8cc07b). The
    /// shadow MMU where 6.1 runs without the TDP MMU (the kernel lab's
    /// npt=0 boot) disables by the rmap zap.
    case linux6_1 = "6.1"
    /// The TDP MMU of 6.13: a write fault on a huge leaf splits it in place
    /// (tdp_mmu_split_huge_page() from kvm_tdp_mmu_map(), c4b33d28, 6.2:
    /// no zap, no flush, the region's other pages mapped read-only and
    /// fixed by the fast path); the disable batches its flushes (35ef80eb)
    /// or recovers huge leaves in place (13e2e4f6).
    case linux6_13 = "6.13"

    /// The era of its mmu_lock, fault paths and harvests.
    public var era: KernelEra {
        switch self {
        case .linux3_3: .linux3_3to3_5
        case .linux4_2to5_11: .linux4_2to5_11
        case .linux6_1, .linux6_13: .linux5_14on
        }
    }

    /// Whether a write fault splits a write-protected huge leaf in place
    /// (c4b33d28, 6.2) rather than zapping it (the TDP MMU only).
    public var splitsHugeLeafOnFault: Bool { self == .linux6_13 }

    /// Its disable policies: the TDP MMU's from 6.1, or with the TDP MMU
    /// off (`tdpMMU` false) the shadow MMU's rmap zap (3ea3b7fa's
    /// kvm_rmap_zap_collapsible_sptes(), 6.1's too).
    public func disablePolicies(tdpMMU: Bool = true) -> [DisablePolicy] {
        switch self {
        case .linux3_3: [.wrprotWalk]
        case .linux4_2to5_11: [.zapRmap]
        case .linux6_1: tdpMMU ? [.zap] : [.zapRmap]
        case .linux6_13: tdpMMU ? [.zapBatched, .recover] : [.zapRmap]
        }
    }

    /// "Linux 6.13"
    public var label: String { self == .linux4_2to5_11 ? "Linux 4.2 to 5.11" : "Linux \(rawValue)" }

    public static func < (a: LifecycleKernel, b: LifecycleKernel) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
