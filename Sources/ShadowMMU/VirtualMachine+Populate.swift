import CAtomics
import DirtyLogCore

extension VirtualMachine {
    /// A VM laid out as `layout` says, every page written once by the guest
    /// (so every shadow page exists and every leaf is writable), then dirty
    /// logging enabled on the measured slot, which write-protects it (and
    /// drops any large leaf, as the seed's slot walk does): the state
    /// dirty-log-perf measures from.
    public convenience init(layout: VMLayout, arena: JemallocArena = .model, vcpus: Int = 1, ringEntries: Int = 4096) {
        self.init(unloggedLayout: layout, arena: arena, vcpus: vcpus, ringEntries: ringEntries)
        enableDirtyLogging(slotID: VMLayout.measuredSlotID)
    }

    /// The VM of `layout` populated, dirty logging off: where the lifecycle
    /// starts. `reserve` rows are made room for in the shadow-page columns
    /// (at least the layout's 4 KiB population), so that splitting and
    /// faulting later never grows them; `rmaps` false builds it as the TDP
    /// MMU keeps its sptes, with no rmaps.
    public convenience init(unloggedLayout layout: VMLayout, arena: JemallocArena = .model, vcpus: Int = 1, ringEntries: Int = 4096,
                            reserve: Int = 0, rmaps: Bool = true, populate: Bool = true) {
        self.init(arena: arena, expectedShadowPages: max(reserve, layout.expectedShadowPages), vcpus: vcpus, ringEntries: ringEntries)
        state.pointee.memslotsHaveRmaps = rmaps
        state.pointee.hostLevel = layout.backing.level
        addSlot(id: VMLayout.measuredSlotID, baseGFN: GFN(0), npages: layout.slotPages)
        if layout.vmPages > layout.slotPages {
            addSlot(id: VMLayout.otherSlotID, baseGFN: GFN(UInt64(layout.slotPages)), npages: layout.vmPages - layout.slotPages)
        }
        if populate {
            self.populate(paging: layout.paging, pages: layout.vmPages, seed: layout.seed)
        } else {
            makeRoots(paging: layout.paging, pages: layout.vmPages, seed: layout.seed)
        }
    }

    /// The guest touches every gfn in 0..<pages through every address space
    /// the paging mode has, faulting in writable leaves: in the direct tree
    /// (tdp) or address space 0 (shadow), as large as the host's pages and
    /// the slots' edges allow; 4 KiB in the other address spaces.
    public func populate(paging: Paging, pages: Int, seed: UInt64) {
        var mapper = LeafMapper(vm: self)
        let hostLevel = state.pointee.hostLevel
        let root = makeRoots(paging: paging, pages: pages, seed: seed, mapper: &mapper)
        var gfn: UInt64 = 0
        let end = UInt64(pages)
        while gfn < end {
            let level = withMMU { $0.gfnToMemslot(GFN(gfn))!.maxMappingLevel(GFN(gfn), hostLevel: hostLevel) }
            mapper.installLeaf(root: root, va: gfn, gfn: GFN(gfn), level: level, writable: true)
            gfn &+= pagesPerLeaf(level: level)
        }
    }

    /// The roots: the direct tree's (tdp) or one per address space
    /// (shadow), the address spaces past the first populated at 4 KiB in
    /// their random orders. Returns the root of the tree the guest's own
    /// map of its memory goes through.
    @discardableResult
    func makeRoots(paging: Paging, pages: Int, seed: UInt64) -> Int32 {
        var mapper = LeafMapper(vm: self)
        return makeRoots(paging: paging, pages: pages, seed: seed, mapper: &mapper)
    }

    private func makeRoots(paging: Paging, pages: Int, seed: UInt64, mapper: inout LeafMapper) -> Int32 {
        switch paging {
        case .tdp:
            let root = newRoot(direct: true)
            state.pointee.tdpRoot = root
            return root
        case .shadow(let mappings):
            precondition(mappings >= 1)
            var rng = SeededGenerator(seed: seed)
            let first = newRoot(direct: false)
            for _ in 1..<mappings {
                let root = newRoot(direct: false)
                // Fisher-Yates: this address space maps va to order[va].
                var order = [UInt32](unsafeUninitializedCapacity: pages) { buf, n in
                    for i in 0..<pages { buf[i] = UInt32(truncatingIfNeeded: i) }
                    n = pages
                }
                order.withUnsafeMutableBufferPointer { o in
                    var i = pages - 1
                    while i > 0 {
                        o.swapAt(i, rng.below(i + 1))
                        i -= 1
                    }
                    for va in 0..<pages {
                        mapper.installLeaf(root: root, va: UInt64(va), gfn: GFN(UInt64(o[va])), level: 1, writable: true)
                    }
                }
            }
            return first
        }
    }

    /// mmu_alloc_roots(): a new root for one more address space.
    public func newRoot(direct: Bool) -> Int32 {
        let gfn: GFN
        if direct {
            gfn = GFN(0)
        } else {
            gfn = nextGuestTableGFN
            nextGuestTableGFN = GFN(nextGuestTableGFN.rawValue + 1)
        }
        let root = allocShadowPage(gfn: gfn, level: VMLayout.rootLevel, direct: direct)
        roots.append(root)
        if state.pointee.guestRoot < 0 { state.pointee.guestRoot = root }
        return root
    }

