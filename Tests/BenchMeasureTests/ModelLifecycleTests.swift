import DirtyLogCore
import BenchMeasure
@testable import ShadowMMU
import Testing

/// The lifecycle on a small huge-page guest, one vCPU touching its memory
/// on the test's thread: each enable policy's and each disable policy's
/// end state, counted leaf by leaf and level by level, and the invariant
/// after every phase.
@Suite struct ModelLifecycleTests {
    /// 16 regions of 2 MiB.
    static let pages = 8192
    static let regions = pages / 512

    /// A VM of `paging` backed by 2 MiB pages, populated by the guest's
    /// own faults, under `kernel` (the first kernel that ran `policy`).
    static func populated(_ paging: Paging, policy: EnablePolicy, kernel: LifecycleKernel? = nil, backing: Backing = .page2M,
                          pages: Int = pages) -> VirtualMachine {
        let kernel = kernel ?? policy.kernels(paging: paging.mode)[0]
        let era = kernel.era
        let layout = VMLayout(paging: paging, slotPages: pages, backing: backing)
        let vm = VirtualMachine(unloggedLayout: layout, reserve: 2 * layout.expectedShadowPages + 16,
                                rmaps: era != .linux5_14on || paging != .tdp, populate: false)
        vm.enterEra(era)
        vm.state.pointee.splitHugeLeafOnFault = kernel.splitsHugeLeafOnFault
        vm.startGuests(count: 1)
        touch(vm, pages: 0..<pages)
        return vm
    }

