import DirtyLogCore
import Testing
@testable import ShadowMMU

/// The checker must catch what it claims to: each test plants one bug.
@Suite struct InvariantTests {
    func protectedVM(_ paging: Paging = .shadow(mappings: 2)) -> (VirtualMachine, [Int], Harvest) {
        let vm = VirtualMachine.small(paging)
        let pages = [2, 300, 301, 4000]
        vm.write(pages, mapping: { $0 % paging.sptesPerGFN })
        let (h, _) = vm.harvest(.rmap)
        return (vm, pages, h)
    }

    func quickCheck(_ vm: VirtualMachine, pages: [Int], harvested: UnsafePointer<UInt64>, expected: [Int]? = nil) -> InvariantReport {
        let written = pages.map { SlotOffset($0) }
        let bitmap = vm.bitmap(of: expected ?? pages)
        return written.withUnsafeBufferPointer { w in bitmap.withUnsafeBufferPointer { e in
            vm.checkProtected(slotID: 0, written: w, harvested: harvested, expected: e.baseAddress!)
        } }
    }

    @Test func aCleanStatePasses() {
        let (vm, pages, h) = protectedVM()
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).ok)
        #expect(quickCheck(vm, pages: pages, harvested: h.bitmap).ok)
    }

    @Test func aSpteLeftWritableIsCaught() {
        let (vm, pages, h) = protectedVM()
        // A strategy that missed the second spte of page 300.
        vm.withMMU { mmu in
            let p = mmu.spte(gfn: 300, mapping: 1, slot: mmu.slot(id: 0))!
            p.pointee |= SPTE.writable
        }
        let full = vm.checkInvariants(slotID: 0, at: .afterProtection)
        #expect(!full.ok)
        #expect(full.violations.contains { $0.contains("gfn 300 left writable") })
        let quick = quickCheck(vm, pages: pages, harvested: h.bitmap)
        #expect(!quick.ok)
        #expect(quick.violations.contains { $0.contains("gfn 300 left writable") })
    }

    @Test func aWritableSpteOfAPageNotMarkedDirtyIsCaughtBetweenProtections() {
        let vm = VirtualMachine.small(.tdp)
        vm.withMMU { mmu in mmu.spte(gfn: 17, mapping: 0, slot: mmu.slot(id: 0))!.pointee |= SPTE.writable }
        let r = vm.checkInvariants(slotID: 0, at: .betweenProtections)
        #expect(r.violations.contains { $0.contains("gfn 17 is writable but not logged") })
    }

    @Test func theSequentialScanCatchesAWritableSpteOutsideTheWrittenSet() {
        let vm = VirtualMachine.small(.tdp, slotPages: 1024)
        let pages = Array(0..<1000)  // many pages: the scan path runs
        vm.write(pages)
        let (h, _) = vm.harvest(.slotWalk)
        vm.withMMU { mmu in mmu.spte(gfn: 1010, mapping: 0, slot: mmu.slot(id: 0))!.pointee |= SPTE.writable }
        let r = quickCheck(vm, pages: pages, harvested: h.bitmap)
        #expect(r.violations.contains { $0.contains("gfn 1010 left writable") })
    }

    @Test func aSpteMissingFromItsRmapIsNamed() {
        let (vm, _, _) = protectedVM(.shadow(mappings: 3))
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            let p = mmu.spte(gfn: 123, mapping: 2, slot: s)!
            mmu.descPool._withUnsafeGuaranteedRef { _ = PteList.remove(p, from: s.rmapHead(gfn: 123, level: 1), pool: $0) }
        }
        let r = vm.checkInvariants(slotID: 0, at: .afterProtection)
        #expect(r.violations.contains { $0.contains("rmaps hold") })
        #expect(r.violations.contains { $0.contains("spte of gfn 123") && $0.contains("0 times") })
    }

    @Test func aWrongNUsedMMUPagesIsCaught() {
        let (vm, pages, h) = protectedVM()
        vm.state.pointee.nUsedMMUPages += 1
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).violations.contains { $0.contains("n_used_mmu_pages") })
        #expect(!quickCheck(vm, pages: pages, harvested: h.bitmap).ok)
    }

    @Test func aHarvestThatDiffersFromTheWritesIsCaught() {
        let (vm, pages, h) = protectedVM()
        let r = quickCheck(vm, pages: pages, harvested: h.bitmap, expected: [2, 300, 302, 4000])
        #expect(r.violations.contains { $0.contains("lacks written pages [302]") })
        #expect(r.violations.contains { $0.contains("unwritten pages [301]") })
    }

    @Test func aStaleDirtyCountIsCaught() {
        let (vm, _, _) = protectedVM()
        vm.measured.state.pointee.nrDirtyPages = 2
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).violations.contains { $0.contains("nr_dirty_pages 2 but 0 bits set") })
    }
}

/// Large leaves: dropped by enabling logging and by both strategies.
@Suite struct LargeLeafTests {
    /// A 4096-page slot with its first half mapped by 4 KiB leaves and a
    /// 2 MiB leaf at gfn 2048, before logging is enabled.
    func vmWithLargeLeaf() -> VirtualMachine {
        let vm = VirtualMachine(expectedShadowPages: 16)
        vm.addSlot(id: 0, baseGFN: 0, npages: 4096)
        vm.populate(paging: .tdp, pages: 2048, seed: 1)
        var mapper = LeafMapper(vm: vm)
        mapper.installLeaf(root: vm.roots[0], va: 2048, gfn: 2048, level: 2, writable: true)
        return vm
    }

    @Test func aLargeLeafIsOnItsLevelTwoRmap() {
        let vm = vmWithLargeLeaf()
        let s = vm.measured
        #expect(PteList.count(s.rmapHead(gfn: 2048, level: 2).pointee) == 1)
        #expect(PteList.count(s.rmapHead(gfn: 2100, level: 2).pointee) == 1, "the whole 2 MiB region shares it")
        #expect(vm.leafPages.pages2M == 1)
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).ok, "not logging yet: a large leaf is fine")
    }

    @Test func enablingLoggingDropsLargeLeaves() {
        let vm = vmWithLargeLeaf()
        vm.enableDirtyLogging(slotID: 0)
        #expect(vm.measured.rmapHead(gfn: 2048, level: 2).pointee == 0)
        #expect(vm.leafPages.pages2M == 0)
        #expect(vm.checkInvariants(slotID: 0, at: .afterProtection).ok)
    }

    @Test func theRmapBranchDropsAWritableLargeLeafOfADirtyPage() {
        let vm = vmWithLargeLeaf()
        let s = vm.measured
        s.state.pointee.dirtyLogging = true
        vm.withMMU { $0.markPageDirty(slot: s, gfn: 2050) }
        let (h, pages) = vm.harvest(.rmap)
        #expect(pages == [2050])
        #expect(h.counters.largeSptesDropped == 1)
        #expect(s.rmapHead(gfn: 2048, level: 2).pointee == 0)
        #expect(vm.leafPages.pages2M == 0)
    }
}
