import DirtyLogCore
@testable import BenchMeasure
@testable import ShadowMMU
import Testing

/// The adaptive rule's decisions, its counts and its look at the bitmap.
@Suite struct AdaptiveTests {
    /// masked: 1 µs + 20 ns a page when regular, 100 ns scattered; the
    /// slot walk 100 µs, plus 10 ns a page when scattered.
    func model(lookNs: Double = 500) -> CostModel {
        var m = CostModel()
        m.calibrated = true
        m.set(.masked, CandidateCost(regular: PerPageCost(fixed: 1000, perPage: 20), scattered: PerPageCost(fixed: 1000, perPage: 100)))
        m.set(.rmap, CandidateCost(regular: PerPageCost(fixed: 2000, perPage: 25), scattered: PerPageCost(fixed: 2000, perPage: 110)))
        m.set(.slotWalk, CandidateCost(regular: PerPageCost(fixed: 100_000), scattered: PerPageCost(fixed: 100_000, perPage: 10)))
        m.set(.rmapWalk, CandidateCost(regular: PerPageCost(fixed: 5_000_000), scattered: PerPageCost(fixed: 5_000_000)))
        // Cheaper than all, but this VM has no tdp structure: never chosen.
        m.set(.tdpMasked, CandidateCost(regular: PerPageCost(fixed: 1), scattered: PerPageCost(fixed: 1)))
        m.lookNs = lookNs
        return m
    }

    @Test func fewPagesGoToMaskedManyToTheWalkWithoutLooking() {
        let m = model()
        var looked = false
        #expect(m.choose(pages: 10, lines: 10) { looked = true; return BitmapLook(regular: true) } == .masked)
        #expect(!looked, "10 pages: masked either way")
        #expect(m.choose(pages: 1 << 18, lines: 512) { looked = true; return BitmapLook(regular: true) } == .slotWalk)
        #expect(!looked, "every page: the walk either way")
    }

    @Test func inBetweenTheLookDecides() {
        let m = model()
        // 4000 pages: masked 81 µs if regular, 401 µs if scattered; the walk
        // 100 µs, or 140 µs scattered: the kinds disagree by far more than
        // the look's 500 ns.
        var looked = 0
        let regular = m.choose(pages: 4000, lines: 512) { looked += 1; return BitmapLook(regular: true) }
        let scattered = m.choose(pages: 4000, lines: 512) { looked += 1; return BitmapLook(regular: false) }
        #expect(looked == 2)
        #expect(regular == .masked)
        #expect(scattered == .slotWalk)
    }

    @Test func aLookDearerThanTheStakesIsSkipped() {
        // Same set, but a look costing more than the worst excess of the
        // blind choice (the walk: 19 µs over masked if regular): no look.
        let m = model(lookNs: 50_000)
        var looked = false
        #expect(m.choose(pages: 4000, lines: 512) { looked = true; return BitmapLook(regular: true) } == .slotWalk)
        #expect(!looked)
    }

