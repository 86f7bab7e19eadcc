import DirtyLogCore
import Foundation
import ShadowMMU

extension DirtyPattern {
    /// The pages (offsets in the slot, ascending) and the bitmap they make.
    public func dirtySet(count: Int, slotPages: Int, seed: UInt64, parameters: PatternParameters = PatternParameters()) -> DirtySet {
        precondition(count >= 0 && count <= maxCount(slotPages: slotPages))
        var rng = SeededGenerator(seed: seed ^ UInt64(count) &* 0x9E37_79B9_7F4A_7C15 ^ mix64(UInt64(rawValue.utf8.count)))
        var bits = [UInt64](repeating: 0, count: DirtyBitmap.words(pages: slotPages))
        func set(_ p: Int) { bits[p >> 6] |= 1 << UInt64(p & 63) }
        func isSet(_ p: Int) -> Bool { bits[p >> 6] & (1 << UInt64(p & 63)) != 0 }
        guard count > 0 else { return DirtySet(bitmap: bits) }
        switch self {
        case .even:
            let stride = slotPages / count
            for i in 0..<count { set(i * stride) }
        case .random:
            // Draw the smaller of the set and its complement by rejection.
            let complement = count > slotPages / 2
            var n = 0
            while n < (complement ? slotPages - count : count) {
                let p = rng.below(slotPages)
                if !isSet(p) { set(p); n += 1 }
            }
            if complement { for w in bits.indices { bits[w] = ~bits[w] }; Self.trim(&bits, to: slotPages) }
        case .clustered:
            let run = max(1, min(parameters.clusterPages, slotPages))
            let places = slotPages / run
            let runs = (count + run - 1) / run
            precondition(runs <= max(1, places), "clustered: \(count) pages do not fit in runs of \(run)")
            var chosen = Self.distinct(runs, of: max(1, places), &rng)
            chosen.sort()
            var left = count
            for c in chosen {
                for p in c * run..<min(slotPages, c * run + min(run, left)) { set(p) }
                left -= min(run, left)
            }
        case .hotSet:
            let block = 64
            let blocks = (slotPages + block - 1) / block
            let setBlocks = min(blocks, max((count + block - 1) / block, (slotPages / 16 + block - 1) / block))
            // The working set is the same at every count: drawn from the base seed.
            var wsRng = SeededGenerator(seed: seed ^ 0x4B07_5E70)
            var pages: [Int] = []
            for b in Self.distinct(setBlocks, of: blocks, &wsRng) {
                for p in b * block..<min(slotPages, (b + 1) * block) { pages.append(p) }
            }
            pages.shuffle(using: &wsRng)  // rank order
            let s = parameters.zipfSkew
            let weight = (0..<pages.count).map { pow(Double($0 + 1), -s) }
            // Poisson sampling with inclusion min(1, c·w), c fitted so that the
            // expected size is `count`; then the exact count by rank.
            var lo = 0.0, hi = Double(pages.count) * 4
            for _ in 0..<60 {
                let c = (lo + hi) / 2
                let expected = weight.reduce(0) { $0 + min(1, c * $1) }
                if expected < Double(count) { lo = c } else { hi = c }
            }
            var chosen = [Bool](repeating: false, count: pages.count)
            var n = 0
            for r in pages.indices where Double(rng.below(1 << 30)) / Double(1 << 30) < min(1, hi * weight[r]) {
                chosen[r] = true
                n += 1
            }
            var r = 0
            while n < count { if !chosen[r] { chosen[r] = true; n += 1 }; r += 1 }
            r = pages.count - 1
            while n > count { if chosen[r] { chosen[r] = false; n -= 1 }; r -= 1 }
            for r in pages.indices where chosen[r] { set(pages[r]) }
        case .onePerTable:
            let tables = maxCount(slotPages: slotPages)
            let span = slotPages / tables
            for t in Self.distinct(count, of: tables, &rng) { set(t * span + rng.below(span)) }
        }
        return DirtySet(bitmap: bits)
    }

    /// `k` distinct integers below `n`, by rejection (or by complement when k is large).
    static func distinct(_ k: Int, of n: Int, _ rng: inout SeededGenerator) -> [Int] {
        precondition(k <= n)
        if k > n / 2 {
            let excluded = Set(distinct(n - k, of: n, &rng))
            return (0..<n).filter { !excluded.contains($0) }
        }
        var seen = Set<Int>()
        var out: [Int] = []
        while out.count < k {
            let v = rng.below(n)
            if seen.insert(v).inserted { out.append(v) }
        }
        return out
    }

    static func trim(_ bits: inout [UInt64], to pages: Int) {
        if pages & 63 != 0 { bits[bits.count - 1] &= (1 << UInt64(pages & 63)) - 1 }
    }
}

/// The knobs of the patterns that have them.
public struct PatternParameters: Sendable, Hashable {
    /// clustered: pages per run.
    public var clusterPages = 16
    /// hot-set: the Zipf exponent.
    public var zipfSkew = 1.0

    public init(clusterPages: Int = 16, zipfSkew: Double = 1.0) {
        self.clusterPages = clusterPages
        self.zipfSkew = zipfSkew
    }
}

/// A set of slot pages, as a dirty bitmap and an ascending list.
public struct DirtySet: Sendable {
    public let pages: [SlotOffset]
    public let bitmap: [UInt64]

    public init(bitmap: [UInt64]) {
        self.bitmap = bitmap
        var pages: [SlotOffset] = []
        for (w, word) in bitmap.enumerated() {
            var x = word
            while x != 0 {
                pages.append(SlotOffset(w << 6 | x.trailingZeroBitCount))
                x &= x &- 1
            }
        }
        self.pages = pages
    }

    public var count: Int { pages.count }
}
