import CAtomics
import DirtyLogCore

/// VM-wide mutable scalars of `struct kvm_arch`, in arena memory so that the
/// `MMU` handle (a plain value) can update them.
public struct VMState {
    static let pages4KOffset = MemoryLayout<VMState>.offset(of: \VMState.pages4K)!
    static let pages2MOffset = MemoryLayout<VMState>.offset(of: \VMState.pages2M)!
    static let pages1GOffset = MemoryLayout<VMState>.offset(of: \VMState.pages1G)!

    /// mmu_lock, alone on its cache line, of the kind its era had (`LockKind`).
    public var mmuLock = ca_mmu_lock()
    /// kvm_make_all_cpus_request(KVM_REQ_TLB_FLUSH): bumped by each
    /// kvm_flush_remote_tlbs(); a vCPU acknowledges it by flushing its TLB.
    public var flushGeneration: UInt64 = 0
    /// vCPU threads run through the harvests (the concurrent scenario):
    /// flushes wait for their acknowledgements, and nr_dirty_pages grows by
    /// atomic adds. Set by `startGuests`.
    public var concurrent = false
    /// The adaptive rule's decision table, measured on the machine and
    /// installed by `VirtualMachine.installDecisionTable(_:small:)`.
    public var adaptive = AdaptiveState()
    /// The kernel the harvests and faults run in: mmu_lock's kind, whether
    /// faults have a fast path, what page-table shadowing flushes on
    /// (`VirtualMachine.enterEra`).
    public var era = KernelEra.linux3_3to3_5
    /// What the model charges in time for work it does not do (a VM exit
    /// and entry, an IPI's delivery): the one seam between the model and the
    /// clock, set by the measuring side (`VirtualMachine.setExitCosts`).
    public var charged = ChargedCosts()
    /// The vCPU threads' shared state (`VCPUContext`), nil without them.
    public var guests: UnsafeMutablePointer<VCPUContext>? = nil
    public var guestCount = 0
    /// Harvests begun and ended, as the vCPU threads see them: odd while
    /// one runs (the window their measurements are taken in).
    public var harvestState: UInt64 = 0
    /// Head of `active_mmu_pages` (the newest page), -1 when empty.
    public var activeHead: Int32 = -1
    /// n_used_mmu_pages: every live shadow page, all slots and levels, roots included.
    public var nUsedMMUPages = 0
    /// kvm_flush_remote_tlbs() calls.
    public var tlbFlushes = 0
    /// kvm->stat.pages[]: leaves installed at 4 KiB, 2 MiB and 1 GiB, as
    /// the binary statistics pages_4k, pages_2m and pages_1g count them
    /// (kvm_update_page_stats(), 5.13; `lpages` counted the large ones
    /// before). Atomic adds where faults install leaves side by side.
    public var pages4K: UInt64 = 0
    public var pages2M: UInt64 = 0
    public var pages1G: UInt64 = 0
    /// The level of the host pages backing guest memory (`Backing.level`):
    /// the largest leaf a fault may install (host_pfn_mapping_level()).
    public var hostLevel = 1
    /// kvm_memslots_have_rmaps(): whether installing and zapping a leaf
    /// updates the rmaps. The TDP MMU keeps none for its own sptes; a VM
    /// of its era built for the lifecycle leaves them empty, as it does.
    public var memslotsHaveRmaps = true
    /// KVM_CAP_DIRTY_LOG_RING: mark_page_dirty() pushes to the vCPU's ring
    /// instead of setting a bitmap bit.
    public var dirtyRing = false
    /// Next synthetic gfn for a guest page table that an indirect page
    /// shadows: above all guest memory, in no slot.
    public var nextGuestTableGFN: UInt64 = 1 << 36
    /// The root page the guest's own map of its memory goes through: the
    /// direct tree, or shadow paging's address space 0. -1 before any.
    public var guestRoot: Int32 = -1
    /// kvm->arch.tdp_mmu_enabled: whether the TDP MMU runs the direct tree
    /// in the eras that have it. True with two-dimensional paging; false
    /// for a host with it off (kvm_amd npt=0, the kernel lab's shadow
    /// boot), whose shadow MMU maps even a guest without paging directly
    /// (nonpaging mode: direct shadow pages, rmaps, mmu_lock's write side).
    public var tdpMMUEnabled = true
    /// Whether the TDP MMU's write fault splits a large leaf it must map
    /// below in place (tdp_mmu_split_huge_page() from kvm_tdp_mmu_map(),
    /// c4b33d28, 6.2) rather than zapping it (5.10 to 6.1). Set by the
    /// lifecycle's kernel.
    public var splitHugeLeafOnFault = false
    /// The root of a direct tree indexed by gfn (the two-dimensional paging
    /// layout), -1 when there is none: what tdp-walk and tdp-masked walk.
    /// Every shadow page of such a VM is direct (sp->role.direct).
    public var tdpRoot: Int32 = -1
    /// clear-chunked re-protects in KVM_CLEAR_DIRTY_LOG calls of this many pages.
    public var clearChunkPages = 1 << 18
}

