import DirtyLogCore

/// A slot's mutable scalars. They live in arena memory, not in a Swift value,
/// so that every copy of a `SlotView` updates the same ones.
public struct SlotState {
    /// Which half of the bitmap is the current `dirty_bitmap` (0 or 1).
    public var activeHalf: Int
    /// nr_dirty_pages: bits set in the current half.
    public var nrDirtyPages: Int
    /// Non-zero 64-byte lines of the current half: 512-page spans (a leaf
    /// table's) with a dirty page, kept beside nr_dirty_pages for the
    /// adaptive rule.
    public var nrDirtyLines = 0
    /// KVM_MEM_LOG_DIRTY_PAGES
    public var dirtyLogging: Bool
    /// What a harvest takes away from a logged page's sptes: the writable
    /// bit (the guest's next write faults) or, with PML, the dirty bit (the
    /// hardware logs the next write without a fault).
    public var protection: Protection = .writeProtect
    /// KVM_DIRTY_LOG_INITIALLY_SET with manual protect: logging began with
    /// every bit set and nothing protected; each KVM_CLEAR_DIRTY_LOG splits
    /// and protects what it clears (kvm_dirty_log_manual_protect_and_init_set()).
    public var initiallySet = false
    /// The adaptive rule's decision table (`VMState.adaptive`'s), here too
    /// so that a decision reads its counts and the table's address from one
    /// line, then the record: two dependent misses, not three.
    public var decisionTable: UnsafeMutablePointer<UInt64>? = nil
    /// Below this many dirty pages the table chooses lane `decisionSmallLane`
    /// at every density, without looking (`DecisionTable.smallPages`): the
    /// decision then reads this line alone.
    public var decisionSmallPages: Int = 0
    public var decisionSmallLane: Int = 0

    /// Logging begins (KVM_MEM_LOG_DIRTY_PAGES set): the first half
    /// current, nothing dirty, leaves to be write-protected, no initial
    /// set. The adaptive rule's table, which belongs to the VM and not to
    /// this logging session, stays.
    @inline(__always)
    public mutating func beginLogging() {
        activeHalf = 0
        resetDirtyCounts()
        dirtyLogging = true
        protection = .writeProtect
        initiallySet = false
    }

    /// A harvest took the current half: nothing is dirty in it any more.
    @inline(__always)
    public mutating func resetDirtyCounts() {
        nrDirtyPages = 0
        nrDirtyLines = 0
    }

    public init(activeHalf: Int, nrDirtyPages: Int, dirtyLogging: Bool, protection: Protection = .writeProtect) {
        self.activeHalf = activeHalf
        self.nrDirtyPages = nrDirtyPages
        self.dirtyLogging = dirtyLogging
        self.protection = protection
    }
}

/// How a logging slot's sptes are kept so that the next write is seen.
public enum Protection: UInt8, Sendable {
    /// Leaves read-only: a write faults, the fault handler logs it.
    case writeProtect
    /// Leaves writable with the dirty bit clear: the hardware sets the
    /// dirty bit and appends the frame to the vCPU's PML buffer.
    case dirtyBit
}

/// `struct kvm_memory_slot` as the hot paths see it: constants and pointers,
/// a trivial value to copy into a local.
///
/// The dirty bitmap is `dirty_bitmap_head`: two halves of `bitmapWords`
/// words, one current and one handed out by the last harvest. The rmaps are
/// one word per gfn at level 1 (`slot->rmap`) and one per 2 MiB and 1 GiB
/// region at levels 2 and 3 (`lpage_info[level - 2][i].rmap_pde`).
public struct SlotView {
    public let id: Int
    public let baseGFN: GFN
    public let npages: Int
    public let bitmapWords: Int
    public let bitmapHead: UnsafeMutablePointer<UInt64>
    public let rmap1: UnsafeMutablePointer<UInt>
    public let rmap2: UnsafeMutablePointer<UInt>
    public let rmap3: UnsafeMutablePointer<UInt>
    public let state: UnsafeMutablePointer<SlotState>

    @inline(__always) public var endGFN: GFN { GFN(baseGFN.rawValue &+ UInt64(npages)) }

    @inline(__always) public func contains(_ gfn: GFN) -> Bool { gfn >= baseGFN && gfn < endGFN }

    /// The gfn of the slot's page `offset`.
    @inline(__always) public func gfn(at offset: SlotOffset) -> GFN { baseGFN.advanced(by: offset) }

    /// `gfn - slot->base_gfn`, for a gfn of the slot.
    @inline(__always) public func offset(of gfn: GFN) -> SlotOffset {
        SlotOffset(rawValue: UInt32(truncatingIfNeeded: gfn.rawValue &- baseGFN.rawValue))
    }

    /// gfn_to_index()
    @inline(__always) public func index(of gfn: GFN, level: Int) -> Int {
        let shift = SPTE.levelBits * UInt64(level - 1)
        return Int((gfn.rawValue >> shift) &- (baseGFN.rawValue >> shift))
    }