    /// vCPU 0 writes (or reads) `pages`; returns what each access did.
    @discardableResult
    static func touch(_ vm: VirtualMachine, pages: Range<Int>, write: Bool = true) -> [VCPUAccess] {
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            mmu.vcpuEnterGuest(0)
            defer { mmu.vcpuLeaveGuest(0) }
            return pages.map { mmu.vcpuAccess(0, slot: s, gfn: GFN(UInt64($0)), write: write, fastPath: true) }
        }
    }

    static func harvest(_ vm: VirtualMachine, _ strategy: Strategy) -> [Int] {
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            let h = mmu.harvest(slot: s, strategy: strategy)
            var out: [Int] = []
            DirtyBitmap.forEachSetBit(h.bitmap, words: s.bitmapWords) { out.append($0.index) }
            return out
        }
    }

    static func check(_ vm: VirtualMachine, _ what: String) { check(vm, .afterProtection, what) }

    static func check(_ vm: VirtualMachine, _ point: CheckPoint, _ what: String) {
        let r = vm.checkInvariants(slotID: 0, at: point)
        #expect(r.ok, "\(what): \(r)")
    }

    @Test(arguments: [Paging.tdp, .shadow(mappings: 2)])
    func populatingMapsEveryRegionHugeByOneFaultEach(paging: Paging) {
        let vm = Self.populated(paging, policy: .drop)
        let c = vm.leafCensus(slotID: 0)
        #expect(c.eligibleRegions == Self.regions)
        #expect(c.hugeRegions == Self.regions && c.splitRegions == 0)
        #expect(c.leaves.pages2M == Self.regions && c.leaves.pages4K == 0)
        #expect(c.writable.pages2M == Self.regions)
        Self.check(vm, "after populating")
    }

    @Test func dropLeavesNothingLargeAndTheFirstRoundGrowsNUsed() {
        let vm = Self.populated(.tdp, policy: .drop)
        let before = vm.nUsedMMUPages
        vm.enableDirtyLogging(slotID: 0, policy: .drop)
        var c = vm.leafCensus(slotID: 0)
        #expect(c.leaves == LeafCounts() && c.emptyRegions == Self.regions, "the seed's slot walk drops every large leaf")
        Self.check(vm, "after enable")
        let first = Self.touch(vm, pages: 0..<Self.pages)
        #expect(first.filter { $0.kind == .mapped && $0.level == 1 }.count == Self.pages, "every first write maps 4 KiB")
        #expect(vm.nUsedMMUPages == before + Self.regions, "one 4 KiB table per region")
        #expect(Self.harvest(vm, .seed).count == Self.pages)
        c = vm.leafCensus(slotID: 0)
        #expect(c.leaves.pages4K == Self.pages && c.writable.pages4K == 0 && c.splitRegions == Self.regions)
        Self.check(vm, "after the first harvest")
    }

    @Test(arguments: [Paging.tdp, .shadow(mappings: 2)])
    func wrprotKeepsLargeLeavesReadOnlyAndSplitsThemOnWrite(paging: Paging) {
        let vm = Self.populated(paging, policy: .wrprot)
        vm.enableDirtyLogging(slotID: 0, policy: .wrprot)
        var c = vm.leafCensus(slotID: 0)
        #expect(c.hugeRegions == Self.regions && c.writable.pages2M == 0)
        Self.check(vm, "after enable")
        // A read goes through the read-only huge leaf; a write splits its region.
        #expect(Self.touch(vm, pages: 0..<1, write: false)[0].kind == .none)
        let w = Self.touch(vm, pages: 0..<512)
        #expect(w[0].kind == .mapped && w[0].zapped && w[0].tables == 1, "the first write zaps the huge leaf, allocates a table")
        #expect(w.dropFirst().allSatisfy { $0.kind == .mapped && !$0.zapped && $0.tables == 0 }, "the rest map into that table")
        c = vm.leafCensus(slotID: 0)
        #expect(c.hugeRegions == Self.regions - 1 && c.splitRegions == 1 && c.leaves.pages4K == 512)
        Self.check(vm, .betweenProtections, "after the writes")
        let harvested = Self.harvest(vm, paging == .tdp ? .tdpMasked : .masked)
        #expect(harvested == Array(0..<512))
        Self.check(vm, "after the harvest")
    }

    /// From 6.2 (c4b33d28) the TDP MMU's write fault splits a
    /// write-protected huge leaf in place: no zap, no TLB flush; the
    /// region's 512 leaves keep the huge leaf's bits, read-only, and the
    /// other 511 writes are fixed by the fast path. 6.1 zaps and flushes,
    /// and the other 511 writes each map their page.
    @Test(arguments: [LifecycleKernel.linux6_1, .linux6_13])
    func theTDPWriteFaultOnAHugeLeafIsItsKernels(kernel: LifecycleKernel) {
        let vm = Self.populated(.tdp, policy: .wrprot, kernel: kernel)
        vm.enableDirtyLogging(slotID: 0, policy: .wrprot)
        let flushes = vm.tlbFlushes
        let w = Self.touch(vm, pages: 0..<512)
        if kernel == .linux6_13 {
            #expect(w[0].kind == .mapped && w[0].split && !w[0].zapped && w[0].tables == 1, "split in place")
            #expect(w.dropFirst().allSatisfy { $0.kind == .fixed(.fastPath) }, "the rest read-only leaves the fast path fixes")
            #expect(vm.tlbFlushes == flushes, "a split changes no translation: no flush")
        } else {
            #expect(w[0].kind == .mapped && w[0].zapped && !w[0].split && w[0].tables == 1, "zapped")
            #expect(w.dropFirst().allSatisfy { $0.kind == .mapped && !$0.zapped }, "the rest map their pages")
            #expect(vm.tlbFlushes == flushes + 1, "the zap flushes")
        }
        let c = vm.leafCensus(slotID: 0)
        #expect(c.splitRegions == 1 && c.leaves.pages4K == 512 && c.writable.pages4K == 512)
        Self.check(vm, .betweenProtections, "after the writes")
        #expect(Self.harvest(vm, .tdpMasked) == Array(0..<512))
        Self.check(vm, "after the harvest")
    }

    @Test func eagerSplitMapsEverythingAt4KiBBeforeAnyWrite() {
        let vm = Self.populated(.tdp, policy: .eagerSplit)
        let before = vm.nUsedMMUPages
        vm.enableDirtyLogging(slotID: 0, policy: .eagerSplit)
        let c = vm.leafCensus(slotID: 0)
        #expect(c.leaves.pages4K == Self.pages && c.leaves.pages2M == 0 && c.writable.pages4K == 0)
        #expect(c.splitRegions == Self.regions && vm.nUsedMMUPages == before + Self.regions)
        Self.check(vm, "after enable")
        let w = Self.touch(vm, pages: 0..<Self.pages)
        #expect(w.allSatisfy { $0.kind == .fixed(.fastPath) }, "no split left for the writes: each a fast-path fix")
        #expect(Self.harvest(vm, .tdpMasked).count == Self.pages)
        Self.check(vm, "after the harvest")
    }

    @Test func splitOnClearSplitsWhatTheFirstClearTouches() {
        let vm = Self.populated(.tdp, policy: .splitOnClear)
        vm.enableDirtyLogging(slotID: 0, policy: .splitOnClear)
        var c = vm.leafCensus(slotID: 0)
        #expect(c.hugeRegions == Self.regions && c.writable.pages2M == Self.regions, "nothing protected at enable")
        #expect(vm.slot(VMLayout.measuredSlotID).state.pointee.nrDirtyPages == Self.pages)
        Self.check(vm, .betweenProtections, "after enable: every page logged")
        #expect(Self.touch(vm, pages: 0..<Self.pages).allSatisfy { $0.kind == .none }, "the huge leaves are writable")
        #expect(Self.harvest(vm, .clearChunked).count == Self.pages, "initially set: every page")
        c = vm.leafCensus(slotID: 0)
        #expect(c.splitRegions == Self.regions && c.leaves.pages4K == Self.pages && c.writable.pages4K == 0)
        Self.check(vm, "after the first clear")
    }

    /// The TDP MMU's disable policies from one state, restored between them.
    @Test func zapAndRecoverBringHugeMappingsBack() {
        let vm = Self.populated(.tdp, policy: .eagerSplit)
        vm.enableDirtyLogging(slotID: 0, policy: .eagerSplit)
        Self.touch(vm, pages: 0..<Self.pages)
        _ = Self.harvest(vm, .tdpMasked)
        let snap = vm.snapshotGuestLeaves(slotID: 0)
        let pagesBefore = vm.nUsedMMUPages
        for policy in [DisablePolicy.zap, .zapBatched, .recover] {
            vm.restoreGuestLeaves(snap, slotID: 0)
            vm.slot(VMLayout.measuredSlotID).state.pointee.dirtyLogging = true
            #expect(vm.nUsedMMUPages == pagesBefore, "\(policy): restored")
            let flushes = vm.tlbFlushes
            vm.disableDirtyLogging(slotID: 0, policy: policy)
            var c = vm.leafCensus(slotID: 0)
            #expect(c.leaves.pages4K == 0 && c.splitRegions == 0, "\(policy): no 4 KiB leaf left")
            #expect(vm.nUsedMMUPages == pagesBefore - Self.regions, "\(policy): the 4 KiB tables freed")
            #expect(vm.tlbFlushes - flushes == (policy == .zap ? Self.regions : 1), "\(policy): flushes")
            if policy == .recover {
                #expect(c.hugeRegions == Self.regions && c.writable.pages2M == 0, "recovered read-only, from the first leaf")
                #expect(Self.touch(vm, pages: 0..<1)[0].kind == .fixed(.fastPath), "the TDP MMU's fast path makes it writable")
            } else {
                #expect(c.emptyRegions == Self.regions)
                let w = Self.touch(vm, pages: 0..<Self.pages)
                #expect(w.filter { $0.kind == .mapped && $0.level == 2 }.count == Self.regions, "\(policy): one 2 MiB fault per region")
                c = vm.leafCensus(slotID: 0)
                #expect(c.hugeRegions == Self.regions)
            }
            Self.check(vm, "after \(policy)")
        }
    }

    @Test(arguments: [Paging.tdp, .shadow(mappings: 2)])
    func shadowMMUDisablesLeaveTheirTablesAllocated(paging: Paging) {
        for (enable, disable) in [(EnablePolicy.drop, DisablePolicy.wrprotWalk), (.wrprot, .zapRmap)] {
            guard enable.kernels(paging: paging.mode)[0].era != .linux5_14on else { continue }
            let vm = Self.populated(paging, policy: enable)
            vm.enableDirtyLogging(slotID: 0, policy: enable)
            Self.touch(vm, pages: 0..<Self.pages)
            _ = Self.harvest(vm, enable == .drop ? .slotWalk : .masked)
            let tables = vm.nUsedMMUPages
            vm.disableDirtyLogging(slotID: 0, policy: disable)
            var c = vm.leafCensus(slotID: 0)
            if disable == .zapRmap {
                #expect(c.leaves.pages4K == 0 && c.emptyRegions == Self.regions, "\(paging): direct 4 KiB leaves zapped")
            } else {
                #expect(c.leaves.pages4K == Self.pages && c.writable.pages4K == 0, "3.3 keeps them, write-protected")
            }
            Self.check(vm, "after \(disable)")
            let w = Self.touch(vm, pages: 0..<Self.pages)
            #expect(w.filter { $0.kind == .mapped && $0.level == 2 && $0.zapped }.count == Self.regions,
                    "\(paging) \(disable): each region mapped huge by one fault that unlinks its table")
            c = vm.leafCensus(slotID: 0)
            #expect(c.hugeRegions == Self.regions && c.splitRegions == 0)
            #expect(vm.nUsedMMUPages == tables, "\(paging) \(disable): the unlinked tables stay allocated")
            Self.check(vm, "after the writes")
        }
    }

    @Test func slotEdgesAndTheHostPageSizeBoundLeaves() {
        // 1 GiB backing on a slot of 1 GiB + 3 MiB: one 1 GiB leaf, one
        // 2 MiB leaf, 512 4 KiB leaves at the unaligned end.
        let pages = (1 << 18) + 768
        let vm = Self.populated(.tdp, policy: .eagerSplit, backing: .page1G, pages: pages)
        #expect(vm.leafPages == LeafCounts(pages4K: 256, pages2M: 1, pages1G: 1))
        vm.enableDirtyLogging(slotID: 0, policy: .eagerSplit)
        #expect(vm.leafPages == LeafCounts(pages4K: pages, pages2M: 0, pages1G: 0), "split down to 4 KiB")
        Self.check(vm, "after enable")
        vm.disableDirtyLogging(slotID: 0, policy: .recover)
        #expect(vm.leafPages == LeafCounts(pages4K: 256, pages2M: 1, pages1G: 1),
                "the 1 GiB region recovered whole, the 2 MiB one past it at 2 MiB, the unaligned 1 MiB left at 4 KiB")
    }
}
