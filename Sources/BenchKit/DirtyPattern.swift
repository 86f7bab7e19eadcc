import ShadowMMU

/// Which pages of the slot a round of guest writes dirties.
public enum DirtyPattern: String, CaseIterable, Sendable, Hashable {
    /// dirty-log-perf's: `count` pages evenly spaced, stride slotPages / count.
    case even
    /// `count` distinct pages drawn uniformly, seeded.
    case random

    public var summary: String {
        switch self {
        case .even: "evenly spaced pages, stride slot_pages / dirty_pages (dirty-log-perf)"
        case .random: "distinct pages drawn uniformly at random (seeded, reproducible)"
        }
    }

    /// The pages (offsets in the slot, ascending) and the bitmap they make.
    public func dirtySet(count: Int, slotPages: Int, seed: UInt64) -> DirtySet {
        precondition(count >= 0 && count <= slotPages)
        var set = DirtySet(slotPages: slotPages)
        switch self {
        case .even:
            guard count > 0 else { return set }
            let stride = slotPages / count
            set.reserve(count)
            for i in 0..<count { set.insert(UInt32(i * stride)) }
        case .random:
            var rng = SeededGenerator(seed: seed ^ UInt64(count) &* 0x9E37_79B9_7F4A_7C15)
            // Draw the smaller of the set and its complement by rejection.
            let drawComplement = count > slotPages / 2
            let draws = drawComplement ? slotPages - count : count
            var drawn = [UInt64](repeating: 0, count: DirtyBitmap.words(pages: slotPages))
            var n = 0
            while n < draws {
                let p = rng.below(slotPages)
                if drawn[p >> 6] & (1 << UInt64(p & 63)) == 0 {
                    drawn[p >> 6] |= 1 << UInt64(p & 63)
                    n += 1
                }
            }
            set.reserve(count)
            for p in 0..<slotPages where (drawn[p >> 6] >> UInt64(p & 63)) & 1 == (drawComplement ? 0 : 1) {
                set.insert(UInt32(p))
            }
        }
        return set
    }
}

/// A set of slot pages, as an ascending list and as a dirty bitmap.
public struct DirtySet: Sendable {
    public private(set) var pages: [UInt32] = []
    public private(set) var bitmap: [UInt64]

    public init(slotPages: Int) {
        bitmap = [UInt64](repeating: 0, count: DirtyBitmap.words(pages: slotPages))
    }

    mutating func reserve(_ n: Int) { pages.reserveCapacity(n) }

    mutating func insert(_ page: UInt32) {
        pages.append(page)
        bitmap[Int(page) >> 6] |= 1 << UInt64(page & 63)
    }

    public var count: Int { pages.count }
}
