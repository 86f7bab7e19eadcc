import CAtomics
import DirtyLogCore

/// The state one vCPU thread shares with the others while it runs through
/// the harvests (the concurrent scenario), alone on two cache lines.
///
/// `mode` is vcpu->mode: a vCPU in guest mode (1) must acknowledge a TLB
/// flush before kvm_flush_remote_tlbs() returns, as an IPI would make it
/// exit; one outside (0: in the fault path, waiting for mmu_lock, idle)
/// flushes when it next enters. `inSRCU` marks a fault in progress (its
/// memslots read under srcu_read_lock()), which a bitmap swap waits out
/// like synchronize_srcu(). `guardGFN` is the guest page table the vCPU shadowed
/// and believes write-protected (gfn + 1; 0 when none): a write to it
/// through a cached writable translation is the seed's race.
public struct VCPURun {
    public var mode: UInt32 = 0
    public var inSRCU: UInt32 = 0
    /// The flush generation (`VMState.flushGeneration`) its TLB has caught up with.
    public var ackedFlush: UInt64 = 0
    public var guardGFN: UInt64 = 0
    /// Its TLB: `VCPURun.tlbEntries` writable translations, each gfn + 1
    /// (0 empty), at a hash of the gfn (`tlbIndex`). Read-only translations
    /// are not kept: a write through one faults anyway.
    public let tlb: UnsafeMutablePointer<UInt64>
    private var pad: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    /// Entries of each vCPU's TLB: enough for small working sets, too few
    /// for a large one, whose writes then walk the sptes the harvest
    /// protects, as a real second-level TLB's 1.5 to 2 thousand entries are.
    public static let tlbEntries = 1024

    /// Where a gfn's translation goes: a multiplicative hash, so that
    /// evenly spaced pages spread like they would over a set-associative
    /// TLB's ways instead of landing on one direct-mapped entry.
    @inline(__always) static func tlbIndex(_ gfn: GFN) -> Int {
        Int(truncatingIfNeeded: (gfn.rawValue &* 0x9E37_79B9_7F4A_7C15) >> 54)
    }

    init(tlb: UnsafeMutablePointer<UInt64>) { self.tlb = tlb }

    static let inGuest: UInt32 = 1
    static let outsideGuest: UInt32 = 0
}

extension UnsafeMutablePointer where Pointee == VMState {
    /// The address of `harvestState`, for the vCPU threads' atomic loads.
    var harvestStatePointer: UnsafeMutablePointer<UInt64> {
        (UnsafeMutableRawPointer(self) + MemoryLayout<VMState>.offset(of: \VMState.harvestState)!).assumingMemoryBound(to: UInt64.self)
    }
}

extension SlotState {
    /// nr_dirty_pages and the dirty-line count grown by atomic adds: the
    /// marks of faults that run beside each other (the fast path, the TDP
    /// MMU's read side).
    static func addAtomically(_ state: UnsafeMutablePointer<SlotState>, pages: Int, lines: Int) {
        let raw = UnsafeMutableRawPointer(state)
        _ = ca_fetch_add64((raw + MemoryLayout<SlotState>.offset(of: \SlotState.nrDirtyPages)!).assumingMemoryBound(to: UInt64.self), UInt64(pages))
        if lines != 0 {
            _ = ca_fetch_add64((raw + MemoryLayout<SlotState>.offset(of: \SlotState.nrDirtyLines)!).assumingMemoryBound(to: UInt64.self), UInt64(lines))
        }
    }
}

extension KernelEra {
    /// mmu_lock's kind in the era.
    var lockKind: UInt32 {
        switch self {
        case .seed: UInt32(CA_LOCK_TICKET)
        case .modern: UInt32(CA_LOCK_QUEUED)
        case .tdpMMU: UInt32(CA_LOCK_RW)
        }
    }
}

extension VirtualMachine {
    /// `count` vCPU threads are about to run through the harvests: each gets
    /// its shared state and TLB; flushes now wait for them and the fault
    /// paths' shared updates are atomic. Undone by `stopGuests`.
    public func startGuests(count: Int) {
        precondition(count >= 1 && count <= vcpuCount && state.pointee.guests == nil)
        let runs = arena.allocate(VCPURun.self, count: count, alignment: 128)
        for i in 0..<count {
            let tlb = arena.allocate(UInt64.self, count: VCPURun.tlbEntries, alignment: 64)
            tlb.initialize(repeating: 0, count: VCPURun.tlbEntries)
            (runs + i).initialize(to: VCPURun(tlb: tlb))
        }
        state.pointee.guests = runs
        state.pointee.guestCount = count
        state.pointee.concurrent = true
    }

