import DirtyLogCore

/// Every shadow page of a VM (`struct kvm_mmu_page`), as parallel columns.
///
/// Page `i` is row `i` of each column:
///
///     gfn[i]         the gfn the page is keyed by: the first gfn it maps for a
///                    direct (two-dimensional paging) page, the gfn of the guest
///                    page table it shadows for an indirect one
///     level[i]       1 = 4 KiB leaves, 2 = 2 MiB, 3 = 1 GiB, 4 = root
///     spt[i]         its 512 sptes: one 4 KiB-aligned jemalloc page
///     gfns[i]        indirect pages only: the gfn each spte maps (sp->gfns),
///                    another 4 KiB page; nil for direct pages, whose gfns follow
///                    from gfn[i] and the index
///     slotBitmap[i]  bit s set once a leaf spte of slot s was installed here
///     next[i]        the next page on the VM-wide `active_mmu_pages` list
///                    (older; -1 ends it); the head is in `VMState`
///
/// The slot walk touches `next`, `slotBitmap` and `spt` of every page in list
/// order: three small columns and then the tables, rather than one scattered
/// 200-byte struct per page.
public struct ShadowPageColumns {
    public var gfn: UnsafeMutablePointer<UInt64>
    public var level: UnsafeMutablePointer<UInt8>
    public var spt: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    public var gfns: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    public var slotBitmap: UnsafeMutablePointer<UInt64>
    public var next: UnsafeMutablePointer<Int32>

    /// kvm_mmu_page_get_gfn(): the gfn spte `index` of page `page` maps.
    @inline(__always)
    public func gfn(ofPage page: Int, index: Int) -> GFN {
        if let g = gfns[page] { return GFN(g[index]) }
        return GFN(gfn[page] &+ (UInt64(index) << (SPTE.levelBits * UInt64(level[page] &- 1))))
    }
}

/// Owner of the columns: allocation, growth and release, all in the model's arena.
final class ShadowPageTable {
    private(set) var columns: ShadowPageColumns
    private(set) var capacity: Int
    private(set) var count = 0
    private let arena: JemallocArena

    init(arena: JemallocArena, capacity: Int) {
        self.arena = arena
        self.capacity = max(16, capacity)
        let c = self.capacity
        columns = ShadowPageColumns(
            gfn: arena.allocate(UInt64.self, count: c),
            level: arena.allocate(UInt8.self, count: c),
            spt: arena.allocate(UnsafeMutablePointer<UInt64>?.self, count: c),
            gfns: arena.allocate(UnsafeMutablePointer<UInt64>?.self, count: c),
            slotBitmap: arena.allocate(UInt64.self, count: c),
            next: arena.allocate(Int32.self, count: c)
        )
    }

    /// kvm_mmu_alloc_page(): a zeroed table (and a gfns page when indirect),
    /// returning the new page's row. The caller links it into the active list.
    func allocate(gfn: GFN, level: Int, direct: Bool) -> Int32 {
        if count == capacity { grow() }
        let i = count
        count += 1
        columns.gfn[i] = gfn.rawValue
        columns.level[i] = UInt8(level)
        columns.spt[i] = arena.allocate(UInt64.self, count: SPTE.perPage, alignment: 4096)
        columns.gfns[i] = direct ? nil : arena.allocate(UInt64.self, count: SPTE.perPage, alignment: 4096)
        columns.slotBitmap[i] = 0
        columns.next[i] = -1
        return Int32(i)
    }

    private func grow() {
        let newCapacity = capacity * 2
        func regrow<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<T> {
            let raw = arena.reallocate(UnsafeMutableRawPointer(p), bytes: newCapacity * MemoryLayout<T>.stride)
            return raw.bindMemory(to: T.self, capacity: newCapacity)
        }
        columns.gfn = regrow(columns.gfn)
        columns.level = regrow(columns.level)
        columns.spt = regrow(columns.spt)
        columns.gfns = regrow(columns.gfns)
        columns.slotBitmap = regrow(columns.slotBitmap)
        columns.next = regrow(columns.next)
        capacity = newCapacity
    }

    deinit {
        for i in 0..<count {
            if let t = columns.spt[i] { arena.free(t) }
            if let g = columns.gfns[i] { arena.free(g) }
        }
        arena.free(columns.gfn)
        arena.free(columns.level)
        arena.free(columns.spt)
        arena.free(columns.gfns)
        arena.free(columns.slotBitmap)
        arena.free(columns.next)
    }
}