/// A virtual machine's shadow MMU: its slots, its shadow pages and the lock
/// and counters around them. It owns all of that memory (in the model's
/// jemalloc arena) and frees it when released.
///
/// Strategies and the fault path do not touch the class: they run on an
/// `MMU` handle built by `withMMU`, a value of raw pointers hoisted once.
public final class VirtualMachine {
    public let arena: JemallocArena
    let table: ShadowPageTable
    let descPool: PteListDescPool
    private(set) var slots: [MemorySlot] = []
    package let state: UnsafeMutablePointer<VMState>
    /// Bugs planted on purpose (`FaultInjection`), apart from the kernel's state.
    let injected: UnsafeMutablePointer<FaultInjection>
    /// memslots in `search_memslots()` order: largest first, as the seed's kernel kept them.
    private var memslots: UnsafeMutablePointer<SlotView>
    private static let maxSlots = 32
    /// Each vCPU's ring and PML buffer.
    private let vcpus: UnsafeMutableBufferPointer<VCPULogBuffers>
    /// Root shadow page of each address space (one for two-dimensional paging,
    /// one per mapping under shadow paging).
    package internal(set) var roots: [Int32] = []
    /// Next synthetic gfn for a guest page table that an indirect page shadows.
    var nextGuestTableGFN: GFN {
        get { GFN(state.pointee.nextGuestTableGFN) }
        set { state.pointee.nextGuestTableGFN = newValue.rawValue }
    }

    /// An empty VM. `expectedShadowPages` sizes the page columns (they grow
    /// if exceeded); each of the `vcpus` gets a dirty ring of `ringEntries`
    /// (a power of two) and a PML buffer.
    public init(arena: JemallocArena = .model, expectedShadowPages: Int = 1024, vcpus: Int = 1, ringEntries: Int = 4096) {
        precondition(vcpus >= 1 && ringEntries >= 2 * VCPULogBuffers.ringReserved && ringEntries & (ringEntries - 1) == 0)
        self.arena = arena
        table = ShadowPageTable(arena: arena, capacity: expectedShadowPages)
        descPool = PteListDescPool(arena: arena)
        precondition(MemoryLayout<VMState>.offset(of: \VMState.mmuLock) == 0, "MMU.lockWord needs mmu_lock first in VMState")
        state = arena.allocate(VMState.self, count: 1, alignment: 64)
        state.initialize(to: VMState())
        injected = arena.allocate(FaultInjection.self, count: 1, alignment: 64)
        injected.initialize(to: FaultInjection())
        memslots = arena.allocate(SlotView.self, count: Self.maxSlots)
        let v = arena.allocate(VCPULogBuffers.self, count: vcpus)
        for i in 0..<vcpus {
            (v + i).initialize(to: VCPULogBuffers(
                ring: arena.allocate(DirtyGFN.self, count: ringEntries, alignment: 4096), ringEntries: ringEntries,
                pml: arena.allocate(GFN.self, count: VCPULogBuffers.pmlEntries, alignment: 4096)))
        }
        self.vcpus = UnsafeMutableBufferPointer(start: v, count: vcpus)
    }