    /// __gfn_to_rmap(): the reverse-map head of `gfn` at `level`.
    @inline(__always) public func rmapHead(gfn: GFN, level: Int) -> UnsafeMutablePointer<UInt> {
        switch level {
        case 1: return rmap1 + index(of: gfn, level: 1)
        case 2: return rmap2 + index(of: gfn, level: 2)
        default: return rmap3 + index(of: gfn, level: 3)
        }
    }

    /// The current dirty_bitmap half.
    @inline(__always) public var dirtyBitmap: UnsafeMutablePointer<UInt64> {
        bitmapHead + state.pointee.activeHalf &* bitmapWords
    }

    /// The other half: after a harvest, the bitmap it handed out.
    @inline(__always) public var otherBitmap: UnsafeMutablePointer<UInt64> {
        bitmapHead + (state.pointee.activeHalf ^ 1) &* bitmapWords
    }

    /// Whether the words of the current half's 64-byte line (8 words, 512
    /// pages) around word `index` are all clear, `index` itself aside.
    @inline(__always) public func lineIsClean(around index: Int) -> Bool {
        let b = dirtyBitmap
        let start = index & ~7, end = min(bitmapWords, start &+ 8)
        var other: UInt64 = 0
        var w = start
        while w < end {
            if w != index { other |= b[w] }
            w &+= 1
        }
        return other == 0
    }

    /// Whether the slot covers the whole aligned region of `gfn` at `level`
    /// (lpage_info's disallow_lpage is clear for it: a slot's unaligned
    /// edges are never mapped huge).
    @inline(__always) public func coversRegion(of gfn: GFN, level: Int) -> Bool {
        let span = pagesPerLeaf(level: level)
        let start = gfn.rawValue & ~(span &- 1)
        return start >= baseGFN.rawValue && start &+ span <= endGFN.rawValue
    }

    /// kvm_mmu_max_mapping_level(): the largest leaf that may map `gfn`,
    /// given the host's page size (`hostLevel`: the backing's level), the
    /// slot's edges, and dirty logging (4 KiB only while it is on).
    @inline(__always) public func maxMappingLevel(_ gfn: GFN, hostLevel: Int) -> Int {
        state.pointee.dirtyLogging ? 1 : hugeLevel(gfn, hostLevel: hostLevel)
    }

    /// The largest leaf the host's pages and the slot's edges allow for
    /// `gfn`, logging aside: what populating maps it with, and what
    /// disabling logging lets come back.
    @inline(__always) public func hugeLevel(_ gfn: GFN, hostLevel: Int) -> Int {
        var level = hostLevel
        while level > 1 && !coversRegion(of: gfn, level: level) { level &-= 1 }
        return level
    }

    /// Number of rmap entries at `level` (one per region the slot touches).
    public static func rmapCount(baseGFN: GFN, npages: Int, level: Int) -> Int {
        let shift = SPTE.levelBits * UInt64(level - 1)
        return Int(((baseGFN.rawValue + UInt64(npages) - 1) >> shift) - (baseGFN.rawValue >> shift) + 1)
    }

    /// Rmap heads of the slot at `level`, and how many.
    @inline(__always) public func rmaps(level: Int) -> (heads: UnsafeMutablePointer<UInt>, count: Int) {
        switch level {
        case 1: (rmap1, npages)
        case 2: (rmap2, Self.rmapCount(baseGFN: baseGFN, npages: npages, level: 2))
        default: (rmap3, Self.rmapCount(baseGFN: baseGFN, npages: npages, level: 3))
        }
    }
}

/// Owner of one slot's memory, in the model's arena.
final class MemorySlot {
    let view: SlotView
    private let arena: JemallocArena

    init(arena: JemallocArena, id: Int, baseGFN: GFN, npages: Int) {
        self.arena = arena
        let words = DirtyBitmap.words(pages: npages)
        let state = arena.allocate(SlotState.self, count: 1)
        state.initialize(to: SlotState(activeHalf: 0, nrDirtyPages: 0, dirtyLogging: false))
        view = SlotView(
            id: id, baseGFN: baseGFN, npages: npages, bitmapWords: words,
            bitmapHead: arena.allocate(UInt64.self, count: 2 * words),
            rmap1: arena.allocate(UInt.self, count: npages),
            rmap2: arena.allocate(UInt.self, count: SlotView.rmapCount(baseGFN: baseGFN, npages: npages, level: 2)),
            rmap3: arena.allocate(UInt.self, count: SlotView.rmapCount(baseGFN: baseGFN, npages: npages, level: 3)),
            state: state
        )
    }

    deinit {
        arena.free(view.bitmapHead)
        arena.free(view.rmap1)
        arena.free(view.rmap2)
        arena.free(view.rmap3)
        arena.free(view.state)
    }
}
