import CAtomics
import CJemalloc
import DirtyLogCore

/// Every shadow page of a VM (`struct kvm_mmu_page`), as parallel columns.
///
/// Page `i` is row `i` of each column:
///
///     gfn[i]         the gfn the page is keyed by: the first gfn it maps for a
///                    direct page (two-dimensional paging, or a guest huge page
///                    split under shadow paging), the gfn of the guest page
///                    table it shadows for an indirect one
///     level[i]       1 = 4 KiB leaves, 2 = 2 MiB, 3 = 1 GiB, 4 = root
///     spt[i]         its 512 sptes: one 4 KiB-aligned jemalloc page
///     gfns[i]        indirect pages only: the gfn each spte maps (sp->gfns),
///                    another 4 KiB page; nil for direct pages, whose gfns follow
///                    from gfn[i] and the index
///     slotBitmap[i]  bit s set once a leaf spte of slot s was installed here
///     next[i]        the next page on the VM-wide `active_mmu_pages` list
///                    (older; -1 ends it); the head is in `VMState`
///     prev[i]        the previous one (newer; -1 at the head), so that a
///                    freed page leaves the list at once
///
/// The slot walk touches `next`, `slotBitmap` and `spt` of every page in list
/// order: three small columns and then the tables, rather than one scattered
/// 200-byte struct per page. `pool` allocates and frees rows and tables.
public struct ShadowPageColumns {
    public var gfn: UnsafeMutablePointer<UInt64>
    public var level: UnsafeMutablePointer<UInt8>
    public var spt: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    public var gfns: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>
    public var slotBitmap: UnsafeMutablePointer<UInt64>
    public var next: UnsafeMutablePointer<Int32>
    public var prev: UnsafeMutablePointer<Int32>
    public let pool: UnsafeMutablePointer<ShadowPagePool>

    /// kvm_mmu_page_get_gfn(): the gfn spte `index` of page `page` maps.
    @inline(__always)
    public func gfn(ofPage page: Int, index: Int) -> GFN {
        if let g = gfns[page] { return GFN(g[index]) }
        return GFN(gfn[page] &+ (UInt64(index) << (SPTE.levelBits * UInt64(level[page] &- 1))))
    }

    /// page_header() / sptep_to_sp(): the row whose table holds `sptep`, by
    /// the table's address (the kernel reads the table page's
    /// `page->private`; the model keeps an open-addressing index of table
    /// addresses). -1 for an address that is no live table's.
    @inline(__always)
    public func page(holding sptep: UnsafeMutablePointer<UInt64>) -> Int32 {
        pool.pointee.row(ofTable: UInt(bitPattern: sptep) & ~4095)
    }
}

/// The allocator side of the columns, in arena memory so that the `MMU`
/// handle (a plain value) allocates and frees shadow pages as the fault
/// path, a split and a zap need: rows from a free list or past the last
/// one used, tables from the model's jemalloc arena, each table's address
/// indexed to its row. Its lock (the TDP MMU's `tdp_mmu_pages_lock`) is
/// held only around that bookkeeping: under the TDP MMU's read side of
/// mmu_lock, several threads allocate at once.
public struct ShadowPagePool {
    var lock: UInt32 = 0
    /// Rows used so far (the high-water mark), and room in the columns.
    var rows: Int32 = 0
    var capacity: Int32
    /// Freed rows, a stack.
    var freeRows: UnsafeMutablePointer<Int32>
    var freeCount: Int32 = 0
    /// Zapped pages off every list whose tables may still be read by a
    /// walker that reached them before the zap (the kernel frees them after
    /// an RCU grace period): freed by `VirtualMachine.reclaimZappedPages`
    /// once nothing walks. Chained through `next`.
    var zappedHead: Int32 = -1
    public internal(set) var zappedCount = 0
    /// Table address → row: keys (0 empty) and rows, linear probing.
    var indexKeys: UnsafeMutablePointer<UInt>
    var indexRows: UnsafeMutablePointer<Int32>
    var indexMask: Int
    /// mallocx() flags of a table: the model's arena, no thread cache,
    /// 4 KiB aligned, zeroed (kvm_mmu_memory_cache pages come zeroed).
    var tableFlags: Int32
    /// dallocx() flags.
    var freeFlags: Int32
    /// kvm_mmu_alloc_page() calls and frees since the VM was made.
    public internal(set) var allocatedTotal = 0
    public internal(set) var freedTotal = 0

    /// The row of the table at `address` (4 KiB aligned), -1 if none.
    @inline(__always)
    func row(ofTable address: UInt) -> Int32 {
        var i = Int(truncatingIfNeeded: (UInt64(address) >> 12) &* 0x9E37_79B9_7F4A_7C15) & indexMask
        while true {
            let k = indexKeys[i]
            if k == address { return indexRows[i] }
            if k == 0 { return -1 }
            i = (i &+ 1) & indexMask
        }
    }

