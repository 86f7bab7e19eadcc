import CAtomics
import DirtyLogCore

/// The guest's accesses in the lifecycle: dirty_log_perf_test's vCPUs
/// touching their memory through the paging structure as it stands, which
/// logging's enable and disable reshape. The hardware walks the guest's
/// tree (the direct tree, or shadow paging's address space 0); what it
/// cannot use faults.
extension MMU {
    /// A fault that builds the mapping of `gfn`, from the VM exit to the
    /// re-entry: direct_page_fault() → __direct_map() / kvm_tdp_mmu_map(),
    /// or FNAME(fetch) in shadow paging's address space 0. Under mmu_lock
    /// (the TDP MMU's read side, entries changed by cmpxchg and retried on
    /// a lost race), walk from the root to the largest level the slot
    /// allows (4 KiB while it logs, the host's page size otherwise):
    ///
    /// - a large leaf above that level (write-protected for logging) is
    ///   removed first, TLBs flushed (drop_large_spte(); the TDP MMU's
    ///   tdp_mmu_zap_spte_atomic() to 6.1), or, by the TDP MMU from 6.2
    ///   (c4b33d28), split in place into a table of leaves one level down
    ///   with its bits (tdp_mmu_split_huge_page(): no flush, the
    ///   translations unchanged) and the walk goes on into it;
    /// - a missing table is allocated and linked: direct in the direct
    ///   tree and below a guest huge page, else a shadow of the guest's
    ///   page table;
    /// - at the level, a table a huge leaf may now replace is unlinked
    ///   (the shadow MMU: it stays allocated) or torn down (the TDP MMU),
    ///   TLBs flushed;
    /// - the leaf is installed writable (the host's page is; a read fault
    ///   maps it writable too, as make_spte() does with ACC_ALL) and, while
    ///   the slot logs, the page marked dirty.
    @inline(never)
    public func vcpuMapFault(_ vcpu: Int, slot s: SlotView, gfn: GFN) -> VCPUAccess {
        let c = context(vcpu)
        vcpuExitGuest(c)
        ca_store_seq32(&c.pointee.inSRCU, 1)
        let result = mapGFN(slot: s, gfn: gfn, vcpu: vcpu)
        ca_store32(&c.pointee.inSRCU, 0)
        vcpuEnterGuest(vcpu)
        return result
    }

    /// `vcpuMapFault`'s work, between the exit and the entry: under
    /// mmu_lock (the read side of the TDP MMU's).
    @inline(__always)
    func mapGFN(slot s: SlotView, gfn: GFN, vcpu: Int) -> VCPUAccess {
        let shared = tdpMMU
        let direct = vm.pointee.tdpRoot >= 0
        let hostLevel = vm.pointee.hostLevel
        lockMMUShared()
        defer { unlockMMUShared() }
        var result = VCPUAccess(.mapped)
        retry: while true {
            let goal = s.maxMappingLevel(gfn, hostLevel: hostLevel)
            let guestLevel = s.hugeLevel(gfn, hostLevel: hostLevel)
            var table = guestRootTable
            var level = VMLayout.rootLevel
            while level > goal {
                let e = SPTE.entry(in: table, gfn: gfn, level: level)
                var cur = ca_read_once64(e)
                if isFrozenSPTE(cur) { ca_cpu_relax(); continue retry }
                if isShadowPresentSPTE(cur) && isLargeSPTE(cur) {
                    if shared && vm.pointee.splitHugeLeafOnFault {
                        guard splitLargeLeaf(e, old: cur, gfn: gfn, level: level, slot: s, shared: true) else { continue retry }
                        result.split = true
                        result.tables &+= 1
                        cur = ca_read_once64(e)
                    } else {
                        guard zapLargeLeaf(e, old: cur, gfn: gfn, level: level, shared: shared) else { continue retry }
                        result.zapped = true
                        cur = 0
                    }
                }
                if isShadowPresentSPTE(cur) {
                    table = SPTE.childTable(cur)
                } else {
                    // Below a guest huge page the kernel's tables are direct
                    // (FNAME(fetch)'s direct_access); above it, they shadow the
                    // guest's page tables.
                    guard let t = linkNewTable(e, old: cur, gfn: gfn, level: level, direct: direct || level &- 1 < guestLevel,
                                               shared: shared) else { continue retry }
                    result.tables &+= 1
                    table = t
                }
                level &-= 1
            }
            let e = SPTE.entry(in: table, gfn: gfn, level: goal)
            var old = ca_read_once64(e)
            if isFrozenSPTE(old) { ca_cpu_relax(); continue retry }
            if isShadowPresentSPTE(old) && goal > 1 && !isLargeSPTE(old) {
                if shared {
                    guard zapNonLeaf(e, old: old, level: goal, replacement: 0, shared: true) else { continue retry }
                    flushRemoteTLBs(widen: false)
                } else {
                    unlinkChildTable(e)
                }
                result.zapped = true
                old = 0
            }
            if isShadowPresentSPTE(old) {
                // Another vCPU mapped it first.
                if !isWritableSPTE(old) {
                    guard makeWritableOnFault(e, old, shared: shared) else { continue retry }
                }
                result.level = goal
                result.newlyLogged = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu).newlyLogged
                return result
            }
            let page = pages.page(holding: e)
            guard installLeaf(e, page: page, gfn: Self.regionStart(gfn, level: goal), level: goal, slot: s, writable: true,
                              shared: shared, expecting: old) else { continue retry }
            result.level = goal
            result.newlyLogged = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu).newlyLogged
            return result
        }
    }
}
