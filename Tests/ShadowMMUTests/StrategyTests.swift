import DirtyLogCore
import Testing
@testable import ShadowMMU

@Suite struct StrategyTests {
    static let pagings: [Paging] = [.tdp, .shadow(mappings: 1), .shadow(mappings: 2), .shadow(mappings: 5)]

    @Test(arguments: pagings, Strategy.allCases)
    func everyStrategyLeavesNothingWritableAndHandsOutTheWrittenPages(paging: Paging, strategy: Strategy) {
        guard !strategy.needsTDP || paging == .tdp else { return }
        let vm = VirtualMachine.small(paging, slotPages: 3000, vmPages: 5000)
        let k = paging.sptesPerGFN
        var rng = SeededGenerator(seed: 3)
        for round in 0..<3 {
            let pages = Array(Set((0..<(40 * (round + 1))).map { _ in rng.below(3000) })).sorted()
            vm.beginRound(slotID: 0, for: strategy)
            vm.write(pages, mapping: { $0 % k })
            #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
            let (h, harvested) = vm.harvest(strategy)
            #expect(harvested == pages)
            #expect(strategy.protection == .dirtyBit ? vm.dirtyGFNs.isEmpty : vm.writableGFNs.isEmpty)
            let expected = vm.bitmap(of: pages)
            let full = expected.withUnsafeBufferPointer { vm.checkInvariants(slotID: 0, at: .afterProtection, harvested: h.bitmap, expected: $0.baseAddress!) }
            #expect(full.ok, "\(full)")
            let written = pages.map { SlotOffset($0) }
            let quick = written.withUnsafeBufferPointer { w in expected.withUnsafeBufferPointer { e in
                vm.checkProtected(slotID: 0, written: w, harvested: h.bitmap, expected: e.baseAddress!)
            } }
            #expect(quick.ok, "\(quick)")
            #expect(h.counters.sptesProtected == pages.count, "one spte per page was written")
            #expect(h.counters.tlbFlushes == 1)
        }
    }

    @Test func slotWalkVisitsEveryShadowPageAndScansOnlyTheSlotsTables() {
        let vm = VirtualMachine.small(.tdp, slotPages: 2048, vmPages: 8192)
        vm.write([0, 1000])
        let (h, _) = vm.harvest(.slotWalk)
        #expect(h.counters.shadowPagesVisited == vm.nUsedMMUPages)
        #expect(h.counters.sptesScanned == 4 * SPTE.perPage, "2048 pages: four leaf tables carry the slot's bit")
        #expect(h.counters.lockAcquisitions == 1)
        #expect(h.counters.rmapEntriesVisited == 0)
    }

    @Test func rmapTakesTheLockPerDirtyPageAndVisitsItsSptes() {
        let vm = VirtualMachine.small(.shadow(mappings: 3))
        vm.write([3, 70, 700], mapping: { $0 % 3 })
        let (h, _) = vm.harvest(.rmap)
        #expect(h.counters.lockAcquisitions == 3)
        #expect(h.counters.rmapEntriesVisited == 9)
        #expect(h.counters.shadowPagesVisited == 0 && h.counters.sptesScanned == 0)
    }

    @Test func theSeedsRuleSwitchesAtNUsedMMUPages() {
        let vm = VirtualMachine.small(.tdp)  // n_used = 11
        let n = vm.nUsedMMUPages
        vm.write(Array(0..<(n - 1)))
        #expect(vm.harvest(.seed).0.choice == .rmap)
        vm.write(Array(0..<n))
        #expect(vm.harvest(.seed).0.choice == .slotWalk)
        #expect(Strategy.seedChoice(nrDirtyPages: 514, nUsedMMUPages: 515) == .rmap)
        #expect(Strategy.seedChoice(nrDirtyPages: 515, nUsedMMUPages: 515) == .slotWalk)
    }

    /// Every strategy from the same state (sptes and bitmaps restored, the
    /// same pages written through the same sptes) must leave exactly the
    /// same sptes; dbit-clear, which clears dirty bits instead, must leave
    /// every leaf writable and clean.
    @Test(arguments: pagings)
    func strategiesAgreeSpteForSpte(paging: Paging) {
        let vm = VirtualMachine.small(paging, slotPages: 4096, vmPages: 6000)
        let k = paging.sptesPerGFN
        var rng = SeededGenerator(seed: 11)
        let pages = Array(Set((0..<900).map { _ in rng.below(4096) })).sorted()
        let snapshot = Snapshot(vm)
        var results: [Strategy: [UInt64]] = [:]
        for s in Strategy.allCases where !s.needsTDP || paging == .tdp {
            snapshot.restore(vm)
            vm.beginRound(slotID: 0, for: s)
            vm.write(pages, mapping: { ($0 / 7) % k })
            let (_, harvested) = vm.harvest(s)
            #expect(harvested == pages, "\(s)")
            results[s] = vm.allSptes
            if s == .dbitClear {
                #expect(vm.dirtyGFNs.isEmpty && vm.writableGFNs.count == 4096 * k)
                vm.setProtection(slotID: 0, .writeProtect)
            }
        }
        let reference = results[.slotWalk]!
        for (s, r) in results where s != .dbitClear { #expect(r == reference, "\(s) differs from slot-walk") }
        snapshot.restore(vm)
        vm.write(pages, mapping: { ($0 / 7) % k })
        #expect(vm.allSptes != reference, "the writes did make sptes writable")
    }
}

/// A copy of every spte and both bitmap halves, to rerun from one state.
struct Snapshot {
    let sptes: [UInt64]
    let bitmaps: [UInt64]
    let state: SlotState

    init(_ vm: VirtualMachine) {
        sptes = vm.allSptes
        let s = vm.measured
        bitmaps = Array(UnsafeBufferPointer(start: s.bitmapHead, count: 2 * s.bitmapWords))
        state = s.state.pointee
    }

    func restore(_ vm: VirtualMachine) {
        vm.setDirtyRing(false)
        let c = vm.table.columns
        for p in 0..<vm.table.rowsUsed {
            for i in 0..<SPTE.perPage { c.spt[p]![i] = sptes[p * SPTE.perPage + i] }
        }
        let s = vm.measured
        for i in 0..<bitmaps.count { s.bitmapHead[i] = bitmaps[i] }
        s.state.pointee = state
    }
}
