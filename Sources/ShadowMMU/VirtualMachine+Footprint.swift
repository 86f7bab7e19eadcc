import DirtyLogCore

/// What a harvest touches: the memory a cold-cache measurement must evict
/// first, strategy by strategy, as the strategies in `Strategies/` read it.
extension MMU {
    /// Calls `body(start, bytes)` for every range of memory a harvest of
    /// `strategy` reads or writes after the guest wrote `written`: the VM's
    /// and the slot's scalars, both bitmap halves, and what the strategy
    /// walks (rmap heads, descriptors and sptes of the written pages; whole
    /// tables, columns and rmap arrays for the walks; rings and PML
    /// buffers). A rule contributes its choice's, decided as the harvest
    /// will decide it. Ranges may overlap.
    public func forEachHarvestRange(strategy: Strategy, slot s: SlotView, written: UnsafeBufferPointer<SlotOffset>,
                                    _ body: (UnsafeRawPointer, Int) -> Void) {
        body(UnsafeRawPointer(vm), MemoryLayout<VMState>.size)
        body(UnsafeRawPointer(s.state), MemoryLayout<SlotState>.size)
        body(UnsafeRawPointer(memslots.baseAddress!), memslots.count * MemoryLayout<SlotView>.stride)
        body(UnsafeRawPointer(vcpus.baseAddress!), vcpus.count * MemoryLayout<VCPULogBuffers>.stride)
        body(UnsafeRawPointer(s.bitmapHead), 2 * s.bitmapWords * 8)
        switch strategy {
        case .seed:
            forEachHarvestRange(strategy: Strategy.seedChoice(nrDirtyPages: s.state.pointee.nrDirtyPages, nUsedMMUPages: vm.pointee.nUsedMMUPages),
                                slot: s, written: written, body)
        case .adaptive:
            if let record = adaptiveRecord(slot: s) { body(record, DecisionTable.wordsPerStep * 8) }
            forEachHarvestRange(strategy: chooseAdaptive(slot: s), slot: s, written: written, body)
        case .rmap, .rmapFixed, .masked, .dbitClear, .clearChunked, .ring:
            for off in written {
                let gfn = s.gfn(at: off)
                forEachRmapRange(s.rmapHead(gfn: gfn, level: 1), body)
                if strategy == .rmap || strategy == .rmapFixed {
                    body(UnsafeRawPointer(s.rmapHead(gfn: gfn, level: 2)), 8)
                    body(UnsafeRawPointer(s.rmapHead(gfn: gfn, level: 3)), 8)
                }
            }
            if strategy == .ring {
                for v in vcpus {
                    let pending = v.dirtyIndex &- v.resetIndex
                    var i = 0
                    while i < pending {
                        body(UnsafeRawPointer(v.ring + ((v.resetIndex &+ i) & (v.ringEntries - 1))), MemoryLayout<DirtyGFN>.stride)
                        i &+= 4  // four entries a line
                    }
                    // The last pending entry, and the one past it the collection reads to stop.
                    body(UnsafeRawPointer(v.ring + ((v.dirtyIndex &- 1) & (v.ringEntries - 1))), MemoryLayout<DirtyGFN>.stride)
                    body(UnsafeRawPointer(v.ring + (v.dirtyIndex & (v.ringEntries - 1))), MemoryLayout<DirtyGFN>.stride)
                }
            }
            if strategy == .dbitClear {
                for v in vcpus { body(UnsafeRawPointer(v.pml), max(1, v.pmlCount) * MemoryLayout<GFN>.stride) }
            }
        case .tdpMasked:
            // The upper tables whole, once; the leaf sptes one by one.
            let n = rowsUsed
            var p = 0
            while p < n {
                if pages.gfns[p] == nil, pages.level[p] > 1, let t = pages.spt[p] { body(UnsafeRawPointer(t), 4096) }
                p &+= 1
            }
            // Per bitmap word, the leaves clear_dirty_pt_masked() reads: from
            // the first written page's to one past the last's (`tdpProtectMask`).
            var words: [Int: (first: Int, last: Int)] = [:]
            for off in written {
                let w = off.index >> 6, b = off.index & 63
                let r = words[w] ?? (b, b)
                words[w] = (min(r.first, b), max(r.last, b))
            }
            for (w, r) in words {
                guard let leaf = tdpLeaf(of: s.gfn(at: SlotOffset(w << 6 | r.first))) else { continue }
                body(UnsafeRawPointer(leaf), (min(63, r.last &+ 1) &- r.first &+ 1) * 8)
            }
        case .slotWalk:
            let n = rowsUsed
            body(UnsafeRawPointer(pages.next), n * 4)
            body(UnsafeRawPointer(pages.slotBitmap), n * 8)
            body(UnsafeRawPointer(pages.spt), n * 8)
            body(UnsafeRawPointer(pages.level), n)
            forEachSlotTable(s) { body(UnsafeRawPointer($0), 4096) }
        case .rmapWalk:
            for level in 1...3 {
                let (heads, count) = s.rmaps(level: level)
                body(UnsafeRawPointer(heads), count * 8)
            }
            descPool._withUnsafeGuaranteedRef { pool in pool.forEachSlab { body(UnsafeRawPointer($0), $1) } }
            forEachSlotTable(s) { body(UnsafeRawPointer($0), 4096) }
        case .tdpWalk:
            let n = rowsUsed
            var p = 0
            while p < n {
                if pages.gfns[p] == nil, let t = pages.spt[p] { body(UnsafeRawPointer(t), 4096) }
                p &+= 1
            }
        }
    }

