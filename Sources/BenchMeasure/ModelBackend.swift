import DirtyLogCore
import ShadowMMU

/// The model as `TimedHarvest` drives it: a VM, the handle its hot paths
/// run on and its measured slot, hoisted once (the handle is valid while
/// the VM gets no new shadow page, and measuring adds none). The guest's
/// writes are dealt to the vCPUs in turn; a vCPU whose dirty ring fills
/// stops, and the rings are harvested before it goes on.
struct ModelBackend: ModelHarvestBackend {
    let vm: VirtualMachine
    let mmu: MMU
    let slot: SlotView
    /// The round's writes done, and the vCPU the next one goes to.
    private var written = 0
    private var vcpu = 0
    /// The bitmap the last harvest handed out (valid until the next one).
    private var handedOut: UnsafeMutablePointer<UInt64>?
    #if DEBUG
    /// A deliberate defect, for the tests that prove a broken strategy is caught.
    var plantedBug: PlantedBug?
    #endif

    /// For `vm`, with `mmu` from `vm.withMMU`, inside whose scope it must stay.
    init(vm: VirtualMachine, mmu: MMU) {
        self.vm = vm
        self.mmu = mmu
        slot = mmu.slot(id: VMLayout.measuredSlotID)
    }

    mutating func beginRound(_ strategy: Strategy, _ round: GuestRound) {
        vm.beginRound(slotID: slot.id, for: strategy)
        written = 0
        vcpu = 0
    }

    mutating func write(_ strategy: Strategy, _ round: GuestRound) -> Bool {
        let (next, v, ringFull) = round.gfns.withUnsafeBufferPointer { gp in
            round.sptes.withUnsafeBufferPointer { tp in mmu.guestWrites(slot: slot, gfns: gp, sptes: tp, from: written, vcpu: vcpu) }
        }
        written = next
        vcpu = v
        return !ringFull
    }

    mutating func harvestFullRing() {
        _ = mmu.harvest(slot: slot, strategy: .ring)
    }

    func evict(_ strategy: Strategy, _ round: GuestRound, with eviction: CacheEviction) {
        eviction.evict(mmu: mmu, slot: slot, strategy: strategy, round: round)
    }

    @inline(__always)
    mutating func harvest(_ strategy: Strategy, phases: inout HarvestPhaseMarks) -> HarvestOutcome {
        let h = mmu.harvest(slot: slot, strategy: strategy, phases: &phases)
        handedOut = h.bitmap
        #if DEBUG
        plantedBug?.strike(vm, handedOut: h.bitmap)
        #endif
        return HarvestOutcome(choice: h.choice, counters: h.counters)
    }

    /// No spte the writes made writable (or dirty, under PML) is left so,
    /// the log handed out is the pages written, nothing is left pending,
    /// n_used_mmu_pages is unchanged (`VirtualMachine.checkProtected`).
    func verify(_ strategy: Strategy, _ round: GuestRound, _ outcome: HarvestOutcome) -> Verdict {
        round.expected.pages.withUnsafeBufferPointer { pages in
            round.expected.bitmap.withUnsafeBufferPointer { expected in
                Verdict(vm.checkProtected(slotID: slot.id, written: pages, harvested: handedOut!, expected: expected.baseAddress!))
            }
        }
    }
}
