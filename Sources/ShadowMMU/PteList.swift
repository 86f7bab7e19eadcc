/// The reverse map of one gfn at one level: a single word in the kernel's
/// tagged encoding (`unsigned long *rmapp` at the seed, `kvm_rmap_head` today).
///
///     0              no spte maps the gfn
///     low bit clear  the word is the address of the only spte
///     low bit set    word & ~1 is the address of a `pte_list_desc`
///
/// A `pte_list_desc` is five words: up to `PTE_LIST_EXT` (4) spte addresses,
/// filled from the front with 0 for an empty slot, then `more`, the address
/// of the next descriptor (0 ends the chain). New sptes go to the first free
/// entry at the end of the chain, as `pte_list_add()` puts them.
/// Descriptor addresses are 8-byte aligned, so bit 0 is free for the tag.
public enum PteList {
    /// PTE_LIST_EXT
    public static let entriesPerDesc = 4
    /// Words in one descriptor: the entries, then `more`.
    public static let descWords = entriesPerDesc + 1

    @inline(__always) static func isDesc(_ word: UInt) -> Bool { word & 1 != 0 }
    @inline(__always) static func desc(_ word: UInt) -> UnsafeMutablePointer<UInt> {
        UnsafeMutablePointer(bitPattern: word & ~1)!
    }
    @inline(__always) static func spte(_ word: UInt) -> UnsafeMutablePointer<UInt64> {
        UnsafeMutablePointer(bitPattern: word)!
    }

    /// pte_list_add(): record that `sptep` maps the gfn whose head is `head`.
    /// Returns how many sptes the list held before.
    @discardableResult
    static func add(_ sptep: UnsafeMutablePointer<UInt64>, to head: UnsafeMutablePointer<UInt>, pool: PteListDescPool) -> Int {
        let entry = UInt(bitPattern: sptep)
        precondition(entry & 1 == 0, "spte addresses are 8-byte aligned")
        let word = head.pointee
        if word == 0 {
            head.pointee = entry
            return 0
        }
        if !isDesc(word) {
            let d = pool.allocate()
            d[0] = word
            d[1] = entry
            head.pointee = UInt(bitPattern: d) | 1
            return 1
        }
        var d = desc(word)
        var count = 0
        while d[entriesPerDesc - 1] != 0, d[entriesPerDesc] != 0 {
            d = UnsafeMutablePointer(bitPattern: d[entriesPerDesc])!
            count += entriesPerDesc
        }
        if d[entriesPerDesc - 1] != 0 {
            let more = pool.allocate()
            d[entriesPerDesc] = UInt(bitPattern: more)
            d = more
            count += entriesPerDesc
        }
        var i = 0
        while d[i] != 0 { i += 1; count += 1 }
        d[i] = entry
        return count
    }

    /// pte_list_remove(): forget `sptep`. The last entry of the chain's
    /// descriptor takes the removed one's place; an emptied descriptor is
    /// freed, and a list left with one spte goes back to the direct form.
    /// Returns false when `sptep` was not on the list.
    @discardableResult
    static func remove(_ sptep: UnsafeMutablePointer<UInt64>, from head: UnsafeMutablePointer<UInt>, pool: PteListDescPool) -> Bool {
        let entry = UInt(bitPattern: sptep)
        let word = head.pointee
        if word == 0 { return false }
        if !isDesc(word) {
            guard word == entry else { return false }
            head.pointee = 0
            return true
        }
        var prev: UnsafeMutablePointer<UInt>? = nil
        var d: UnsafeMutablePointer<UInt>? = desc(word)
        while let cur = d {
            for i in 0..<entriesPerDesc where cur[i] == entry {
                removeEntry(head: head, desc: cur, index: i, prev: prev, pool: pool)
                return true
            }
            prev = cur
            d = UnsafeMutablePointer(bitPattern: cur[entriesPerDesc])
        }
        return false
    }

    /// pte_list_desc_remove_entry(): the descriptor's last entry moves into
    /// the hole; a descriptor left empty is unlinked and freed. As in the
    /// kernel, a list never goes back from descriptors to the direct form.
    private static func removeEntry(head: UnsafeMutablePointer<UInt>, desc d: UnsafeMutablePointer<UInt>, index i: Int,
                                    prev: UnsafeMutablePointer<UInt>?, pool: PteListDescPool) {
        var j = entriesPerDesc - 1
        while d[j] == 0 && j > i { j -= 1 }
        d[i] = d[j]
        d[j] = 0
        if j != 0 { return }
        let more = d[entriesPerDesc]
        if let p = prev {
            p[entriesPerDesc] = more
        } else {
            head.pointee = more == 0 ? 0 : more | 1
        }
        pool.free(d)
    }

    /// The number of sptes on a list.
    public static func count(_ word: UInt) -> Int {
        var n = 0
        var it = RmapIterator(word)
        while it.next() != nil { n += 1 }
        return n
    }
}

/// for_each_rmap_spte(): the sptes of one reverse-map word, in list order
/// (`rmap_get_first()` / `rmap_get_next()`).
public struct RmapIterator: IteratorProtocol {
    private var desc: UnsafeMutablePointer<UInt>?
    private var index: Int
    private var single: UInt

    @inline(__always)
    public init(_ word: UInt) {
        if PteList.isDesc(word) {
            desc = PteList.desc(word)
            single = 0
        } else {
            desc = nil
            single = word
        }
        index = 0
    }

    @inline(__always)
    public mutating func next() -> UnsafeMutablePointer<UInt64>? {
        while let d = desc {
            if index < PteList.entriesPerDesc, d[index] != 0 {
                let e = d[index]
                index += 1
                return PteList.spte(e)
            }
            desc = UnsafeMutablePointer(bitPattern: d[PteList.entriesPerDesc])
            index = 0
        }
        let s = single
        single = 0
        return UnsafeMutablePointer(bitPattern: s)
    }
}

/// The kmem cache `pte_list_desc`s come from: slabs of descriptors in the
/// model's arena, reused through a free list threaded through `more`.
final class PteListDescPool {
    private let arena: JemallocArena
    private(set) var slabs: [UnsafeMutablePointer<UInt>] = []
    private var freeList: UnsafeMutablePointer<UInt>? = nil
    private var bump: UnsafeMutablePointer<UInt>? = nil
    private var bumpLeft = 0
    private(set) var inUse = 0
    static let descsPerSlab = 1 << 14

    init(arena: JemallocArena) { self.arena = arena }

    /// A zeroed descriptor.
    func allocate() -> UnsafeMutablePointer<UInt> {
        inUse += 1
        if let d = freeList {
            freeList = UnsafeMutablePointer(bitPattern: d[PteList.entriesPerDesc])
            d.initialize(repeating: 0, count: PteList.descWords)
            return d
        }
        if bumpLeft == 0 {
            let slab = arena.allocate(UInt.self, count: Self.descsPerSlab * PteList.descWords, alignment: 64)
            slabs.append(slab)
            bump = slab
            bumpLeft = Self.descsPerSlab
        }
        let d = bump!
        bump = d + PteList.descWords
        bumpLeft -= 1
        return d
    }

    func free(_ d: UnsafeMutablePointer<UInt>) {
        inUse -= 1
        d.initialize(repeating: 0, count: PteList.descWords)
        d[PteList.entriesPerDesc] = freeList.map { UInt(bitPattern: $0) } ?? 0
        freeList = d
    }

    deinit {
        for s in slabs { arena.free(s) }
    }
}
