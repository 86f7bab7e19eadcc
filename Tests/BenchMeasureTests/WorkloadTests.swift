import DirtyLogCore
import ShadowMMU
import Testing
@testable import BenchMeasure

@Suite struct WorkloadTests {
    @Test(arguments: [1, 15, 16, 17, 1000, 8192])
    func clusteredPagesComeInAlignedRuns(count: Int) {
        let s = DirtyPattern.clustered.dirtySet(count: count, slotPages: 8192, seed: 2, parameters: PatternParameters(clusterPages: 16))
        #expect(s.count == count)
        var runs: [[UInt32]] = []
        for p in s.pages.map(\.rawValue) {
            if let last = runs.last?.last, p == last + 1, p % 16 != 0 { runs[runs.count - 1].append(p) } else { runs.append([p]) }
        }
        #expect(runs.allSatisfy { $0.first! % 16 == 0 }, "runs start on their alignment")
        #expect(runs.filter { $0.count < 16 }.count <= 1, "at most one short run")
    }

    @Test func hotSetFavoursTheSamePagesAtEveryCount() {
        let small = DirtyPattern.hotSet.dirtySet(count: 50, slotPages: 1 << 16, seed: 9)
        let large = DirtyPattern.hotSet.dirtySet(count: 2000, slotPages: 1 << 16, seed: 9)
        #expect(small.count == 50 && large.count == 2000)
        let overlap = Set(small.pages).intersection(large.pages).count
        #expect(overlap >= 40, "the hottest pages are dirty at both counts (\(overlap) of 50)")
        // The working set is scattered 64-page blocks, a sixteenth of the slot at least.
        let blocks = Set(large.pages.map { $0.index / 64 })
        #expect(blocks.count <= (1 << 16) / 16 / 64 + 1)
        #expect(DirtyPattern.hotSet.dirtySet(count: 50, slotPages: 1 << 16, seed: 9).pages == small.pages)
        #expect(DirtyPattern.hotSet.dirtySet(count: 1 << 16, slotPages: 1 << 16, seed: 9).count == 1 << 16)
    }

    @Test func onePerTablePutsOnePageInEachTableAtMost() {
        #expect(DirtyPattern.onePerTable.maxCount(slotPages: 8192) == 16)
        let s = DirtyPattern.onePerTable.dirtySet(count: 16, slotPages: 8192, seed: 4)
        #expect(Set(s.pages.map { $0.index / 512 }).count == 16)
        let t = DirtyPattern.onePerTable.dirtySet(count: 5, slotPages: 8192, seed: 4)
        #expect(t.count == 5 && Set(t.pages.map { $0.index / 512 }).count == 5)
    }

    @Test func migrationRoundsHalveDownToTheWorkingSet() {
        #expect(MigrationPlan(slotPages: 1024, rounds: 6).counts == [1024, 512, 256, 128, 64, 64])
    }

    @Test func theSweepStopsAtWhatThePatternCanDirty() {
        let spec = ModelSeriesSpec(scenario: .threshold, layout: VMLayout(paging: .tdp, slotPages: 1 << 15), pattern: .onePerTable,
                                   counts: .thresholdSweep(.full), strategies: Strategy.allCases)
        let counts = spec.plannedCounts(nUsed: 67)
        #expect(counts.last == 64 && counts.allSatisfy { $0 <= 64 })
    }
}
