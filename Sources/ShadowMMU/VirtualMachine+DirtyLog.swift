import CAtomics
import DirtyLogCore

extension VirtualMachine {
    /// KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES on an existing
    /// slot, as the seed's kernel did it: every spte of the slot
    /// write-protected and large leaves dropped by the slot walk
    /// (`EnablePolicy.drop`, `MMU.enableLogging`).
    public func enableDirtyLogging(slotID: Int) {
        enableDirtyLogging(slotID: slotID, policy: .drop)
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

extension MMU {
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
