import CAtomics
import DirtyLogCore

extension VirtualMachine {
    /// KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES on an existing
    /// slot: a cleared bitmap pair, then every spte of the slot write-protected
    /// (and large leaves dropped) by the seed era's slot walk.
    public func enableDirtyLogging(slotID: Int) {
        withMMU { mmu in
            let s = mmu.slot(id: slotID)
            s.bitmapHead.update(repeating: 0, count: 2 * s.bitmapWords)
            let table = s.state.pointee.decisionTable, small = s.state.pointee.decisionSmallPages, lane = s.state.pointee.decisionSmallLane
            s.state.pointee = SlotState(activeHalf: 0, nrDirtyPages: 0, dirtyLogging: true)
            s.state.pointee.decisionTable = table
            s.state.pointee.decisionSmallPages = small
            s.state.pointee.decisionSmallLane = lane
            var counters = ProtectCounters()
            mmu.slotRemoveWriteAccess(slot: s, counters: &counters)
        }
    }

    /// Switches how the logging slot keeps its leaves between harvests,
    /// as enabling logging with or without PML would: write-protected, or
    /// writable with the dirty bit clear. Only between harvests, with
    /// nothing pending.
    public func setProtection(slotID: Int, _ protection: Protection) {
        withMMU { mmu in
            let s = mmu.slot(id: slotID)
            precondition(s.state.pointee.nrDirtyPages == 0, "switching protection with pages pending")
            guard s.state.pointee.protection != protection else { return }
            let cols = mmu.pages
            let slotBit: UInt64 = 1 << UInt64(s.id)
            mmu.lockMMUExclusive()
            mmu.forEachLeafSPTE(inTablesOf: s) { sptep, p, i, _ in
                // A table holding leaves of this slot only needs no gfn check.
                guard cols.slotBitmap[p] == slotBit || s.contains(cols.gfn(ofPage: p, index: i)) else { return }
                let spte = sptep.pointee
                if protection == .dirtyBit {
                    sptep.pointee = (spte | SPTE.writable) & ~SPTE.dirty
                } else {
                    mmu.spteWriteProtect(sptep, spte)
                }
            }
            mmu.unlockMMUExclusive()
            mmu.flushRemoteTLBs()
            s.state.pointee.protection = protection
        }
    }

    /// KVM_CAP_DIRTY_LOG_RING on or off: where mark_page_dirty() logs.
    /// Only between harvests, with nothing pending.
    public func setDirtyRing(_ on: Bool) {
        withMMU { mmu in
            for v in mmu.vcpus { precondition(v.dirtyIndex == v.resetIndex, "switching the log with ring entries pending") }
            for s in mmu.memslots { precondition(s.state.pointee.nrDirtyPages == 0, "switching the log with pages pending") }
            mmu.vm.pointee.dirtyRing = on
        }
    }

    public var dirtyRing: Bool { state.pointee.dirtyRing }

    /// Before a round of guest writes that `strategy` will harvest: the
    /// slot logs the way the strategy needs (dirty ring or bitmap;
    /// write-protected or dirty-bit leaves), switched here, untimed, and
    /// with a ring, user space's own bitmap (the other half, where the ring
    /// harvest records pages) starts the round empty.
    public func beginRound(slotID: Int, for strategy: Strategy) {
        if state.pointee.concurrent { enterEra(strategy.era) }
        if dirtyRing != strategy.usesRing { setDirtyRing(strategy.usesRing) }
        setProtection(slotID: slotID, strategy.protection)
        if strategy.usesRing {
            let s = slot(slotID)
            s.otherBitmap.update(repeating: 0, count: s.bitmapWords)
        }
    }
}

/// What mark_page_dirty() did.
public struct DirtyMark: Equatable, Sendable {
    /// The page's bit was clear and is now set: logged anew since the last
    /// harvest took it (with a dirty ring: pushed).
    public var newlyLogged: Bool
    /// The vCPU's dirty ring is now soft-full.
    public var ringFull: Bool
}

/// What a guest write did.
public enum GuestWrite: Equatable, Sendable {
    /// The spte allowed it: no exit (or, with PML, logged by the hardware).
    case noFault
    /// It faulted and was logged.
    case faulted
    /// It faulted, was logged, and the vCPU's dirty ring is now soft-full:
    /// the vCPU stops (KVM_EXIT_DIRTY_RING_FULL) until user space harvests.
    case ringFull
}