    deinit {
        for v in vcpus {
            arena.free(v.ring)
            arena.free(v.pml)
        }
        arena.free(vcpus.baseAddress!)
        if let table = state.pointee.adaptive.table { arena.free(table) }
        arena.free(state)
        arena.free(injected)
        arena.free(memslots)
    }

    public var vcpuCount: Int { vcpus.count }

    /// KVM_SET_USER_MEMORY_REGION for a new slot.
    public func addSlot(id: Int, baseGFN: GFN, npages: Int) {
        precondition(id >= 0 && id < 64 && slots.count < Self.maxSlots && npages > 0)
        precondition(!slots.contains { $0.view.id == id }, "slot \(id) exists")
        let end = baseGFN.advanced(by: SlotOffset(npages))
        precondition(!slots.contains { $0.view.baseGFN < end && baseGFN < $0.view.endGFN }, "slots overlap")
        slots.append(MemorySlot(arena: arena, id: id, baseGFN: baseGFN, npages: npages))
        let sorted = slots.map(\.view).sorted { $0.npages > $1.npages }
        for (i, v) in sorted.enumerated() { (memslots + i).initialize(to: v) }
    }

    /// The slot with this id.
    public func slot(_ id: Int) -> SlotView {
        guard let s = slots.first(where: { $0.view.id == id }) else { preconditionFailure("no slot \(id)") }
        return s.view
    }

    public var nUsedMMUPages: Int { state.pointee.nUsedMMUPages }
    public var tlbFlushes: Int { state.pointee.tlbFlushes }
    /// Whether the VM has the direct tree tdp-walk and tdp-masked walk.
    public var hasTDP: Bool { state.pointee.tdpRoot >= 0 }
    /// Live shadow pages: on `active_mmu_pages` (n_used_mmu_pages), zapped
    /// pages whose tables wait for `reclaimZappedPages` not counted.
    public var shadowPagesAllocated: Int { table.rowsUsed - Int(table.columns.pool.pointee.freeCount) - table.columns.pool.pointee.zappedCount }
    /// pte_list_desc descriptors in use.
    public var pteListDescsInUse: Int { descPool.inUse }

    /// Runs `body` on the handle the hot paths use. The handle is valid only
    /// inside `body`: the page columns may move when pages are added later
    /// (populating; nothing a harvest or a guest write does adds any).
    @inline(__always)
    public func withMMU<R>(_ body: (MMU) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) {
            try body(MMU(
                vm: state,
                pages: table.columns,
                memslots: UnsafeBufferPointer(start: memslots, count: slots.count),
                vcpus: vcpus,
                descPool: Unmanaged.passUnretained(descPool),
                injected: injected
            ))
        }
    }

    /// kvm_mmu_alloc_page() from populating code: room made first.
    func allocShadowPage(gfn: GFN, level: Int, direct: Bool) -> Int32 {
        table.reserve(shadowPagesAllocated + table.columns.pool.pointee.zappedCount + 1)
        return withMMU { $0.allocShadowPage(gfn: gfn, level: level, direct: direct) }
    }

    /// Leaves installed, per level (pages_4k, pages_2m, pages_1g).
    public var leafPages: LeafCounts {
        LeafCounts(pages4K: Int(state.pointee.pages4K), pages2M: Int(state.pointee.pages2M), pages1G: Int(state.pointee.pages1G))
    }
}

/// mmu_lock as a loop that takes it per page holds it: its kind (the
/// era's, instrumented or not), read once before the loop.
public struct LockForLoop {
    let kind: UInt32
}