    /// Shadow pages holding leaves of the slot (the tables a slot walk scans).
    public func slotTableCount(_ s: SlotView) -> Int {
        var count = 0
        forEachSlotTable(s) { _ in count += 1 }
        return count
    }

    /// The rmap head, its descriptors and every spte on it. Each word is
    /// read before `body` sees its line: `body` may flush it, and a read
    /// after the flush would wait for memory.
    @inline(__always)
    func forEachRmapRange(_ head: UnsafeMutablePointer<UInt>, _ body: (UnsafeRawPointer, Int) -> Void) {
        let word = head.pointee
        if PteList.isDesc(word) {
            var d: UnsafeMutablePointer<UInt>? = PteList.desc(word)
            while let cur = d {
                let more = cur[PteList.entriesPerDesc]
                var i = 0
                while i < PteList.entriesPerDesc, cur[i] != 0 {
                    body(UnsafeRawPointer(bitPattern: cur[i])!, 8)
                    i &+= 1
                }
                body(UnsafeRawPointer(cur), PteList.descWords * 8)
                d = UnsafeMutablePointer(bitPattern: more)
            }
        } else if word != 0 {
            body(UnsafeRawPointer(bitPattern: word)!, 8)
        }
        body(UnsafeRawPointer(head), 8)
    }

    /// The 4 KiB leaf of `gfn` in the direct tree, by its descent.
    @inline(__always)
    func tdpLeaf(of gfn: GFN) -> UnsafeMutablePointer<UInt64>? {
        guard var pt = tdpRootTable else { return nil }
        var level = VMLayout.rootLevel
        while true {
            let e = SPTE.entry(in: pt, gfn: gfn, level: level)
            if level == 1 { return e }
            let spte = e.pointee
            guard isShadowPresentSPTE(spte), !isLargeSPTE(spte) else { return nil }
            pt = SPTE.childTable(spte)
            level &-= 1
        }
    }

    /// Rows of the shadow-page columns ever used: live pages and freed
    /// rows (whose `spt` is nil) among them.
    @inline(__always) var rowsUsed: Int { Int(pages.pool.pointee.rows) }

    /// The table of every shadow page whose slot bitmap has the slot.
    @inline(__always)
    func forEachSlotTable(_ s: SlotView, _ body: (UnsafeMutablePointer<UInt64>) -> Void) {
        let bit: UInt64 = 1 << UInt64(s.id)
        let n = rowsUsed
        var p = 0
        while p < n {
            if pages.slotBitmap[p] & bit != 0, let t = pages.spt[p] { body(t) }
            p &+= 1
        }
    }
}

extension PteListDescPool {
    /// Every slab of descriptors, start and bytes.
    func forEachSlab(_ body: (UnsafeMutablePointer<UInt>, Int) -> Void) {
        for s in slabs { body(s, Self.descsPerSlab * PteList.descWords * 8) }
    }
}
