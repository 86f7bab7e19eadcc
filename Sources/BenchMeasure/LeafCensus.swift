import DirtyLogCore
import ShadowMMU

/// The leaves of a slot in the guest's own tree (the direct tree, or shadow
/// paging's address space 0), by level, and what its huge regions hold:
/// what each phase of the lifecycle is checked against. Counted from the
/// model's leaves (`MMU.forEachGuestLeaf`), as the kernel's pages_4k,
/// pages_2m and pages_1g count its own.
public struct LeafCensus: Equatable, Sendable {
    /// Present leaves mapping the slot, per level.
    public var leaves = LeafCounts()
    /// Of those, the writable ones.
    public var writable = LeafCounts()
    /// Regions of the host's page size the slot covers whole: those that
    /// may be mapped huge.
    public var eligibleRegions = 0
    /// Of those: mapped by one huge leaf; by smaller leaves (split); by
    /// nothing (no entry, or a table without a present leaf).
    public var hugeRegions = 0
    public var splitRegions = 0
    public var emptyRegions = 0

    public init() {}
}

extension VirtualMachine {
    /// The census of the slot in the guest's tree.
    public func leafCensus(slotID: Int) -> LeafCensus {
        let hostLevel = state.pointee.hostLevel
        return withMMU { mmu in
            let s = mmu.slot(id: slotID)
            var c = LeafCensus()
            let span = pagesPerLeaf(level: max(1, hostLevel))
            if hostLevel > 1 {
                let first = (s.baseGFN.rawValue &+ span &- 1) / span, last = s.endGFN.rawValue / span
                c.eligibleRegions = last > first ? Int(last &- first) : 0
            }
            var lastSplit: UInt64? = nil
            mmu.forEachGuestLeaf(slot: s) { gfn, level, spte in
                guard s.contains(GFN(gfn)) else { return }
                c.leaves[level] += 1
                if isWritableSPTE(spte) { c.writable[level] += 1 }
                guard hostLevel > 1 else { return }
                let region = gfn & ~(span &- 1)
                guard s.coversRegion(of: GFN(region), level: hostLevel) else { return }
                if level == hostLevel {
                    c.hugeRegions += 1
                } else if level < hostLevel, region != lastSplit {
                    // Leaves come in gfn order: a region's smaller leaves in a row.
                    c.splitRegions += 1
                    lastSplit = region
                }
            }
            c.emptyRegions = c.eligibleRegions - c.hugeRegions - c.splitRegions
            return c
        }
    }
}
