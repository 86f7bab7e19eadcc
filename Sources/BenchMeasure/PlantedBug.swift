#if DEBUG
import DirtyLogCore
import ShadowMMU

/// A defect planted in a harvest on purpose, in debug builds only, so that
/// a test can show the checks catch a broken strategy end to end: its rows
/// unverified in points.csv, the violations in the summary, exit status 1.
/// Release builds have no such seam. The bench command reads it from
/// `PlantedBug.environmentVariable`.
public enum PlantedBug: String, CaseIterable, Sendable {
    /// The harvest skips one spte: the first page of the log it handed out
    /// keeps its writable (under PML, dirty) bit.
    case skipOneSPTE = "skip-one-spte"
    /// kvm_flush_remote_tlbs() with vCPUs running is counted but sends
    /// nothing: their TLBs keep writable translations of the sptes the
    /// harvest protected (the concurrent scenario).
    case skipFlush = "skip-flush"
    /// Enabling logging leaves large leaves as they were (the lifecycle):
    /// neither dropped, nor write-protected, nor split.
    case largeLeafWritable = "large-leaf-writable"

    public static let environmentVariable = "DIRTY_LOG_BENCH_PLANTED_BUG"

    /// What the bug sets in the model's fault-injection seam
    /// (`FaultInjection`), before its series runs.
    func plant(in vm: VirtualMachine) {
        vm.faultInjection.skipFlushes = self == .skipFlush
        vm.faultInjection.leaveLargeLeavesWritable = self == .largeLeafWritable
    }

    /// Undoes the protection of one leaf the harvest just protected: called
    /// inside the timed region, right after the harvest.
    func strike(_ vm: VirtualMachine, handedOut: UnsafeMutablePointer<UInt64>) {
        switch self {
        case .skipFlush, .largeLeafWritable:
            return
        case .skipOneSPTE:
            vm.withMMU { mmu in
                let s = mmu.slot(id: VMLayout.measuredSlotID)
                var first: SlotOffset?
                DirtyBitmap.forEachSetBit(handedOut, words: s.bitmapWords) { if first == nil { first = $0 } }
                guard let page = first, let sptep = mmu.spte(gfn: s.gfn(at: page), mapping: 0, slot: s) else { return }
                sptep.pointee |= s.state.pointee.protection == .dirtyBit ? SPTE.dirty : SPTE.writable
            }
        }
    }
}
#endif
