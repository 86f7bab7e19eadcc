/// Whether each timed harvest starts with the data it touches out of the caches.
public enum CacheMode: String, CaseIterable, Sendable, Hashable {
    /// Evicted before each timed harvest, the cheapest way that empties the
    /// caches of what it touches (see BenchMeasure's `CacheEviction`).
    case cold
    /// Evicted by reading a buffer twice the last-level cache before every
    /// harvest, whatever it touches: slower, what `cold` is checked against.
    case full
    /// Nothing is evicted: what the guest's writes just touched stays cached.
    case warm

    /// Whether anything is evicted.
    public var evicts: Bool { self != .warm }
}

/// What a series measures.
public enum Scenario: String, CaseIterable, Sendable, Hashable, Comparable {
    /// Dirty counts swept around the seed's threshold, one harvest per point.
    case threshold
    /// Rounds of pre-copy migration (hot-set writes, harvest, repeat),
    /// timed as a total per strategy.
    case migration
    /// kvm-unit-tests' api/dirty-log-perf: 1, 2, 4, ... evenly spaced pages.
    case dirtyLogPerf = "dirty-log-perf"
    /// vCPU threads keep writing while the harvest runs: what the guest
    /// pays (lock stalls, fault latency, re-fault time, cache pollution).
    case concurrent

    public static func < (a: Scenario, b: Scenario) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// How guest memory is translated, as reports name it.
public enum PagingMode: String, CaseIterable, Sendable, Hashable, Comparable {
    /// Two-dimensional paging (EPT/NPT): one direct spte per gfn.
    case tdp
    /// Shadow paging: every guest page table shadowed, several sptes per gfn.
    case shadow

    public static func < (a: PagingMode, b: PagingMode) -> Bool { a.rawValue > b.rawValue }
}

/// A guest frame number: a 4 KiB page of guest-physical memory (`gfn_t`).
@frozen
public struct GFN: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inline(__always) public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The gfn `offset` pages past this one.
    @inline(__always) public func advanced(by offset: SlotOffset) -> GFN { GFN(rawValue &+ UInt64(offset.rawValue)) }

    @inline(__always) public static func < (a: GFN, b: GFN) -> Bool { a.rawValue < b.rawValue }

    public var description: String { "\(rawValue)" }
}

/// A page's index within its memory slot (`gfn - slot->base_gfn`): what a
/// dirty bitmap bit and a dirty-ring entry name. Slots hold at most 2^28
/// pages here, so 32 bits.
@frozen
public struct SlotOffset: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inline(__always) public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inline(__always) public init(_ value: Int) { rawValue = UInt32(truncatingIfNeeded: value) }

    /// Its dirty-bitmap word and the bit in it.
    @inline(__always) public var word: Int { Int(rawValue >> 6) }
    @inline(__always) public var bit: UInt64 { 1 << UInt64(rawValue & 63) }
    @inline(__always) public var index: Int { Int(rawValue) }

    @inline(__always) public static func < (a: SlotOffset, b: SlotOffset) -> Bool { a.rawValue < b.rawValue }

    public var description: String { "\(rawValue)" }
}

/// What a protection did, counted inside its hot loop (in registers,
/// stored once at the end).
public struct ProtectCounters: Equatable, Sendable {
    /// Shadow pages reached on the VM-wide list, or tables visited by a TDP walk.
    public var shadowPagesVisited = 0
    /// Sptes read by scanning whole tables.
    public var sptesScanned = 0
    /// Sptes whose writable (or, for dbit-clear, dirty) bit was cleared.
    public var sptesProtected = 0
    /// Large leaves dropped.
    public var largeSptesDropped = 0
    /// Sptes reached through reverse maps (each one read).
    public var rmapEntriesVisited = 0
    /// mmu_lock acquisitions.
    public var lockAcquisitions = 0
    /// kvm_flush_remote_tlbs() calls.
    public var tlbFlushes = 0
    /// Bytes of MMU data the harvest read or wrote: bitmap words, list links
    /// and slot bitmaps, whole tables, rmap heads, descriptors and sptes.
    /// The quantity to set against the machine's bandwidth.
    public var bytesTouched = 0

    public init() {}

    /// A walk of the paging structure held under one acquisition of
    /// mmu_lock, yielding it `yields` times: `tables` visited, `scanned`
    /// entries read (8 bytes each).
    public mutating func addTableWalk(tables: Int, scanned: Int, yields: Int) {
        shadowPagesVisited &+= tables
        sptesScanned &+= scanned
        lockAcquisitions &+= 1 &+ yields
        bytesTouched &+= scanned &* 8
    }
}

/// Where a vCPU's working set is re-read after a harvest, for the cache
/// pollution the harvest left behind.
public enum GuestCPU: String, CaseIterable, Sendable, Hashable, Comparable {
    /// On the CPU that harvested: a vCPU scheduled after the migration
    /// thread (overcommit), whose L1 and L2 working set the harvest's walk
    /// can evict.
    case same
    /// On another CPU, where the vCPU thread runs beside the harvest: only
    /// the shared last-level cache is at stake.
    case other

    public static func < (a: GuestCPU, b: GuestCPU) -> Bool { a.rawValue > b.rawValue }
}