    @inline(__always)
    mutating func insertIndex(_ address: UInt, row: Int32) {
        var i = Int(truncatingIfNeeded: (UInt64(address) >> 12) &* 0x9E37_79B9_7F4A_7C15) & indexMask
        while indexKeys[i] != 0 { i = (i &+ 1) & indexMask }
        indexKeys[i] = address
        indexRows[i] = row
    }

    /// Removes `address`, shifting the entries after it back so that
    /// probing needs no tombstones.
    @inline(__always)
    mutating func removeIndex(_ address: UInt) {
        var i = Int(truncatingIfNeeded: (UInt64(address) >> 12) &* 0x9E37_79B9_7F4A_7C15) & indexMask
        while indexKeys[i] != address {
            precondition(indexKeys[i] != 0, "freeing a table the index does not hold")
            i = (i &+ 1) & indexMask
        }
        var hole = i
        var j = (i &+ 1) & indexMask
        while indexKeys[j] != 0 {
            let home = Int(truncatingIfNeeded: (UInt64(indexKeys[j]) >> 12) &* 0x9E37_79B9_7F4A_7C15) & indexMask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !between {
                indexKeys[hole] = indexKeys[j]
                indexRows[hole] = indexRows[j]
                hole = j
            }
            j = (j &+ 1) & indexMask
        }
        indexKeys[hole] = 0
    }
}

/// Owner of the columns and the pool: their memory, growth and release,
/// all in the model's arena. Pages come and go through the `MMU` handle
/// (`allocShadowPage`, `freeShadowPage`); the columns only grow here,
/// between handles (`reserve`).
final class ShadowPageTable {
    private(set) var columns: ShadowPageColumns
    private let arena: JemallocArena

    init(arena: JemallocArena, capacity: Int) {
        self.arena = arena
        let c = max(16, capacity)
        let pool = arena.allocate(ShadowPagePool.self, count: 1, alignment: 64)
        let slots = Self.indexSlots(rows: c)
        pool.initialize(to: ShadowPagePool(
            capacity: Int32(c), freeRows: arena.allocate(Int32.self, count: c),
            indexKeys: arena.allocate(UInt.self, count: slots), indexRows: arena.allocate(Int32.self, count: slots),
            indexMask: slots - 1,
            tableFlags: cj_mallocx_arena(arena.index) | cj_mallocx_tcache_none() | cj_mallocx_align(4096) | cj_mallocx_zero(),
            freeFlags: cj_mallocx_arena(arena.index) | cj_mallocx_tcache_none()))
        columns = ShadowPageColumns(
            gfn: arena.allocate(UInt64.self, count: c),
            level: arena.allocate(UInt8.self, count: c),
            spt: arena.allocate(UnsafeMutablePointer<UInt64>?.self, count: c),
            gfns: arena.allocate(UnsafeMutablePointer<UInt64>?.self, count: c),
            slotBitmap: arena.allocate(UInt64.self, count: c),
            next: arena.allocate(Int32.self, count: c),
            prev: arena.allocate(Int32.self, count: c),
            pool: pool)
    }

    /// Index slots for `rows` tables: a power of two at least twice as many.
    private static func indexSlots(rows: Int) -> Int {
        var n = 64
        while n < 2 * rows { n <<= 1 }
        return n
    }

    var capacity: Int { Int(columns.pool.pointee.capacity) }
    /// Rows ever used (live, freed or zapped).
    var rowsUsed: Int { Int(columns.pool.pointee.rows) }

    /// Room for at least `rows` live pages, so that no allocation through a
    /// handle grows the columns (which would move them under it).
    func reserve(_ rows: Int) {
        let pool = columns.pool
        guard rows > Int(pool.pointee.capacity) else { return }
        var newCapacity = Int(pool.pointee.capacity)
        while newCapacity < rows { newCapacity *= 2 }
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
        columns.prev = regrow(columns.prev)
        pool.pointee.freeRows = regrow(pool.pointee.freeRows)
        // The index is rebuilt at its new size.
        let oldKeys = pool.pointee.indexKeys, oldRows = pool.pointee.indexRows, oldSlots = pool.pointee.indexMask + 1
        let slots = Self.indexSlots(rows: newCapacity)
        pool.pointee.indexKeys = arena.allocate(UInt.self, count: slots)
        pool.pointee.indexRows = arena.allocate(Int32.self, count: slots)
        pool.pointee.indexMask = slots - 1
        for i in 0..<oldSlots where oldKeys[i] != 0 { pool.pointee.insertIndex(oldKeys[i], row: oldRows[i]) }
        arena.free(oldKeys)
        arena.free(oldRows)
        pool.pointee.capacity = Int32(newCapacity)
    }