    /// The vCPU threads have stopped: back to a VM nobody runs on.
    public func stopGuests() {
        guard let runs = state.pointee.guests else { return }
        state.pointee.concurrent = false
        state.pointee.guests = nil
        for i in 0..<state.pointee.guestCount { arena.free(runs[i].tlb) }
        state.pointee.guestCount = 0
        arena.free(runs)
    }

    /// Between rounds, with no vCPU in the MMU: the era the next harvest and
    /// the faults through it run in. mmu_lock becomes that era's lock.
    public func enterEra(_ era: KernelEra) {
        guard state.pointee.era != era else { return }
        precondition(ca_mmu_is_locked(&state.pointee.mmuLock) == 0, "changing mmu_lock while it is held")
        state.pointee.mmuLock = ca_mmu_lock()
        state.pointee.mmuLock.kind = era.lockKind
        state.pointee.era = era
    }

    public var era: KernelEra { state.pointee.era }

    /// Harvests begun and ended as the vCPU threads count them (odd while one runs).
    public var harvestState: UInt64 { ca_load64(state.harvestStatePointer) }
}

extension MMU {
    /// A harvest the vCPU threads measure through begins: their writes and
    /// faults from now on are in its window. One atomic add, inside the
    /// timed region.
    @inline(__always) public func openHarvestWindow() { _ = ca_fetch_add64(vm.harvestStatePointer, 1) }

    /// It has returned: writes from now on must reach the next log.
    @inline(__always) public func closeHarvestWindow() { _ = ca_fetch_add64(vm.harvestStatePointer, 1) }

    /// kvm_flush_remote_tlbs() with vCPU threads running: a new flush
    /// generation, then wait until every vCPU in guest mode has caught up
    /// with it (kvm_make_all_cpus_request() with KVM_REQUEST_WAIT). A vCPU
    /// outside guest mode catches up when it enters.
    @inline(never)
    func flushRemoteTLBsAndWait() {
        let generation = withUnsafeMutablePointer(to: &vm.pointee.flushGeneration) { ca_fetch_add64($0, 1) } &+ 1
        for i in 0..<vm.pointee.guestCount {
            let r = run(i)
            while ca_load32(&r.pointee.mode) == VCPURun.inGuest && ca_load64(&r.pointee.ackedFlush) < generation {
                ca_cpu_relax()
            }
        }
    }

    /// synchronize_srcu() as far as the bitmap swap needs it: wait until no
    /// vCPU is inside a fault (an SRCU read section, `VCPURun.inSRCU`) that
    /// may have read the bitmap pointer before the swap.
    @inline(never)
    func synchronizeSRCU() {
        for i in 0..<vm.pointee.guestCount {
            let r = run(i)
            while ca_load32(&r.pointee.inSRCU) != 0 { ca_cpu_relax() }
        }
    }

    /// Whether some vCPU shadows `gfn` as a guest page table
    /// (kvm_page_track_is_active(): its writes are emulated, not let through).
    @inline(__always)
    func isShadowedGuestTable(_ gfn: GFN) -> Bool {
        let tag = gfn.rawValue &+ 1
        var i = 0
        while i < vm.pointee.guestCount {
            if ca_load64(&run(i).pointee.guardGFN) == tag { return true }
            i &+= 1
        }
        return false
    }

    /// The seed era's bitmap swap with vCPUs faulting through it, as the
    /// seed did it: the new current half published, then
    /// synchronize_srcu_expedited(): every fault that may have read the
    /// old half (each runs inside an SRCU read section) is waited out, so
    /// that what the old half names is final before it is protected. No
    /// mmu_lock: a fault waiting for it is not in the read section yet.
    @inline(__always)
    func swapBitmapsConcurrently(slot s: SlotView) {
        let flipped = UInt64(s.state.pointee.activeHalf ^ 1)
        withUnsafeMutablePointer(to: &s.state.pointee.activeHalf) { p in
            p.withMemoryRebound(to: UInt64.self, capacity: 1) { ca_store_seq64($0, flipped) }
        }
        s.state.pointee.resetDirtyCounts()
        synchronizeSRCU()
    }
}