/// The handle every hot path runs on: the VM's columns, slots and lock as
/// raw pointers, copied into locals once. Nothing reached through it is
/// reference counted.
public struct MMU {
    public let vm: UnsafeMutablePointer<VMState>
    public let pages: ShadowPageColumns
    /// memslots in search order.
    public let memslots: UnsafeBufferPointer<SlotView>
    /// Each vCPU's ring and PML buffer.
    public let vcpus: UnsafeMutableBufferPointer<VCPULogBuffers>
    let descPool: Unmanaged<PteListDescPool>
    /// Bugs planted on purpose (`FaultInjection`): all off in every run.
    let injected: UnsafeMutablePointer<FaultInjection>

    /// The lock, by address (it is a C struct the lock functions mutate):
    /// `VMState`'s first field, as `VirtualMachine.init` checks.
    @inline(__always) var lockWord: UnsafeMutablePointer<ca_mmu_lock> {
        UnsafeMutableRawPointer(vm).assumingMemoryBound(to: ca_mmu_lock.self)
    }

    /// mmu_lock's exclusive side: spin_lock(&kvm->mmu_lock) in the eras of
    /// a spinlock, write_lock() of the rwlock since 5.12 (KVM_MMU_LOCK()).
    @inline(__always) public func lockMMUExclusive() { ca_mmu_lock_exclusive(lockWord) }

    /// spin_unlock() / write_unlock().
    @inline(__always) public func unlockMMUExclusive() { ca_mmu_unlock_exclusive(lockWord) }

    /// The same, for a loop that takes mmu_lock per page: its kind read
    /// once before the loop (`lockForLoop()`), so that the loop pays the
    /// era's lock and nothing more (ca_mmu_lock_exclusive_as).
    @inline(__always) public func lockMMUExclusive(_ lock: LockForLoop) { ca_mmu_lock_exclusive_as(lockWord, lock.kind) }
    @inline(__always) public func unlockMMUExclusive(_ lock: LockForLoop) { ca_mmu_unlock_exclusive_as(lockWord, lock.kind) }
    @inline(__always) public func lockForLoop() -> LockForLoop { LockForLoop(kind: lockWord.pointee.kind) }

    /// mmu_lock's shared side: read_lock() of the rwlock since 5.12; in the
    /// eras of a spinlock, which has no such side, spin_lock(), as the same
    /// paths (a write fault, the slot's write protection) took then.
    @inline(__always) public func lockMMUShared() { ca_mmu_lock_shared(lockWord) }

    /// read_unlock() / spin_unlock().
    @inline(__always) public func unlockMMUShared() { ca_mmu_unlock_shared(lockWord) }

    /// Whether another thread waits for mmu_lock, which this thread holds:
    /// spin_needbreak() / rwlock_needbreak(), where a walk of the whole slot
    /// yields (cond_resched_lock(), tdp_mmu_iter_cond_resched()). A fully
    /// preemptible kernel's rule; need_resched(), the other half of it,
    /// never fires here, where nothing else wants the CPU.
    @inline(__always) public func mmuLockContended() -> Bool { ca_mmu_lock_contended(lockWord) != 0 }

    /// kvm_flush_remote_tlbs(): a request to every vCPU to flush its TLB.
    /// With vCPU threads running, it sends each vCPU in guest mode an IPI
    /// and waits until each has taken its exit; one outside guest mode
    /// flushes when it next enters. Without them, it is only counted.
    ///
    /// A harvest's flush (`widen`) starts with the planted window
    /// (`FaultInjection.flushWindowSpins`) of the flush-placement tests; a
    /// shadowing fault's or a zap's own flush does not.
    @inline(__always) public func flushRemoteTLBs(widen: Bool = true) {
        vm.pointee.tlbFlushes &+= 1
        guard vm.pointee.concurrent else { return }
        if widen { injectedFlushDelay() }
        flushRemoteTLBsAndWait()
    }

    /// search_memslots(): the slot holding `gfn`, by linear search in size order.
    @inline(__always) public func gfnToMemslot(_ gfn: GFN) -> SlotView? {
        for s in memslots where s.contains(gfn) { return s }
        return nil
    }