    deinit {
        let pool = columns.pool
        for i in 0..<Int(pool.pointee.rows) {
            if let t = columns.spt[i] { arena.free(t) }
            if let g = columns.gfns[i] { arena.free(g) }
        }
        arena.free(pool.pointee.freeRows)
        arena.free(pool.pointee.indexKeys)
        arena.free(pool.pointee.indexRows)
        arena.free(pool)
        arena.free(columns.gfn)
        arena.free(columns.level)
        arena.free(columns.spt)
        arena.free(columns.gfns)
        arena.free(columns.slotBitmap)
        arena.free(columns.next)
        arena.free(columns.prev)
    }
}

extension MMU {
    /// kvm_mmu_alloc_page() (tdp_mmu_alloc_sp() + tdp_mmu_link_sp() in the
    /// TDP MMU): a zeroed table (and a gfns page when indirect) in a free
    /// row, at the head of `active_mmu_pages`, n_used_mmu_pages one more.
    /// Safe beside other allocating threads (the pool's lock); the columns
    /// must have room (`VirtualMachine.reserveShadowPages`).
    @inline(__always)
    public func allocShadowPage(gfn: GFN, level: Int, direct: Bool) -> Int32 {
        let pool = pages.pool
        let table = mallocx(4096, pool.pointee.tableFlags)!.bindMemory(to: UInt64.self, capacity: SPTE.perPage)
        let gfnsPage = direct ? nil : mallocx(4096, pool.pointee.tableFlags)!.bindMemory(to: UInt64.self, capacity: SPTE.perPage)
        ca_spin_lock(&pool.pointee.lock)
        let p: Int32
        if pool.pointee.freeCount > 0 {
            pool.pointee.freeCount &-= 1
            p = pool.pointee.freeRows[Int(pool.pointee.freeCount)]
        } else {
            precondition(pool.pointee.rows < pool.pointee.capacity, "shadow-page columns full: reserve more before running")
            p = pool.pointee.rows
            pool.pointee.rows &+= 1
        }
        let i = Int(p)
        pages.gfn[i] = gfn.rawValue
        pages.level[i] = UInt8(level)
        pages.spt[i] = table
        pages.gfns[i] = gfnsPage
        pages.slotBitmap[i] = 0
        pool.pointee.insertIndex(UInt(bitPattern: table), row: p)
        let head = vm.pointee.activeHead
        pages.next[i] = head
        pages.prev[i] = -1
        if head >= 0 { pages.prev[Int(head)] = p }
        vm.pointee.activeHead = p
        vm.pointee.nUsedMMUPages &+= 1
        pool.pointee.allocatedTotal &+= 1
        ca_spin_unlock(&pool.pointee.lock)
        return p
    }

    /// A zapped page leaves `active_mmu_pages` and n_used_mmu_pages at once
    /// (tdp_mmu_unlink_sp(), kvm_mod_used_mmu_pages()); its table is freed
    /// later (`VirtualMachine.reclaimZappedPages`), as the kernel frees it
    /// after an RCU grace period: a walker that reached it before the zap
    /// may still read it.
    @inline(__always)
    func unlinkZappedPage(_ p: Int32) {
        let pool = pages.pool
        ca_spin_lock(&pool.pointee.lock)
        let i = Int(p)
        let n = pages.next[i], pr = pages.prev[i]
        if pr >= 0 { pages.next[Int(pr)] = n } else { vm.pointee.activeHead = n }
        if n >= 0 { pages.prev[Int(n)] = pr }
        vm.pointee.nUsedMMUPages &-= 1
        pages.next[i] = pool.pointee.zappedHead
        pool.pointee.zappedHead = p
        pool.pointee.zappedCount &+= 1
        ca_spin_unlock(&pool.pointee.lock)
    }
}

extension VirtualMachine {
    /// Room for `rows` shadow pages in the columns, so that nothing done
    /// through a handle later grows them.
    public func reserveShadowPages(_ rows: Int) { table.reserve(rows) }

    /// Frees the tables of every zapped page (call_rcu()'s callbacks, once
    /// the grace period is over): only while no thread walks the MMU.
    public func reclaimZappedPages() {
        let pool = table.columns.pool
        let cols = table.columns
        var p = pool.pointee.zappedHead
        while p >= 0 {
            let i = Int(p)
            let nextZapped = cols.next[i]
            let t = cols.spt[i]!
            pool.pointee.removeIndex(UInt(bitPattern: t))
            dallocx(t, pool.pointee.freeFlags)
            if let g = cols.gfns[i] { dallocx(g, pool.pointee.freeFlags) }
            cols.spt[i] = nil
            cols.gfns[i] = nil
            cols.slotBitmap[i] = 0
            pool.pointee.freeRows[Int(pool.pointee.freeCount)] = p
            pool.pointee.freeCount &+= 1
            pool.pointee.freedTotal &+= 1
            p = nextZapped
        }
        pool.pointee.zappedHead = -1
        pool.pointee.zappedCount = 0
    }

    /// Shadow pages allocated and freed since the VM was made.
    public var shadowPagesAllocatedTotal: Int { table.columns.pool.pointee.allocatedTotal }
    public var shadowPagesFreedTotal: Int { table.columns.pool.pointee.freedTotal }
}
