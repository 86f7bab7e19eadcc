import Testing
@testable import DirtyLogCore

@Suite struct VocabularyTests {
    @Test func gfnsAndSlotOffsetsAreDistinctTypesThatMeetOnlyThroughASlot() {
        let base = GFN(1 << 20)
        let off = SlotOffset(130)
        #expect(base.advanced(by: off) == GFN((1 << 20) + 130))
        #expect(off.word == 2 && off.bit == 1 << 2 && off.index == 130)
        #expect(SlotOffset(rawValue: 63).bit == 1 << 63)
        #expect(GFN(3) < GFN(4) && SlotOffset(3) < SlotOffset(4))
    }

    @Test func everyStrategyOfEitherBackendHasOneNameAndComesBackFromIt() {
        let all = Strategy.allCases.map(MeasuredStrategy.model) + KernelStrategy.allCases.map(MeasuredStrategy.kernel)
        #expect(Set(all.map(\.name)).count == all.count, "model and kernel names do not overlap")
        for s in all { #expect(MeasuredStrategy(name: s.name) == s) }
        #expect(MeasuredStrategy(name: "magic") == nil)
        #expect(MeasuredStrategy.kernel(.get).backend == .kvm && MeasuredStrategy.model(.rmap).backend == .model)
        #expect(all.sorted().first == .kernel(.get), "kernel columns first, then the model's in declaration order")
    }

    @Test func theSeedsRuleIsStrictlyBelowTheShadowPageCount() {
        #expect(Strategy.seedChoice(nrDirtyPages: 514, nUsedMMUPages: 515) == .rmap)
        #expect(Strategy.seedChoice(nrDirtyPages: 515, nUsedMMUPages: 515) == .slotWalk)
        #expect(Strategy.getDirtyLogFamily.allSatisfy { !$0.isRule && !$0.usesRing })
        #expect(Strategy.adaptiveCandidates.allSatisfy(Strategy.getDirtyLogFamily.contains))
    }

    @Test func onePerTableIsCappedAtALeafTableEach() {
        #expect(DirtyPattern.onePerTable.maxCount(slotPages: 8192) == 16)
        #expect(DirtyPattern.onePerTable.maxCount(slotPages: 100) == 1)
        #expect(DirtyPattern.even.maxCount(slotPages: 100) == 100)
    }

    @Test func theClockMovesForward() {
        let a = MonotonicClock.now(), b = MonotonicClock.now()
        #expect(b >= a)
        #expect(MonotonicClock.overheadNanoseconds(samples: 11) >= 0)
    }
}
