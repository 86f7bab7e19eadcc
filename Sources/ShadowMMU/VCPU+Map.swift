import CAtomics
import DirtyLogCore

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
    /// The page was logged anew.
    public var newlyLogged = false

    public init(_ kind: Kind) { self.kind = kind }

    /// Whether the access cost a VM exit.
    public var faulted: Bool { kind != .none }
}

/// The guest's accesses in the lifecycle: dirty_log_perf_test's vCPUs
/// touching their memory through the paging structure as it stands, which
/// logging's enable and disable reshape. The hardware walks the guest's
/// tree (the direct tree, or shadow paging's address space 0); what it
/// cannot use faults.
extension MMU {
    /// The hardware's walk for `gfn`: the entry where it stopped (a present
    /// leaf, or an entry that is not present) and its level.
    @inline(__always)
    func walkGuestTree(_ gfn: GFN) -> (sptep: UnsafeMutablePointer<UInt64>, level: Int, spte: UInt64) {
        var table = guestRootTable
        var level = VMLayout.rootLevel
        while true {
            let e = table + Int((gfn.rawValue >> (SPTE.levelBits &* UInt64(level &- 1))) & 511)
            let spte = ca_read_once64(e)
            if !isShadowPresentSPTE(spte) || level == 1 || isLargeSPTE(spte) { return (e, level, spte) }
            table = SPTE.childTable(spte)
            level &-= 1
        }
    }

    /// vCPU `vcpu` reads or writes `gfn` (in guest mode). A present leaf
    /// takes a read, and a write if writable; a write to a read-only leaf
    /// faults into `vcpuWriteFault` (4 KiB, or a large leaf of a slot that
    /// no longer logs); anything else - nothing mapped, or a large leaf a
    /// logging slot must map at 4 KiB - faults into `vcpuMapFault`. An
    /// entry frozen by a zap in flight is walked again.
    @inline(__always)
    public func vcpuAccess(_ vcpu: Int, slot s: SlotView, gfn: GFN, write: Bool, fastPath: Bool) -> VCPUAccess {
        while true {
            let (sptep, level, spte) = walkGuestTree(gfn)
            if isFrozenSPTE(spte) {
                ca_cpu_relax()
                continue
            }
            if isShadowPresentSPTE(spte) {
                if !write || isWritableSPTE(spte) { return VCPUAccess(.none) }
                // fast_page_fault() runs first where the era has it: for a
                // direct spte, a large one only in the TDP MMU (4.2's skipped
                // any above 4 KiB) and only while the slot does not log. Else
                // the slow path fixes the leaf if it is as large as the slot
                // allows now, or maps the larger leaf over it.
                let fast = fastPath && vm.pointee.era.hasFastPageFault && vm.pointee.tdpRoot >= 0
                    && (level == 1 || (tdpMMU && !s.state.pointee.dirtyLogging))
                if fast || s.maxMappingLevel(gfn, hostLevel: vm.pointee.hostLevel) == level {
                    let f = vcpuWriteFault(vcpu, slot: s, gfn: level == 1 ? gfn : Self.regionStart(gfn, level: level),
                                           sptep: sptep, fastPath: fast)
                    var a = VCPUAccess(.fixed(f.kind))
                    a.newlyLogged = f.newlyLogged
                    return a
                }
            }
            return vcpuMapFault(vcpu, slot: s, gfn: gfn)
        }
    }

    /// A fault that builds the mapping of `gfn`, from the VM exit to the
    /// re-entry: direct_page_fault() → __direct_map() / kvm_tdp_mmu_map(),
    /// or FNAME(fetch) in shadow paging's address space 0. Under mmu_lock
    /// (the TDP MMU's read side, entries changed by cmpxchg and retried on
    /// a lost race), walk from the root to the largest level the slot
    /// allows (4 KiB while it logs, the host's page size otherwise):
    ///
    /// - a large leaf above that level (write-protected for logging) is
    ///   removed first, TLBs flushed (drop_large_spte(); the TDP MMU's
    ///   tdp_mmu_zap_spte_atomic());
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
                let e = table + Int((gfn.rawValue >> (SPTE.levelBits &* UInt64(level &- 1))) & 511)
                var cur = ca_read_once64(e)
                if isFrozenSPTE(cur) { ca_cpu_relax(); continue retry }
                if isShadowPresentSPTE(cur) && isLargeSPTE(cur) {
                    guard zapLargeLeaf(e, old: cur, gfn: gfn, level: level, shared: shared) else { continue retry }
                    result.zapped = true
                    cur = 0
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
            let e = table + Int((gfn.rawValue >> (SPTE.levelBits &* UInt64(goal &- 1))) & 511)
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
                    let made = old | SPTE.writable | SPTE.dirty | SPTE.mmuWritable
                    if shared {
                        guard ca_cmpxchg64(e, old, made) != 0 else { continue retry }
                    } else {
                        ca_write_once64(e, made)
                    }
                }
                result.level = goal
                result.newlyLogged = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu)
                return result
            }
            let page = pages.page(holding: e)
            guard installLeaf(e, page: page, gfn: Self.regionStart(gfn, level: goal), level: goal, slot: s, writable: true,
                              shared: shared, expecting: old) else { continue retry }
            result.level = goal
            result.newlyLogged = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu)
            return result
        }
    }
}
