import DirtyLogCore
import ShadowMMU

/// One round of guest writes on the model, resolved to the sptes they go
/// through, with what the harvest after it must hand out.
struct GuestRound {
    /// The pages written: what the harvest must hand out.
    let expected: DirtySet
    /// The spte each write goes through, and its gfn, in spte address order.
    let sptes: [UnsafeMutablePointer<UInt64>]
    let gfns: [GFN]
    /// Sptes mapping each gfn (the paging mode's).
    let sptesPerGFN: Int

    /// Under shadow paging a page is written through one of its address
    /// spaces, a fixed seeded choice per page, like a guest whose TLB holds
    /// that translation. The writes go in spte address order: the state a
    /// round of writes leaves does not depend on their order, and writing
    /// in memory order keeps the untimed refault cheap on large VMs.
    init(vm: VirtualMachine, set: DirtySet, sptesPerGFN: Int, seed: UInt64) {
        let k = UInt64(sptesPerGFN)
        var pairs: [(sptep: UnsafeMutablePointer<UInt64>, gfn: GFN)] = vm.withMMU { mmu in
            let s = mmu.slot(id: VMLayout.measuredSlotID)
            return set.pages.map { off in
                let gfn = s.gfn(at: off)
                return (mmu.spte(gfn: gfn, mapping: Int(mix64(gfn.rawValue ^ seed) % k), slot: s)!, gfn)
            }
        }
        pairs.sort { $0.sptep < $1.sptep }
        expected = set
        self.sptesPerGFN = sptesPerGFN
        sptes = pairs.map(\.sptep)
        gfns = pairs.map(\.gfn)
    }

    var count: Int { sptes.count }
}