    /// The slot with id `id`.
    @inline(__always) public func slot(id: Int) -> SlotView {
        for s in memslots where s.id == id { return s }
        preconditionFailure("no slot \(id)")
    }

    /// for_each_leaf: every present leaf spte on the shadow pages, following
    /// active_mmu_pages; only the pages whose slot bitmap has `slot`, when
    /// given. `body` gets the spte's address, its shadow page and index
    /// there (for its gfn) and the page's level. Follows at most `limit`
    /// pages, so that a list corrupted into a cycle ends, and returns how
    /// many it followed. For the untimed paths (enabling logging modes, the
    /// invariant checks); the slot walk that is measured keeps its own loop.
    @discardableResult @inline(__always)
    public func forEachLeafSPTE(inTablesOf slot: SlotView? = nil, limit: Int = .max,
                                _ body: (_ sptep: UnsafeMutablePointer<UInt64>, _ page: Int, _ index: Int, _ level: Int) -> Void) -> Int {
        let slotBit: UInt64 = slot.map { 1 << UInt64($0.id) } ?? ~0
        var followed = 0
        var sp = vm.pointee.activeHead
        while sp >= 0, followed < limit {
            let p = Int(sp)
            followed &+= 1
            if pages.slotBitmap[p] & slotBit != 0 {
                let pt = pages.spt[p]!
                let level = Int(pages.level[p])
                for i in 0..<SPTE.perPage where isShadowPresentSPTE(pt[i]) && isLastSPTE(pt[i], level: level) {
                    body(pt + i, p, i, level)
                }
            }
            sp = pages.next[p]
        }
        return followed
    }

    /// drop_spte() for a large leaf: clear it and take it off its rmap.
    /// A cold path: large leaves do not exist once a slot logging since
    /// enable has been harvested.
    @inline(never)
    public func dropLargeSPTE(_ sptep: UnsafeMutablePointer<UInt64>, gfn: GFN, level: Int) {
        if vm.pointee.memslotsHaveRmaps, let s = gfnToMemslot(gfn) {
            let head = s.rmapHead(gfn: gfn, level: level)
            descPool._withUnsafeGuaranteedRef { _ = PteList.remove(sptep, from: head, pool: $0) }
        }
        sptep.pointee = 0
        accountLeaf(level: level, -1)
    }

    /// kvm_update_page_stats(): one leaf more (`delta` 1) or fewer at
    /// `level`. Atomic under the TDP MMU, whose faults install leaves side
    /// by side under the read side of mmu_lock.
    @inline(__always)
    func accountLeaf(level: Int, _ delta: Int) {
        let d = UInt64(bitPattern: Int64(delta))
        let offset = level == 1 ? VMState.pages4KOffset : level == 2 ? VMState.pages2MOffset : VMState.pages1GOffset
        let p = (UnsafeMutableRawPointer(vm) + offset).assumingMemoryBound(to: UInt64.self)
        if vm.pointee.era.hasTDPMMU { _ = ca_fetch_add64(p, d) } else { p.pointee &+= d }
    }
}

/// Leaves per level: pages_4k, pages_2m, pages_1g.
public struct LeafCounts: Equatable, Sendable, CustomStringConvertible {
    public var pages4K = 0
    public var pages2M = 0
    public var pages1G = 0

    public init(pages4K: Int = 0, pages2M: Int = 0, pages1G: Int = 0) {
        self.pages4K = pages4K
        self.pages2M = pages2M
        self.pages1G = pages1G
    }

    public subscript(level: Int) -> Int {
        get { level == 1 ? pages4K : level == 2 ? pages2M : pages1G }
        set {
            switch level {
            case 1: pages4K = newValue
            case 2: pages2M = newValue
            default: pages1G = newValue
            }
        }
    }

    public var description: String { "4K \(pages4K), 2M \(pages2M), 1G \(pages1G)" }
}
