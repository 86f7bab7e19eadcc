import DirtyLogCore
import Testing
@testable import ShadowMMU

@Suite struct DirtyBitmapTests {
    @Test(arguments: [0, 1, 63, 64, 65, 1000, 4096])
    func forEachSetBitVisitsExactlyTheSetBitsInOrder(pages: Int) {
        var rng = SeededGenerator(seed: UInt64(pages))
        let words = DirtyBitmap.words(pages: pages)
        var bitmap = [UInt64](repeating: 0, count: words)
        var expected: [Int] = []
        for p in 0..<pages where rng.below(3) == 0 {
            bitmap[p >> 6] |= 1 << UInt64(p & 63)
            expected.append(p)
        }
        var seen: [Int] = []
        bitmap.withUnsafeBufferPointer { b in
            if let base = b.baseAddress { DirtyBitmap.forEachSetBit(base, words: words) { seen.append($0.index) } }
        }
        #expect(seen == expected)
        let weight = bitmap.withUnsafeBufferPointer { b in b.baseAddress.map { DirtyBitmap.popcount($0, words: words) } ?? 0 }
        #expect(weight == expected.count)
    }

    @Test func wordsRoundUp() {
        #expect(DirtyBitmap.words(pages: 1) == 1)
        #expect(DirtyBitmap.words(pages: 64) == 1)
        #expect(DirtyBitmap.words(pages: 65) == 2)
    }

    @Test func differenceListsBitsOfTheFirstOnly() {
        let a: [UInt64] = [0b1011, 1 << 63]
        let b: [UInt64] = [0b0010, 0]
        let d = a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in
            DirtyBitmap.difference(pa.baseAddress!, pb.baseAddress!, words: 2, limit: 10)
        } }
        #expect(d == [0, 3, 127])
    }
}
