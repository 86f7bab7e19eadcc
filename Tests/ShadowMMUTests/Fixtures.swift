import DirtyLogCore
@testable import ShadowMMU

// Literal gfns and slot offsets, in tests only: the model's own code
// converts them explicitly.
extension GFN: ExpressibleByIntegerLiteral {
    public init(integerLiteral v: UInt64) { self.init(v) }
}

extension SlotOffset: ExpressibleByIntegerLiteral {
    public init(integerLiteral v: UInt32) { self.init(rawValue: v) }
}

/// Small VMs and the guest actions tests take on them.
extension VirtualMachine {
    static func small(_ paging: Paging, slotPages: Int = 4096, vmPages: Int? = nil, seed: UInt64 = 7) -> VirtualMachine {
        VirtualMachine(layout: VMLayout(paging: paging, slotPages: slotPages, vmPages: vmPages, seed: seed))
    }

    var measured: SlotView { slot(VMLayout.measuredSlotID) }

    /// The guest writes `pages` (slot offsets), each through address space `mapping`.
    /// Returns how many writes faulted.
    @discardableResult
    func write(_ pages: [Int], mapping: (Int) -> Int = { _ in 0 }) -> Int {
        withMMU { mmu in
            let s = mmu.slot(id: VMLayout.measuredSlotID)
            var faults = 0
            for p in pages {
                let gfn = s.gfn(at: SlotOffset(p))
                if mmu.guestWrite(slot: s, gfn: gfn, sptep: mmu.spte(gfn: gfn, mapping: mapping(p), slot: s)!) != .noFault { faults += 1 }
            }
            return faults
        }
    }

    /// One KVM_GET_DIRTY_LOG; returns the harvest and the pages it handed out.
    func harvest(_ strategy: Strategy) -> (Harvest, [Int]) {
        withMMU { mmu in
            let s = mmu.slot(id: VMLayout.measuredSlotID)
            let h = mmu.harvest(slot: s, strategy: strategy)
            var pages: [Int] = []
            DirtyBitmap.forEachSetBit(h.bitmap, words: s.bitmapWords) { pages.append($0.index) }
            return (h, pages)
        }
    }

    /// Every spte of every shadow page, in allocation order: the whole MMU
    /// state a strategy can change.
    var allSptes: [UInt64] {
        var out: [UInt64] = []
        let c = table.columns
        for p in 0..<table.rowsUsed {
            let pt = c.spt[p]!
            for i in 0..<SPTE.perPage { out.append(pt[i]) }
        }
        return out
    }

    /// The writable leaves of the measured slot, as gfns.
    var writableGFNs: [GFN] { leafGFNs(with: SPTE.writable) }

    /// The dirty leaves of the measured slot, as gfns.
    var dirtyGFNs: [GFN] { leafGFNs(with: SPTE.dirty) }

    /// The leaves of the measured slot that have `bit`, as gfns.
    func leafGFNs(with bit: UInt64) -> [GFN] {
        var out: [GFN] = []
        let s = measured
        withMMU { mmu in
            mmu.forEachLeafSPTE { sptep, p, i, _ in
                let gfn = mmu.pages.gfn(ofPage: p, index: i)
                if sptep.pointee & bit != 0 && s.contains(gfn) { out.append(gfn) }
            }
        }
        return out.sorted()
    }

    /// The expected bitmap of a set of pages of the measured slot.
    func bitmap(of pages: [Int]) -> [UInt64] {
        var b = [UInt64](repeating: 0, count: measured.bitmapWords)
        for p in pages { b[p >> 6] |= 1 << UInt64(p & 63) }
        return b
    }
}
