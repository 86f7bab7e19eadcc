import DirtyLogCore
import Glibc

/// The guest working set of the pollution measurement: `lines` 64-byte
/// lines linked into one random cycle (Sattolo's algorithm), each line's
/// first word the index of the next, and read by following the cycle:
/// lmbench's lat_mem_rd. Every load depends on the one before and no
/// prefetcher can guess the next, so each line costs the latency of the
/// level it comes from, and a line the harvest evicted shows. (A
/// sequential or independent re-read lets the prefetchers and the CPU's
/// parallel misses hide lines refilled from the last-level cache.) The
/// memory is 2 MiB-aligned and asks for transparent huge pages
/// (MADV_HUGEPAGE), as a guest's memory backed by them would be: a chase
/// over 4 KiB pages would pay a TLB miss on most lines of a large set.
final class WorkingSet {
    let bytes: Int
    let lines: Int
    let base: UnsafeMutablePointer<UInt64>
    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int

    static let hugePage = 2 << 20

    init(bytes: Int, seed: UInt64 = 1) {
        self.bytes = bytes
        lines = max(1, bytes / 64)
        mappedBytes = (lines * 64 + Self.hugePage - 1) / Self.hugePage * Self.hugePage + Self.hugePage
        guard let m = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), m != MAP_FAILED else {
            fatalError("mmap of a \(mappedBytes)-byte working set failed: \(String(cString: strerror(errno)))")
        }
        mapping = m
        let aligned = (UInt(bitPattern: m) + UInt(Self.hugePage - 1)) & ~UInt(Self.hugePage - 1)
        _ = madvise(UnsafeMutableRawPointer(bitPattern: aligned), mappedBytes - Self.hugePage, MADV_HUGEPAGE)
        base = UnsafeMutableRawPointer(bitPattern: aligned)!.bindMemory(to: UInt64.self, capacity: lines * 8)
        base.initialize(repeating: 0, count: lines * 8)
        var rng = SeededGenerator(seed: seed)
        var order = [Int](0..<lines)
        var i = lines - 1
        while i > 0 {
            order.swapAt(i, rng.below(i))
            i -= 1
        }
        // Sattolo: order is one cycle; line order[k] links to order[k + 1].
        for k in 0..<lines { base[order[k] * 8] = UInt64(order[(k + 1) % lines]) }
    }

    deinit { munmap(mapping, mappedBytes) }

    /// What a line costs in a chase of the whole set, ns: the cheaper of two
    /// passes after a warm one (this machine's noise only adds time).
    func chaseCostPerLine() -> Double {
        var sink = Self.chase(base, lines: lines)
        var best = Double.infinity
        for _ in 0..<2 {
            let t0 = MonotonicClock.now()
            sink &+= Self.chase(base, lines: lines)
            best = min(best, Double(MonotonicClock.now() &- t0) / Double(lines))
        }
        withExtendedLifetime(sink) {}
        return best
    }

    /// Follows the cycle once round: every line once.
    static func chase(_ p: UnsafePointer<UInt64>, lines: Int) -> UInt64 {
        var line: UInt64 = 0
        var k = 0
        while k < lines {
            line = p[Int(line) &* 8]
            k &+= 1
        }
        return line
    }
}
