import DirtyLogCore
import Foundation
import ShadowMMU
import Testing
@testable import BenchMeasure

@Suite struct SweepTests {
    @Test func thresholdSweepSpansTheSlotAndIsDenseAroundNUsed() {
        let c = SweepPlan.thresholdSweep(slotPages: 262_144, nUsedMMUPages: 515)
        #expect(c.first == 1 && c.last == 262_144)
        #expect(c == c.sorted() && Set(c).count == c.count)
        #expect(c.contains(514) && c.contains(515))
        let near = c.filter { $0 >= 515 / 4 && $0 <= 515 * 4 }
        #expect(near.count >= 9, "2 points per octave over 4 octaves")
        let far = c.filter { $0 > 515 * 4 }
        #expect(far.count <= 8)
        // No two points within an eighth of an octave, the seed's switch pair aside.
        let close = zip(c, c.dropFirst()).filter { log2(Double($1) / Double($0)) < 0.125 && !($0 == 514 && $1 == 515) }
        #expect(close.isEmpty, "\(close)")
        let dense = SweepPlan.thresholdSweep(slotPages: 262_144, nUsedMMUPages: 515,
                                             density: SweepDensity(octavesPerCoarseStep: 1, densePointsPerOctave: 4))
        #expect(dense.filter { $0 >= 515 / 4 && $0 <= 515 * 4 }.count >= 16, "4 points per octave when asked")
    }

    @Test func refinementBisectsInLogSpaceUntilAQuarterOctave() {
        #expect(SweepPlan.refinement(between: 1000, and: 4000) == 2000)
        #expect(SweepPlan.refinement(between: 1000, and: 1150) == nil)
        #expect(SweepPlan.refinement(between: 1, and: 2) == nil)
    }

    @Test func evenPatternIsDirtyLogPerfs() {
        let s = DirtyPattern.even.dirtySet(count: 4, slotPages: 1000, seed: 1)
        #expect(s.pages.map(\.index) == [0, 250, 500, 750])
        #expect(DirtyPattern.even.dirtySet(count: 1000, slotPages: 1000, seed: 1).pages.map(\.index) == Array(0..<1000))
    }

    @Test(arguments: [1, 10, 499, 500, 501, 999, 1000])
    func randomPatternDrawsDistinctPagesReproducibly(count: Int) {
        let a = DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 5)
        let b = DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 5)
        #expect(a.pages == b.pages)
        #expect(a.pages.count == count && Set(a.pages).count == count)
        #expect(a.pages == a.pages.sorted() && a.pages.allSatisfy { $0.index < 1000 })
        let bits = a.bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
        #expect(bits == count)
        if count == 10 {
            #expect(DirtyPattern.random.dirtySet(count: count, slotPages: 1000, seed: 6).pages != a.pages)
        }
    }
}

@Suite struct CalibrationTests {
    @Test func theCurveIsReadBetweenMeasurementsAlongTheSteps() {
        let c = AdaptiveCalibration.curve([(rho: 1, pages: 10, added: 1000), (rho: 4, pages: 10, added: 400),
                                           (rho: 4, pages: 30, added: 2000), (rho: 64, pages: 100, added: 1000)])
        #expect(c.count == SpanDensity.steps)
        #expect(c[0] == 100 && c[8] == 60, "two at ρ = 4 pooled: 2400 ns over 40 pages")
        #expect(c[4] == 80, "ρ = 2: four steps of eight from ρ = 1")
        #expect(c[16] == 35 && c[24] == 10 && c[36] == 10, "held past the last")
    }

    @Test func regularSetsSampleEveryStepAndDodgeAliasingStrides() {
        let s = AdaptiveCalibration.strides.map(\.stride)
        #expect(s.contains(16) && s.contains(13) && s.contains(31) && !s.contains(32) && !s.contains(64))
        #expect(Set(s).count == s.count && s.allSatisfy { $0 > 1 })
        #expect(AdaptiveCalibration.strides.filter(\.octave).map(\.stride) == [4, 8, 16, 31, 63, 127, 255, 511])
    }

    @Test func aWalksPerPageCostIsDecidedByItsLargestSets() {
        // 200 µs fixed, ±20 µs of noise on the small sets, 0.1 ns a page.
        let p = AdaptiveCalibration.flat([(rho: 8, pages: 1000, added: 20_000), (rho: 64, pages: 30_000, added: -20_000),
                                          (rho: 512, pages: 262_144, added: 26_214)])
        #expect(abs(p - 0.1) < 0.02)
    }

    @Test func calibrationSetsSpanTheDensities() {
        let sets = AdaptiveCalibration.sets(pages: 1 << 18, seed: 1)
        #expect(sets.filter { $0.pages.count > AdaptiveCalibration.maxPages }.map(\.pages.count) == [1 << 18, 1 << 17],
                "only the whole slot and its random half are larger")
        #expect(sets.first?.kinds == [.regular, .scattered] && sets.first?.pages.count == 1)
        let regular = sets.filter { $0.kinds == [.regular] }, scattered = sets.filter { $0.kinds == [.scattered] }
        #expect(regular.count == 32 && scattered.count == 17)
        // The walks only on those an octave apart, the largest and the single page.
        #expect(sets.filter(\.forWalks).count == 1 + 10 + 10)
        // Both kinds reach from about one page per span to hundreds.
        for kind in [regular, scattered] {
            let rhos = kind.map(\.rho)
            #expect(rhos.min()! < 1.5 && rhos.max()! >= 256)
            #expect(Set(rhos.map { Int(log2($0)) }).count >= 8, "every octave or so")
        }
        // Each set is what the look calls it.
        for s in regular + scattered {
            let l = s.pages.bitmap.withUnsafeBufferPointer { MMU.lookAtBitmap($0.baseAddress!, words: $0.count) }
            #expect(l.regular == (s.kinds == [.regular]), "a \(s.kinds) set of \(s.pages.count) pages")
        }
    }
}