    /// The decision table the harvest reads chooses as the model does, at
    /// every step of ρ and across page counts, looking where it looks.
    @Test func theDecisionTableChoosesAsTheModel() {
        for lookNs in [500.0, 50_000] {
            var m = model(lookNs: lookNs)
            for tdp in [false, true] {
                m.hasTDP = tdp
                let words = DecisionTable.build(m, maxPages: 1 << 20)
                let small = DecisionTable.smallPages(words)
                words.withUnsafeBufferPointer { t in
                    // Below the small bound, one choice at every density, no look.
                    for pages in [1, 2, 5, 17, 63, small.pages - 1] where pages >= 1 && pages < small.pages {
                        for lines in [1, max(1, pages / 3), pages] {
                            let c = DecisionTable.choose(t.baseAddress!, pages: pages, lines: lines) {
                                Issue.record("a look below the small bound")
                                return BitmapLook(regular: true)
                            }
                            #expect(c == DecisionTable.candidate(lane: small.lane), "\(pages) pages in \(lines) spans")
                        }
                    }
                    for k in stride(from: 0, to: SpanDensity.steps, by: 3) {
                        let rho = SpanDensity.rho(k)
                        for pages in [1, 3, 10, 64, 700, 4000, 20_000, 1 << 18, 1 << 20] where Double(pages) >= rho {
                            let lines = Int((Double(pages) / rho).rounded())
                            guard lines >= 1, SpanDensity.position(Float(pages) / Float(lines)) == (k, 0) else { continue }
                            for regular in [true, false] {
                                var lookedModel = false, lookedTable = false
                                let a = m.choose(pages: pages, lines: lines) { lookedModel = true; return BitmapLook(regular: regular) }
                                let b = DecisionTable.choose(t.baseAddress!, pages: pages, lines: lines) {
                                    lookedTable = true
                                    return BitmapLook(regular: regular)
                                }
                                #expect(a == b && lookedModel == lookedTable, "\(pages) pages, ρ \(rho), look \(lookNs), tdp \(tdp), regular \(regular)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A decision reads the slot's state and, past the pages below which
    /// one choice holds at every density, one record of the installed
    /// table: one line of its own, or none.
    @Test func aDecisionReadsOneLine() {
        let vm = VirtualMachine(layout: VMLayout(paging: .tdp, slotPages: 4096, seed: 7))
        vm.install(model())
        let s = vm.slot(VMLayout.measuredSlotID)
        let small = s.state.pointee.decisionSmallPages
        #expect(small > 64 && DecisionTable.candidate(lane: s.state.pointee.decisionSmallLane) == .masked,
                "masked below \(small) pages, whatever the density")
        for pages in [1, 37, small - 1, small, 4000] {
            s.state.pointee.nrDirtyPages = pages
            s.state.pointee.nrDirtyLines = max(1, pages / 8)
            vm.withMMU { mmu in
                guard pages >= small else {
                    #expect(mmu.adaptiveRecord(slot: s) == nil, "\(pages) pages: decided from the slot's state alone")
                    #expect(mmu.chooseAdaptive(slot: s) == .masked)
                    return
                }
                let table = UInt(bitPattern: s.state.pointee.decisionTable!)
                guard let r = mmu.adaptiveRecord(slot: s) else {
                    Issue.record("\(pages) pages: no record")
                    return
                }
                let record = UInt(bitPattern: r)
                #expect(table % 64 == 0 && (record - table) % 32 == 0, "records are 32-byte aligned in a 64-byte aligned table")
                #expect(record / 64 == (record + 31) / 64, "a record never straddles two lines")
            }
        }
        s.state.pointee.nrDirtyPages = 0
        s.state.pointee.nrDirtyLines = 0
    }

    @Test func theDensityStepsAreFourAnOctave() {
        #expect(SpanDensity.steps == 37)
        #expect((0..<9).map(SpanDensity.rho) == [1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4])
        #expect(SpanDensity.rho(20) == 32 && SpanDensity.rho(21) == 40 && SpanDensity.rho(36) == 512)
        for k in 0..<SpanDensity.steps {
            let (at, t) = SpanDensity.position(Float(SpanDensity.rho(k)))
            #expect(at == k && t == 0)
        }
        let (k, t) = SpanDensity.position(36)
        #expect(k == 20 && t == 0.5, "36 is halfway from 32 to 40")
        #expect(SpanDensity.position(0.5) == (0, 0) && SpanDensity.position(4096) == (36, 0), "held at the ends")
    }

    @Test func thePerPageCostFollowsTheDensityBetweenSteps() {
        var m = CostModel()
        // 100 ns a page at one page per span, falling as 1/ρ.
        let c = PerPageCost(fixed: 1000, perPage: (0..<SpanDensity.steps).map { 100 / SpanDensity.rho($0) })
        m.set(.masked, CandidateCost(regular: c, scattered: c))
        #expect(m.predict(.masked, pages: 100, lines: 100, .regular) == 1000 + 100 * 100)
        #expect(m.predict(.masked, pages: 400, lines: 100, .regular) == 1000 + 400 * 25, "ρ = 4")
        #expect(m.predict(.masked, pages: 450, lines: 100, .regular) == 1000 + 450 * 22.5, "ρ = 4.5: halfway from 25 to 20")
        #expect(abs(m.predict(.masked, pages: 1 << 18, lines: 256, .regular) - (1000 + Double(1 << 18) * 100 / 512)) < 1, "ρ = 1024: held at 512's")
    }

    @Test func tdpCandidatesCountOnlyWithTheStructure() {
        var m = model()
        #expect(m.candidate(.tdpMasked) == nil)
        #expect(m.choose(pages: 10, lines: 10) { BitmapLook(regular: true) } == .masked)
        m.hasTDP = true
        #expect(m.candidate(.tdpMasked)?.regular.fixed == 1)
        #expect(m.choose(pages: 10, lines: 10) { BitmapLook(regular: true) } == .tdpMasked)
        m.hasTDP = false
        #expect(m.choose(pages: 10, lines: 10) { BitmapLook(regular: true) } == .masked)
    }

    @Test func uncalibratedItIsMaskedAndNothingDirtyIsTheCheapProtocol() {
        #expect(CostModel().choose(pages: 1 << 20, lines: 1 << 11) { BitmapLook(regular: true) } == .masked)
        #expect(model().choose(pages: 0, lines: 0) { BitmapLook(regular: true) } == .rmap)
    }

    func look(_ pages: [Int], words: Int = 64) -> BitmapLook {
        var b = [UInt64](repeating: 0, count: words)
        for p in pages { b[p >> 6] |= 1 << UInt64(p & 63) }
        return b.withUnsafeBufferPointer { MMU.lookAtBitmap($0.baseAddress!, words: words) }
    }

    @Test func theLookTellsRegularFromScattered() {
        #expect(look(Array(100..<200)).regular)
        #expect(look(stride(from: 0, to: 4096, by: 8).map { $0 }).regular)
        #expect(look(stride(from: 0, to: 4096 * 16, by: 37).map { $0 }, words: 1024).regular, "odd strides too")
        var rng = SeededGenerator(seed: 3)
        #expect(!look(Array(Set((0..<300).map { _ in rng.below(4096) }))).regular)
        #expect(look(stride(from: 0, to: 4096 * 64, by: 1021).map { $0 }, words: 4096).regular,
                "evenly spaced two leaf tables apart: still what the prefetchers follow")
        #expect(!look(stride(from: 0, to: 4096 * 64, by: 5000).map { $0 }, words: 4096).regular,
                "a page per window: too few gaps to tell")
    }

    @Test func theLookReadsAtMostItsWindows() {
        // A run outside the four windows, random pages inside: scattered.
        let words = 4096
        var rng = SeededGenerator(seed: 5)
        var pages = Array((words / 4 + MMU.lookWindowWords) * 64 ..< (words / 4 + MMU.lookWindowWords) * 64 + 1000)
        for q in 0..<4 { pages += (0..<20).map { _ in (words * q / 4) * 64 + rng.below(MMU.lookWindowWords * 64) } }
        #expect(!look(pages, words: words).regular)
    }

    @Test func markPageDirtyCountsLines() throws {
        let vm = VirtualMachine(layout: VMLayout(paging: .tdp, slotPages: 8192, vmPages: 8192, seed: 1))
        vm.beginRound(slotID: 0, for: .masked)
        let pages = [0, 1, 63, 64, 511, 512, 4095, 8191]
        vm.withMMU { mmu in
            let s = mmu.slot(id: 0)
            for p in pages { mmu.guestWrite(slot: s, gfn: GFN(UInt64(p)), sptep: mmu.spte(gfn: GFN(UInt64(p)), mapping: 0, slot: s)!) }
            let st = s.state.pointee
            #expect(st.nrDirtyPages == 8)
            #expect(st.nrDirtyLines == 4, "spans 0, 1, 7, 15")
        }
        #expect(vm.checkInvariants(slotID: 0, at: .betweenProtections).ok)
        vm.withMMU { mmu in _ = mmu.harvest(slot: mmu.slot(id: 0), strategy: .masked) }
        for strategy in [Strategy.clearChunked, .slotWalk, .adaptive] {
            vm.beginRound(slotID: 0, for: strategy)
            vm.withMMU { mmu in
                let s = mmu.slot(id: 0)
                for p in pages { mmu.guestWrite(slot: s, gfn: GFN(UInt64(p)), sptep: mmu.spte(gfn: GFN(UInt64(p)), mapping: 0, slot: s)!) }
                _ = mmu.harvest(slot: s, strategy: strategy)
                let st = s.state.pointee
                #expect(st.nrDirtyPages == 0 && st.nrDirtyLines == 0, "after \(strategy)")
            }
        }
    }
}
