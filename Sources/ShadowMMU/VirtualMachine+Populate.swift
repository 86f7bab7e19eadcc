import DirtyLogCore

extension VirtualMachine {
    /// A VM laid out as `layout` says, every page written once by the guest
    /// (so every shadow page exists and every leaf is writable), then dirty
    /// logging enabled on the measured slot, which write-protects it: the
    /// state dirty-log-perf measures from.
    public convenience init(layout: VMLayout, arena: JemallocArena = .model, vcpus: Int = 1, ringEntries: Int = 4096) {
        self.init(arena: arena, expectedShadowPages: layout.expectedShadowPages, vcpus: vcpus, ringEntries: ringEntries)
        addSlot(id: VMLayout.measuredSlotID, baseGFN: GFN(0), npages: layout.slotPages)
        if layout.vmPages > layout.slotPages {
            addSlot(id: VMLayout.otherSlotID, baseGFN: GFN(UInt64(layout.slotPages)), npages: layout.vmPages - layout.slotPages)
        }
        populate(paging: layout.paging, pages: layout.vmPages, seed: layout.seed)
        enableDirtyLogging(slotID: VMLayout.measuredSlotID)
    }

    /// The guest touches every gfn in 0..<pages through every address space
    /// the paging mode has, faulting in writable 4 KiB leaves.
    public func populate(paging: Paging, pages: Int, seed: UInt64) {
        var mapper = LeafMapper(vm: self)
        switch paging {
        case .tdp:
            let root = newRoot(direct: true)
            state.pointee.tdpRoot = root
            for gfn in 0..<UInt64(pages) {
                mapper.installLeaf(root: root, va: gfn, gfn: GFN(gfn), level: 1, writable: true)
            }
        case .shadow(let mappings):
            precondition(mappings >= 1)
            var rng = SeededGenerator(seed: seed)
            for space in 0..<mappings {
                let root = newRoot(direct: false)
                if space == 0 {
                    for va in 0..<UInt64(pages) {
                        mapper.installLeaf(root: root, va: va, gfn: GFN(va), level: 1, writable: true)
                    }
                } else {
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
            }
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
        return root
    }
}

/// The part of the fault path that builds translations (`__direct_map()` for
/// two-dimensional paging, `FNAME(fetch)` for shadow paging): walk down from
/// a root by the address's 9-bit indices, allocating missing shadow pages,
/// and install a leaf (`mmu_set_spte()` + `rmap_add()`).
///
/// Keeps the `page->private` lookup the kernel does (table address to shadow
/// page) as a dictionary, with the last leaf table remembered since
/// consecutive addresses share it.
struct LeafMapper {
    let vm: VirtualMachine
    private var owner: [UInt: Int32] = [:]
    private var lastTable: UnsafeMutablePointer<UInt64>? = nil
    private var lastPage: Int32 = -1

    init(vm: VirtualMachine) {
        self.vm = vm
        let c = vm.table.columns
        for p in 0..<vm.table.count { owner[UInt(bitPattern: c.spt[p]!)] = Int32(p) }
    }

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
                owner[UInt(bitPattern: table)] = child
                pt = table
                page = child
            }
            l -= 1
        }
        if page < 0 {
            if pt == lastTable {
                page = lastPage
            } else {
                page = owner[UInt(bitPattern: pt)]!
            }
        }
        lastTable = pt
        lastPage = page

        let cols = vm.table.columns
        let idx = Int((va >> (SPTE.levelBits * UInt64(level - 1))) & 511)
        precondition(!isShadowPresentSPTE(pt[idx]), "va \(va) is already mapped")
        guard let slot = vm.withMMU({ $0.gfnToMemslot(gfn) }) else {
            preconditionFailure("gfn \(gfn) is in no slot")
        }
        var spte = SPTE.leaf(pfn: hostPFN(gfn), large: level > 1)
        if writable { spte |= SPTE.writable | SPTE.dirty | SPTE.mmuWritable }
        let sptep = pt + idx
        sptep.pointee = spte
        if let g = cols.gfns[Int(page)] { g[idx] = gfn.rawValue }
        cols.slotBitmap[Int(page)] |= 1 << UInt64(slot.id)
        PteList.add(sptep, to: slot.rmapHead(gfn: gfn, level: level), pool: vm.descPool)
        if level > 1 { vm.state.pointee.lpages += 1 }
        return sptep
    }
}

/// The host frame backing a gfn: any fixed offset will do for the model.
@inline(__always) func hostPFN(_ gfn: GFN) -> UInt64 { 0x10_0000 &+ gfn.rawValue }