    /// The root of the tree the guest's writes go through: the direct tree,
    /// or address space 0 (the guest's own map of its memory, in gfn order).
    public var guestRoot: Int32 { roots[0] }
}

/// The part of the fault path that builds translations (`__direct_map()` for
/// two-dimensional paging, `FNAME(fetch)` for shadow paging), for
/// populating: walk down from a root by the address's 9-bit indices,
/// allocating missing shadow pages, and install a leaf (`mmu_set_spte()` +
/// `rmap_add()`). Not timed: the vCPU's own fault path is
/// `MMU.vcpuMapFault`.
///
/// Under shadow paging a table at or above the leaf's level shadows a
/// guest page table (indirect, keyed by a synthetic gfn above guest
/// memory); below a guest huge page, the kernel's tables are direct.
struct LeafMapper {
    let vm: VirtualMachine
    private var lastTable: UnsafeMutablePointer<UInt64>? = nil
    private var lastPage: Int32 = -1

    init(vm: VirtualMachine) { self.vm = vm }

    @discardableResult
    mutating func installLeaf(root: Int32, va: UInt64, gfn: GFN, level: Int, writable: Bool) -> UnsafeMutablePointer<UInt64> {
        let direct = vm.table.columns.gfns[Int(root)] == nil
        var page = root
        var pt = vm.table.columns.spt[Int(root)]!
        var l = Int(vm.table.columns.level[Int(root)])
        while l > level {
            let shift = SPTE.levelBits * UInt64(l - 1)
            let idx = Int((va >> shift) & 511)
            let e = pt[idx]
            if isShadowPresentSPTE(e) {
                precondition(!isLargeSPTE(e), "a large leaf covers gfn \(gfn)")
                pt = SPTE.childTable(e)
                page = -1
            } else {
                let childGFN: GFN
                if direct {
                    childGFN = GFN((va >> shift) << shift)
                } else {
                    childGFN = vm.nextGuestTableGFN
                    vm.nextGuestTableGFN = GFN(vm.nextGuestTableGFN.rawValue + 1)
                }
                let child = vm.allocShadowPage(gfn: childGFN, level: l - 1, direct: direct)
                let table = vm.table.columns.spt[Int(child)]!
                pt[idx] = SPTE.nonLeaf(child: table)
                pt = table
                page = child
            }
            l -= 1
        }
        if page < 0 {
            page = pt == lastTable ? lastPage : vm.table.columns.page(holding: pt)
        }
        lastTable = pt
        lastPage = page

        let idx = Int((va >> (SPTE.levelBits * UInt64(level - 1))) & 511)
        precondition(!isShadowPresentSPTE(pt[idx]), "va \(va) is already mapped")
        return vm.withMMU { mmu in
            guard let slot = mmu.gfnToMemslot(gfn) else { preconditionFailure("gfn \(gfn) is in no slot") }
            mmu.installLeaf(pt + idx, page: page, gfn: gfn, level: level, slot: slot, writable: writable, shared: false)
            return pt + idx
        }
    }
}

/// The host frame backing a gfn: any fixed offset will do for the model.
@inline(__always) func hostPFN(_ gfn: GFN) -> UInt64 { 0x10_0000 &+ gfn.rawValue }

extension MMU {
    /// mmu_set_spte() / make_spte() + rmap_add() for a new leaf at `sptep`,
    /// an entry of page `page` that is not present: a leaf of `level`
    /// mapping `gfn`, host-writable, made writable when `writable` with
    /// the bits a write fault of the era sets (`KernelEra.faultWritableBits`); on its
    /// rmap where the VM keeps rmaps; counted in the page stats; the page's
    /// slot bitmap gets the slot. With `shared` (the TDP MMU's read side)
    /// by cmpxchg from not-present: false when another thread changed the
    /// entry first.
    @inline(__always) @discardableResult
    func installLeaf(_ sptep: UnsafeMutablePointer<UInt64>, page: Int32, gfn: GFN, level: Int, slot: SlotView,
                     writable: Bool, shared: Bool, expecting old: UInt64 = 0) -> Bool {
        let large = level > 1
        let pfn = hostPFN(GFN(gfn.rawValue & ~(pagesPerLeaf(level: level) &- 1)))
        var spte = SPTE.leaf(pfn: pfn, large: large)
        if writable { spte |= vm.pointee.era.faultWritableBits }
        let p = Int(page)
        if shared {
            guard ca_cmpxchg64(sptep, old, spte) != 0 else { return false }
        } else {
            sptep.pointee = spte
        }
        let idx = (Int(bitPattern: UInt(bitPattern: sptep)) & 4095) >> 3
        if let g = pages.gfns[p] { g[idx] = gfn.rawValue & ~(pagesPerLeaf(level: level) &- 1) }
        let bit: UInt64 = 1 << UInt64(slot.id)
        if pages.slotBitmap[p] & bit == 0 {
            if shared { _ = ca_fetch_or64(pages.slotBitmap + p, bit) } else { pages.slotBitmap[p] |= bit }
        }
        if vm.pointee.memslotsHaveRmaps {
            _ = descPool._withUnsafeGuaranteedRef { PteList.add(sptep, to: slot.rmapHead(gfn: gfn, level: level), pool: $0) }
        }
        accountLeaf(level: level, 1)
        return true
    }
}