extension MMU {
    /// mark_page_dirty_in_slot(): with a dirty ring, push (slot, offset) to
    /// the vCPU's ring; otherwise test-and-set the page's bit in the current
    /// bitmap. nr_dirty_pages counts the pages logged since the last
    /// harvest; with a bitmap, so does the count of dirty lines (512-page
    /// spans) the adaptive rule decides by.
    @inline(__always) @discardableResult
    public func markPageDirty(slot s: SlotView, gfn: GFN, vcpu: Int = 0) -> DirtyMark {
        let rel = s.offset(of: gfn)
        if vm.pointee.dirtyRing {
            s.state.pointee.nrDirtyPages &+= 1
            return DirtyMark(newlyLogged: true, ringFull: dirtyRingPush(vcpu: vcpu, slot: s, offset: rel))
        }
        let index = rel.word
        let bit = rel.bit
        let old = ca_fetch_or64(s.dirtyBitmap + index, bit)
        guard old & bit == 0 else { return DirtyMark(newlyLogged: false, ringFull: false) }
        // The word's first page since the harvest: one more dirty line
        // unless the word's neighbours (in the L1 with it) have pages.
        // Only the first page of a word pays for this.
        let newLine = old == 0 && s.lineIsClean(around: index)
        if vm.pointee.concurrent {
            SlotState.addAtomically(s.state, pages: 1, lines: newLine ? 1 : 0)
        } else {
            s.state.pointee.nrDirtyPages &+= 1
            if newLine { s.state.pointee.nrDirtyLines &+= 1 }
        }
        return DirtyMark(newlyLogged: true, ringFull: false)
    }

    /// vCPU `vcpu` writes a page through `sptep`, the spte its translation
    /// reached.
    ///
    /// Write-protected slot: a writable spte takes the write. A read-only
    /// one faults: under mmu_lock it becomes writable (and dirty, as the
    /// hardware sets it on the retried write) and the page is logged: the
    /// only way a leaf of such a slot becomes writable.
    ///
    /// Dirty-bit slot (PML): the spte is writable; if its dirty bit is
    /// clear the hardware sets it and appends the frame to the vCPU's PML
    /// buffer, no fault; a full buffer exits to the kernel, which logs its
    /// frames (vmx_flush_pml_buffer()).
    @inline(__always) @discardableResult
    public func guestWrite(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int = 0) -> GuestWrite {
        guestWrite(slot: s, gfn: gfn, sptep: sptep, vcpu: vcpu, lockHeld: false)
    }

    /// The write, with mmu_lock already held by the caller when `lockHeld`.
    @inline(__always)
    func guestWrite(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int, lockHeld: Bool) -> GuestWrite {
        let spte = ca_read_once64(sptep)
        if s.state.pointee.protection == .dirtyBit {
            if spte & SPTE.dirty != 0 { return .noFault }
            ca_write_once64(sptep, spte | SPTE.dirty)
            let v = vcpus.baseAddress! + vcpu
            v.pointee.pml[v.pointee.pmlCount] = gfn
            v.pointee.pmlCount &+= 1
            if v.pointee.pmlCount == VCPULogBuffers.pmlEntries {
                if !lockHeld { lockMMUExclusive() }
                var j = 0
                while j < VCPULogBuffers.pmlEntries { markPageDirty(slot: s, gfn: v.pointee.pml[j], vcpu: vcpu); j &+= 1 }
                v.pointee.pmlCount = 0
                if !lockHeld { unlockMMUExclusive() }
            }
            return .noFault
        }
        if isWritableSPTE(spte) { return .noFault }
        if !lockHeld { lockMMUExclusive() }
        ca_write_once64(sptep, spte | SPTE.writable | SPTE.dirty | SPTE.mmuWritable)
        var full = false
        if s.state.pointee.dirtyLogging { full = markPageDirty(slot: s, gfn: gfn, vcpu: vcpu).ringFull }
        if !lockHeld { unlockMMUExclusive() }
        return full ? .ringFull : .faulted
    }

    /// The guest's writes of a round, from write `start` on: write `i`
    /// goes to `gfns[i]` through `sptes[i]`, the vCPUs taking them in turn
    /// from `vcpu`. Stops after a write that leaves its vCPU's dirty ring
    /// soft-full (the vCPU must wait for a harvest). Returns where it
    /// stopped, and the vCPU of the next write.
    ///
    /// The round's faults run one after another with nothing else on the
    /// VM, so mmu_lock is taken once for them all rather than per fault:
    /// the state they leave is the same. (Writes that race a harvest go
    /// through `guestWrite`, a fault at a time.)
    @inline(never)
    public func guestWrites(slot s: SlotView, gfns: UnsafeBufferPointer<GFN>, sptes: UnsafeBufferPointer<UnsafeMutablePointer<UInt64>>,
                            from start: Int, vcpu: Int) -> (next: Int, vcpu: Int, ringFull: Bool) {
        let n = vcpus.count
        var i = start, v = vcpu
        lockMMUExclusive()
        defer { unlockMMUExclusive() }
        while i < gfns.count {
            let full = guestWrite(slot: s, gfn: gfns[i], sptep: sptes[i], vcpu: v, lockHeld: true) == .ringFull
            i &+= 1
            v = v &+ 1 == n ? 0 : v &+ 1
            if full { return (i, v, true) }
        }
        return (i, v, false)
    }

