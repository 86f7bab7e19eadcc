import DirtyLogCore

/// The leaves of a slot in the guest's tree, as they were: what several
/// disable policies start from in turn (`VirtualMachine.restoreGuestLeaves`).
public struct LeafSnapshot: Sendable {
    /// (first gfn, level, spte) of each present leaf, in gfn order.
    var leaves: [(gfn: UInt64, level: UInt8, spte: UInt64)] = []
    public var count: Int { leaves.count }
}

extension VirtualMachine {
    /// Enables dirty logging on the slot by `policy` (`MMU.enableLogging`).
    @discardableResult
    public func enableDirtyLogging(slotID: Int, policy: EnablePolicy) -> ProtectCounters {
        var counters = ProtectCounters()
        withMMU { $0.enableLogging(slot: $0.slot(id: slotID), policy: policy, counters: &counters) }
        return counters
    }

    /// Disables it by `policy` (`MMU.disableLogging`); zapped tables are
    /// freed at once when nothing else runs in the MMU.
    @discardableResult
    public func disableDirtyLogging(slotID: Int, policy: DisablePolicy) -> ProtectCounters {
        var counters = ProtectCounters()
        withMMU { $0.disableLogging(slot: $0.slot(id: slotID), policy: policy, counters: &counters) }
        if !state.pointee.concurrent { reclaimZappedPages() }
        return counters
    }

    /// Every leaf of the slot in the guest's tree.
    public func snapshotGuestLeaves(slotID: Int) -> LeafSnapshot {
        var snap = LeafSnapshot()
        withMMU { mmu in
            mmu.forEachGuestLeaf(slot: mmu.slot(id: slotID)) { gfn, level, spte in snap.leaves.append((gfn, UInt8(level), spte)) }
        }
        return snap
    }

    /// Puts the guest's tree back as `snap` found it, untimed: everything
    /// below the root that maps the slot torn down and freed, then each
    /// leaf installed again with its value. For a VM of the direct tree
    /// whose only slot is `slotID`: the root's entries map nothing else.
    public func restoreGuestLeaves(_ snap: LeafSnapshot, slotID: Int) {
        precondition(hasTDP && slots.count == 1, "restoring leaves needs the direct tree and one slot")
        withMMU { mmu in
            let root = mmu.guestRootTable
            for i in 0..<SPTE.perPage where isShadowPresentSPTE(root[i]) {
                let old = root[i]
                root[i] = 0
                mmu.handleRemovedTable(SPTE.childTable(old), level: VMLayout.rootLevel - 1, shared: false)
            }
        }
        reclaimZappedPages()
        var mapper = LeafMapper(vm: self)
        for leaf in snap.leaves {
            let sptep = mapper.installLeaf(root: guestRoot, va: leaf.gfn, gfn: GFN(leaf.gfn), level: Int(leaf.level), writable: true)
            sptep.pointee = leaf.spte
        }
    }
}
