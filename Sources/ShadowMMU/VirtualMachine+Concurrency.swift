import CAtomics
import DirtyLogCore

/// What a running vCPU shares with the threads that flush it, protect its
/// pages or shadow its page tables, alone on two cache lines
/// (`struct kvm_vcpu`'s `mode` and `requests`, an SRCU read section, its
/// TLB, the page tracker's view of it).
///
/// `mode` is vcpu->mode: a vCPU in guest mode (1) must take an IPI's exit
/// before kvm_flush_remote_tlbs() returns; one outside (0: in a fault,
/// waiting for mmu_lock, idle) flushes when it next enters. `inSRCU` marks
/// a fault in progress (its memslots read under srcu_read_lock()), which a
/// bitmap swap waits out like synchronize_srcu(). `trackedGFN` is the
/// guest page table the vCPU shadows (gfn + 1; 0 when none), whose writes
/// faults emulate (kvm_page_track_is_active()); `believedProtectedGFN` is
/// the same gfn once the shadowing fault has returned, believing it
/// write-protected: a write to it through a cached writable translation
/// is the seed's race.
public struct VCPUContext {
    public var mode: UInt32 = 0
    public var inSRCU: UInt32 = 0
    /// The flush generation (`VMState.flushGeneration`) its TLB has caught up with.
    public var ackedFlush: UInt64 = 0
    public var trackedGFN: UInt64 = 0
    public var believedProtectedGFN: UInt64 = 0
    /// Its place (from 0) among the vCPUs in guest mode when the last flush
    /// sent its IPIs, one after another in vCPU order: the IPI reaches it
    /// that many IPI costs and one after the flush began.
    public var ipiPosition: UInt64 = 0
    /// Its TLB: `VCPUContext.tlbEntries` writable translations, each gfn + 1
    /// (0 empty), at a hash of the gfn (`tlbIndex`). Read-only translations
    /// are not kept: a write through one faults anyway.
    public let tlb: UnsafeMutablePointer<UInt64>
    private var pad: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0)

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

extension VirtualMachine {
    /// `count` vCPU threads are about to run through the harvests: each gets
    /// its shared state and TLB; flushes now send IPIs and wait for them.
    /// Undone by `stopGuests`.
    public func startGuests(count: Int) {
        precondition(count >= 1 && count <= vcpuCount && state.pointee.guests == nil)
        let contexts = arena.allocate(VCPUContext.self, count: count, alignment: 128)
        for i in 0..<count {
            let tlb = arena.allocate(UInt64.self, count: VCPUContext.tlbEntries, alignment: 64)
            tlb.initialize(repeating: 0, count: VCPUContext.tlbEntries)
            (contexts + i).initialize(to: VCPUContext(tlb: tlb))
        }
        state.pointee.guests = contexts
        state.pointee.guestCount = count
        state.pointee.concurrent = true
    }

    /// The vCPU threads have stopped: back to a VM nobody runs on.
    public func stopGuests() {
        guard let contexts = state.pointee.guests else { return }
        state.pointee.concurrent = false
        state.pointee.guests = nil
        for i in 0..<state.pointee.guestCount { arena.free(contexts[i].tlb) }
        state.pointee.guestCount = 0
        arena.free(contexts)
    }

    /// What a VM exit and entry cost a vCPU together, and an IPI from its
    /// sending to the target's exit, in time-stamp ticks (`ChargedCosts`).
    public func setExitCosts(exitTicks: UInt64, ipiTicks: UInt64) {
        state.pointee.charged.exitTicks = exitTicks
        state.pointee.charged.ipiTicks = ipiTicks
    }

    /// The measuring side's choice of mmu_lock: the era's lock alone, or
    /// the instrumented one that records each thread's holds and waits for
    /// the threads that ask (`ca_lock_stats_set`). Between rounds only.
    public func instrumentLock(_ on: Bool) {
        checkLockFree()
        let kind = state.pointee.mmuLock.kind & UInt32(CA_LOCK_KIND_MASK)
        state.pointee.mmuLock.kind = on ? kind | UInt32(CA_LOCK_INSTRUMENTED) : kind
    }

    /// Whether mmu_lock is the instrumented one.
    public var lockInstrumented: Bool { state.pointee.mmuLock.kind & UInt32(CA_LOCK_INSTRUMENTED) != 0 }

    /// Between rounds, with no vCPU in the MMU: the era the next harvest and
    /// the faults through it run in. mmu_lock becomes that era's lock.
    public func enterEra(_ era: KernelEra) {
        guard state.pointee.era != era else { return }
        checkLockFree()
        let instrumented = state.pointee.mmuLock.kind & UInt32(CA_LOCK_INSTRUMENTED)
        state.pointee.mmuLock = ca_mmu_lock()
        state.pointee.mmuLock.kind = era.lockKind | instrumented
        state.pointee.era = era
    }

    public var era: KernelEra { state.pointee.era }

    /// Harvests begun and ended as the vCPU threads count them (odd while one runs).
    public var harvestState: UInt64 { ca_load64(state.harvestStatePointer) }
}