    /// The spte through which address space `mapping` maps `gfn`: entry
    /// `mapping` of its rmap, since populating added one spte per address
    /// space in address-space order. The model's guest resolves its writes
    /// this way instead of walking guest page tables, which it does not model.
    public func spte(gfn: GFN, mapping: Int, slot s: SlotView) -> UnsafeMutablePointer<UInt64>? {
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        var i = 0
        while let p = it.next() {
            if i == mapping { return p }
            i += 1
        }
        return nil
    }

    /// One harvest of the slot's dirty log, the way `strategy`'s kernel did
    /// it, everything between the two timestamps of a measurement:
    ///
    /// - seed era (slot-walk, rmap, rmap-fixed, seed, rmap-walk, tdp-walk): if anything
    ///   is dirty, clear the other bitmap half and make it current, protect
    ///   what the handed-out half names, flush TLBs;
    /// - xchg era (masked, tdp-masked, dbit-clear, adaptive): per non-zero
    ///   word, xchg it into the cleared other half and protect its pages;
    /// - manual protect (clear-chunked): copy out, then clear in chunks,
    ///   telling `phases` when the first phase (GET) ended;
    /// - dirty ring (ring): collect the rings into the other half, which
    ///   the caller clears beforehand as user space's own bitmap, and reset.
    @inline(__always)
    public func harvest(slot s: SlotView, strategy: Strategy, phases: inout HarvestPhaseMarks) -> Harvest {
        var counters = ProtectCounters()
        let nrDirty = s.state.pointee.nrDirtyPages
        // A rule decides first (the seed: "not many dirty pages compared to
        // # of shadow pages"), then the harvest runs by its choice's
        // protocol, in this one dispatch.
        let choice: Strategy? = switch strategy {
        case .seed: Strategy.seedChoice(nrDirtyPages: nrDirty, nUsedMMUPages: vm.pointee.nUsedMMUPages)
        case .adaptive: chooseAdaptive(slot: s)
        default: nil
        }
        let run = choice ?? strategy
        let out: UnsafeMutablePointer<UInt64>
        switch run {
        case .slotWalk, .rmap, .rmapFixed, .rmapWalk, .tdpWalk:
            out = swapHarvest(slot: s, protect: run, nrDirty: nrDirty, counters: &counters)
        case .masked, .tdpMasked, .dbitClear:
            out = maskedHarvest(slot: s, protect: run == .masked ? .rmap : run == .tdpMasked ? .tdp : .rmapDirtyBit, counters: &counters)
        case .clearChunked:
            out = clearChunkedHarvest(slot: s, counters: &counters, phases: &phases)
        case .ring:
            out = s.otherBitmap
            ringHarvest(slot: s, into: out, counters: &counters)
        case .seed, .adaptive:
            preconditionFailure("a rule chooses a strategy that protects")
        }
        return Harvest(bitmap: out, nrDirtyPages: nrDirty, choice: choice, counters: counters)
    }

    /// A harvest nobody times the phases of: the untimed paths.
    @inline(__always)
    public func harvest(slot s: SlotView, strategy: Strategy) -> Harvest {
        var marks = HarvestPhaseMarks()
        return harvest(slot: s, strategy: strategy, phases: &marks)
    }

    /// The seed era's protocol: if anything is dirty, clear the other
    /// bitmap half and make it current; protect what the handed-out half
    /// names, by `protect` (slot-walk, rmap, rmap-fixed, rmap-walk or
    /// tdp-walk). With vCPU threads running, the swap waits out their
    /// faults (`swapBitmapsConcurrently`).
    @inline(__always)
    func swapHarvest(slot s: SlotView, protect: Strategy, nrDirty: Int, counters: inout ProtectCounters) -> UnsafeMutablePointer<UInt64> {
        // "If nothing is dirty, don't bother messing with page tables."
        guard nrDirty > 0 else { return s.dirtyBitmap }
        let old = s.dirtyBitmap
        s.otherBitmap.update(repeating: 0, count: s.bitmapWords)
        if vm.pointee.concurrent {
            swapBitmapsConcurrently(slot: s)
        } else {
            s.state.pointee.activeHalf ^= 1
            s.state.pointee.resetDirtyCounts()
        }
        counters.bytesTouched &+= s.bitmapWords &* 8  // the cleared half
        switch protect {
        case .slotWalk: slotRemoveWriteAccess(slot: s, counters: &counters)
        case .rmap: rmapWriteProtectDirty(slot: s, bitmap: old, counters: &counters)
        case .rmapFixed: rmapWriteProtectDirtyOneHold(slot: s, bitmap: old, counters: &counters)
        case .rmapWalk: rmapWalkWriteProtect(slot: s, counters: &counters)
        default: tdpWalkWriteProtect(slot: s, counters: &counters)
        }
        return old
    }
}

/// What a harvest handed out and what it cost.
public struct Harvest {
    /// The bitmap the harvest handed out (valid until the next harvest).
    public let bitmap: UnsafeMutablePointer<UInt64>
    /// nr_dirty_pages at the harvest.
    public let nrDirtyPages: Int
    /// For a rule choosing between strategies: the one it chose.
    public let choice: Strategy?
    public let counters: ProtectCounters
}
