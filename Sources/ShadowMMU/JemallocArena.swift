import CJemalloc

/// A jemalloc arena of the model's own, so that its memory can be counted
/// apart from everything else the process allocates.
///
/// Every allocation goes through `mallocx` with `MALLOCX_ARENA(index)` and
/// `MALLOCX_TCACHE_NONE`: no thread cache sits between the model and the
/// arena, so a free is visible in the arena's statistics at once.
public final class JemallocArena: Sendable {
    /// The arena index returned by `mallctl("arenas.create")`.
    public let index: UInt32

    /// The arena every model VM allocates from.
    public static let model = JemallocArena()

    public init() {
        var index: UInt32 = 0
        let rc = cj_arena_create(&index)
        precondition(rc == 0, "mallctl(\"arenas.create\") failed: \(rc)")
        self.index = index
    }

    private func flags(alignment: Int, zeroed: Bool) -> Int32 {
        var f = cj_mallocx_arena(index) | cj_mallocx_tcache_none() | cj_mallocx_align(alignment)
        if zeroed { f |= cj_mallocx_zero() }
        return f
    }

    /// `mallocx(bytes, MALLOCX_ALIGN(alignment) | MALLOCX_ARENA | MALLOCX_TCACHE_NONE)`,
    /// zero-filled when asked. Traps when jemalloc is out of memory: the
    /// bench checks the configuration's size against the machine first.
    public func allocate(bytes: Int, alignment: Int = 64, zeroed: Bool = true) -> UnsafeMutableRawPointer {
        precondition(bytes > 0 && alignment > 0 && alignment & (alignment - 1) == 0)
        guard let p = mallocx(bytes, flags(alignment: alignment, zeroed: zeroed)) else {
            fatalError("jemalloc: mallocx(\(bytes)) failed in arena \(index)")
        }
        return p
    }

    /// A typed, zero-filled array of `count` elements.
    public func allocate<T>(_: T.Type, count: Int, alignment: Int = 64) -> UnsafeMutablePointer<T> {
        allocate(bytes: max(1, count) * MemoryLayout<T>.stride, alignment: max(alignment, MemoryLayout<T>.alignment))
            .bindMemory(to: T.self, capacity: max(1, count))
    }

    /// `rallocx()`: grow or shrink an allocation of this arena, keeping its contents.
    public func reallocate(_ p: UnsafeMutableRawPointer, bytes: Int, alignment: Int = 64) -> UnsafeMutableRawPointer {
        guard let q = rallocx(p, bytes, flags(alignment: alignment, zeroed: false)) else {
            fatalError("jemalloc: rallocx(\(bytes)) failed in arena \(index)")
        }
        return q
    }

    /// `dallocx()` with the same arena flags.
    public func free(_ p: UnsafeMutableRawPointer) {
        dallocx(p, cj_mallocx_arena(index) | cj_mallocx_tcache_none())
    }

    /// Bytes the arena has handed out and not had back
    /// (`stats.arenas.<i>.small.allocated` + `.large.allocated`).
    public var allocatedBytes: Int {
        readStat("small.allocated") + readStat("large.allocated")
    }

    /// Bytes of physically resident pages the arena maps (`stats.arenas.<i>.resident`).
    public var residentBytes: Int { readStat("resident") }

    private func readStat(_ name: String) -> Int {
        var value = 0
        let rc = cj_read_size_stat("stats.arenas.\(index).\(name)", &value)
        precondition(rc == 0, "mallctl(stats.arenas.\(index).\(name)) failed: \(rc)")
        return value
    }

    /// The jemalloc version string (`JEMALLOC_VERSION`).
    public static var version: String { String(cString: cj_version()) }
}