extension MMU {
    /// The vCPU's shared state.
    @inline(__always) func context(_ vcpu: Int) -> UnsafeMutablePointer<VCPUContext> { vm.pointee.guests.unsafelyUnwrapped + vcpu }

    /// A harvest the vCPU threads measure through begins: their writes and
    /// faults from now on are in its window. One atomic add, just before
    /// the timed region.
    @inline(__always) public func openHarvestWindow() { _ = ca_fetch_add64(vm.harvestStatePointer, 1) }

    /// It has returned: writes from now on must reach the next log.
    @inline(__always) public func closeHarvestWindow() { _ = ca_fetch_add64(vm.harvestStatePointer, 1) }

    /// Harvests begun and ended, as a vCPU thread reads them between writes.
    @inline(__always) public var harvestState: UInt64 { ca_load64(vm.harvestStatePointer) }

    /// kvm_flush_remote_tlbs() with vCPU threads running
    /// (kvm_make_all_cpus_request(KVM_REQ_TLB_FLUSH) with KVM_REQUEST_WAIT):
    /// a new flush generation and an IPI to every vCPU in guest mode, then
    /// wait until each has taken the IPI's exit. The IPI reaches a vCPU
    /// `ChargedCosts.ipiTicks` after it is sent (`vcpuTakeInterrupts`). A vCPU
    /// outside guest mode is not waited for: it catches up when it enters.
    @inline(never)
    func flushRemoteTLBsAndWait() {
        if injectedSkipFlush { return }
        // kvm_make_all_cpus_request(): an IPI to each vCPU in guest mode, in
        // vCPU order; a vCPU's place among those is when its IPI lands.
        var position: UInt64 = 0
        for i in 0..<vm.pointee.guestCount {
            let c = context(i)
            guard ca_load32(&c.pointee.mode) == VCPUContext.inGuest else { continue }
            ca_store64(&c.pointee.ipiPosition, position)
            position &+= 1
        }
        stampFlushPosted()
        let generation = withUnsafeMutablePointer(to: &vm.pointee.flushGeneration) { ca_fetch_add64($0, 1) } &+ 1
        for i in 0..<vm.pointee.guestCount {
            let c = context(i)
            while ca_load32(&c.pointee.mode) == VCPUContext.inGuest && ca_load64(&c.pointee.ackedFlush) < generation {
                ca_cpu_relax()
            }
        }
    }

    /// synchronize_srcu() as far as the bitmap swap needs it: wait until no
    /// vCPU is inside a fault (an SRCU read section, `VCPUContext.inSRCU`)
    /// that may have read the bitmap pointer before the swap.
    @inline(never)
    func synchronizeSRCU() {
        for i in 0..<vm.pointee.guestCount {
            let c = context(i)
            while ca_load32(&c.pointee.inSRCU) != 0 { ca_cpu_relax() }
        }
    }

    /// Whether some vCPU shadows `gfn` as a guest page table
    /// (kvm_page_track_is_active(): its writes are emulated, not let through).
    @inline(__always)
    func isTrackedGuestTable(_ gfn: GFN) -> Bool {
        let tag = gfn.rawValue &+ 1
        var i = 0
        while i < vm.pointee.guestCount {
            if ca_load64(&context(i).pointee.trackedGFN) == tag { return true }
            i &+= 1
        }
        return false
    }

    /// The seed era's bitmap swap with vCPUs faulting through it, as the
    /// seed did it: the new slots copy gets nr_dirty_pages = 0 and the
    /// cleared half before it is published (rcu_assign_pointer), then
    /// synchronize_srcu_expedited(): every fault that may have read the old
    /// half (each runs inside an SRCU read section) is waited out, so that
    /// what the old half names is final before it is protected. No
    /// mmu_lock: a fault waiting for it is not in the read section yet.
    @inline(__always)
    func swapBitmapsConcurrently(slot s: SlotView) {
        let flipped = UInt64(s.state.pointee.activeHalf ^ 1)
        s.state.pointee.resetDirtyCounts()
        withUnsafeMutablePointer(to: &s.state.pointee.activeHalf) { p in
            p.withMemoryRebound(to: UInt64.self, capacity: 1) { ca_store_seq64($0, flipped) }
        }
        synchronizeSRCU()
    }
}

extension VirtualMachine {
    /// mmu_lock's failures in this process: waits that gave up after 2e10
    /// time-stamp ticks (CA_LOCK_STALL_TICKS), and locks found held where
    /// nothing may hold them (`checkLockFree`): each a lock that never let
    /// go, or a harness that changed it mid-hold. A run with any fails; a
    /// test reads it.
    public static var mmuLockFailures: UInt64 { ca_lock_failure_count() }

    /// Between rounds nothing holds mmu_lock: a lock held here is counted
    /// (`mmuLockFailures`), and then replaced all the same, so that one
    /// broken lock fails the run or the test that reads the count rather
    /// than stopping the process.
    func checkLockFree() {
        if ca_mmu_is_locked(&state.pointee.mmuLock) != 0 { ca_lock_failed() }
    }
}
