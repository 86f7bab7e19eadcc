import DirtyLogCore

/// Dirty bitmaps are `unsigned long` words, bit `i % 64` of word `i / 64`
/// standing for page `i` of the slot. These helpers are the kernel's
/// `for_each_set_bit()` and friends on such words.
public enum DirtyBitmap {
    /// Words needed for `pages` bits (BITS_TO_LONGS).
    @inline(__always) public static func words(pages: Int) -> Int { (pages + 63) >> 6 }

    /// for_each_set_bit(): `body(offset)` for every set bit, lowest first,
    /// popping bits with `trailingZeroBitCount` and `w &= w - 1`.
    @inline(__always)
    public static func forEachSetBit(_ bitmap: UnsafePointer<UInt64>, words: Int, _ body: (SlotOffset) -> Void) {
        var i = 0
        while i < words {
            var w = bitmap[i]
            while w != 0 {
                body(SlotOffset(i << 6 | w.trailingZeroBitCount))
                w &= w &- 1
            }
            i += 1
        }
    }

    /// The number of set bits (bitmap_weight()).
    public static func popcount(_ bitmap: UnsafePointer<UInt64>, words: Int) -> Int {
        var n = 0
        for i in 0..<words { n += bitmap[i].nonzeroBitCount }
        return n
    }

    /// The non-zero 64-byte lines (8 words: 512 pages) of a bitmap.
    public static func nonZeroLines(_ bitmap: UnsafePointer<UInt64>, words: Int) -> Int {
        var lines = 0, line: UInt64 = 0
        for i in 0..<words {
            line |= bitmap[i]
            if i & 7 == 7 || i == words - 1 {
                lines += line != 0 ? 1 : 0
                line = 0
            }
        }
        return lines
    }

    /// Offsets of the bits set in `a` but not in `b`, at most `limit` of them.
    public static func difference(_ a: UnsafePointer<UInt64>, _ b: UnsafePointer<UInt64>, words: Int, limit: Int) -> [SlotOffset] {
        var out: [SlotOffset] = []
        for i in 0..<words {
            var w = a[i] & ~b[i]
            while w != 0, out.count < limit {
                out.append(SlotOffset(i << 6 | w.trailingZeroBitCount))
                w &= w &- 1
            }
            if out.count >= limit { break }
        }
        return out
    }
}
