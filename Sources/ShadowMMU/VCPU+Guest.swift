import CAtomics
import DirtyLogCore

/// One pass of a vCPU thread over its working set: write `count` pages,
/// page `i` being `gfns[i]` reached through `sptes[i]`.
public struct VCPUPass {
    public var gfns: UnsafePointer<GFN>
    public var sptes: UnsafePointer<UnsafeMutablePointer<UInt64>>
    public var count: Int
    /// Which vCPU (its `VCPURun` and `VCPUState`).
    public var vcpu: Int
    public var faultPath: FaultPath
    /// Before writing page `shadowAt`, write-protect it as a guest page table
    /// being shadowed (-1: no shadowing in this pass).
    public var shadowAt = -1
    /// The `VMState.harvestState` at which the harvest being run through has
    /// returned (0: none). Writes from then on are recorded in
    /// `writtenAfterDone` (one byte per page), a write through a cached
    /// writable translation whose spte is no longer writable is counted as
    /// stale, and with `abandonOnDone` the pass ends at the first of them.
    public var doneState: UInt64 = 0
    public var abandonOnDone = false
    public var writtenAfterDone: UnsafeMutablePointer<UInt8>? = nil
    /// Fault latencies in ticks, of faults begun while a harvest ran, up to `latencyCapacity`.
    public var latencies: UnsafeMutablePointer<UInt64>? = nil
    public var latencyCapacity = 0

    public init(gfns: UnsafePointer<GFN>, sptes: UnsafePointer<UnsafeMutablePointer<UInt64>>, count: Int, vcpu: Int, faultPath: FaultPath) {
        self.gfns = gfns
        self.sptes = sptes
        self.count = count
        self.vcpu = vcpu
        self.faultPath = faultPath
    }
}

/// What a vCPU's passes did, summed; the `window` counts are those of
/// writes begun while a harvest ran.
public struct VCPUPassStats: Sendable {
    public var writes = 0
    public var faults = 0
    /// Faults the fast path fixed without mmu_lock.
    public var fastFaults = 0
    /// Writes to a shadowed guest page table, emulated (logged, not let through).
    public var emulatedWrites = 0
    public var windowWrites = 0
    public var windowFaults = 0
    /// Ticks its faults begun in the window spent waiting for mmu_lock.
    public var windowLockWaitTicks: UInt64 = 0
    /// Latencies stored, and faults in the window past the buffer's end.
    public var latenciesRecorded = 0
    public var latenciesDropped = 0
    /// The seed's race: writes let through a cached writable translation of a
    /// guest page table this vCPU's shadowing had returned believing write-protected.
    public var raceViolations = 0
    /// Writes through a cached writable translation after the harvest had
    /// returned, although the spte was protected: a flush that did not happen.
    public var staleWrites = 0
    public var shadowings = 0
    public var shadowFlushes = 0
    /// The pass ended early, at the harvest's return (`abandonOnDone`).
    public var abandoned = false

    public init() {}

    public mutating func add(_ o: VCPUPassStats) {
        writes += o.writes; faults += o.faults; fastFaults += o.fastFaults; emulatedWrites += o.emulatedWrites
        windowWrites += o.windowWrites; windowFaults += o.windowFaults; windowLockWaitTicks += o.windowLockWaitTicks
        latenciesRecorded += o.latenciesRecorded; latenciesDropped += o.latenciesDropped
        raceViolations += o.raceViolations; staleWrites += o.staleWrites
        shadowings += o.shadowings; shadowFlushes += o.shadowFlushes
    }
}

extension MMU {
    /// The vCPU's shared state.
    @inline(__always) func run(_ vcpu: Int) -> UnsafeMutablePointer<VCPURun> { vm.pointee.guests.unsafelyUnwrapped + vcpu }

    /// vcpu->mode = IN_GUEST_MODE, then the pending TLB-flush request
    /// served (kvm_check_request(KVM_REQ_TLB_FLUSH) on the way in). The
    /// store is ordered before the load, so a flush either sees the vCPU in
    /// guest mode and waits for it, or is seen here.
    @inline(__always)
    func enterGuest(_ r: UnsafeMutablePointer<VCPURun>) {
        ca_store_seq32(&r.pointee.mode, VCPURun.inGuest)
        serveFlushRequest(r)
    }

    /// An exit: vcpu->mode = OUTSIDE_GUEST_MODE. Flushes stop waiting for it.
    @inline(__always)
    func exitGuest(_ r: UnsafeMutablePointer<VCPURun>) {
        ca_store32(&r.pointee.mode, VCPURun.outsideGuest)
    }

    /// A flush requested since the TLB last caught up: drop every entry.
    @inline(__always)
    func serveFlushRequest(_ r: UnsafeMutablePointer<VCPURun>) {
        let generation = ca_load64(&vm.pointee.flushGeneration)
        if generation != r.pointee.ackedFlush {
            r.pointee.tlb.update(repeating: 0, count: VCPURun.tlbEntries)
            ca_store64(&r.pointee.ackedFlush, generation)
        }
    }

    /// The vCPU thread starts or stops running in the MMU: outside guest
    /// mode, TLB empty, nothing shadowed.
    public func resetGuest(vcpu: Int) {
        let r = run(vcpu)
        exitGuest(r)
        r.pointee.tlb.update(repeating: 0, count: VCPURun.tlbEntries)
        ca_store64(&r.pointee.ackedFlush, ca_load64(&vm.pointee.flushGeneration))
        if r.pointee.guardGFN != 0 { unshadowGuestTable(vcpu: vcpu) }
    }

    /// One pass of guest writes (`VCPUPass`): a write through a cached
    /// writable translation goes through; otherwise the spte is read (a
    /// page walk), and a writable one is cached; a write-protected one
    /// faults (`vcpuWriteFault`). The vCPU serves TLB-flush requests before
    /// every write, as an IPI would interrupt it.
    @inline(never)
    public func vcpuPass(_ p: VCPUPass) -> VCPUPassStats {
        var st = VCPUPassStats()
        let r = run(p.vcpu)
        let tlb = r.pointee.tlb
        let s = slot(id: VMLayout.measuredSlotID)
        let fast = p.faultPath == .fast
        let lockStats = ca_lock_stats_get()
        let harvestState = vm.harvestStatePointer
        if r.pointee.guardGFN != 0 { unshadowGuestTable(vcpu: p.vcpu) }
        enterGuest(r)
        var i = 0
        while i < p.count {
            let gfn = p.gfns[i]
            let sptep = p.sptes[i]
            if i == p.shadowAt {
                exitGuest(r)
                if shadowGuestTable(gfn, vcpu: p.vcpu) { st.shadowFlushes &+= 1 }
                st.shadowings &+= 1
                enterGuest(r)
            } else {
                serveFlushRequest(r)
            }
            let state = ca_load64(harvestState)
            let inWindow = state & 1 != 0
            let afterDone = p.doneState != 0 && state >= p.doneState
            if afterDone {
                if p.abandonOnDone {
                    st.abandoned = true
                    break
                }
                p.writtenAfterDone?[i] = 1
            }
            st.writes &+= 1
            if inWindow { st.windowWrites &+= 1 }
            let slotIndex = VCPURun.tlbIndex(gfn)
            let tag = gfn.rawValue &+ 1
            if tlb[slotIndex] == tag {
                if isShadowedGuestTable(gfn) {
                    st.raceViolations &+= 1
                } else if afterDone && !isWritableSPTE(ca_read_once64(sptep)) {
                    st.staleWrites &+= 1
                }
                i &+= 1
                continue
            }
            if isWritableSPTE(ca_read_once64(sptep)) {
                tlb[slotIndex] = tag
                i &+= 1
                continue
            }
            let t0 = ca_ticks()
            let w0 = lockStats?.pointee.wait_ticks ?? 0
            exitGuest(r)
            let outcome = vcpuWriteFault(slot: s, gfn: gfn, sptep: sptep, vcpu: p.vcpu, fast: fast)
            enterGuest(r)
            if outcome == .madeWritable || outcome == .fastPath { tlb[slotIndex] = tag }
            let t1 = ca_ticks()
            st.faults &+= 1
            if outcome == .fastPath { st.fastFaults &+= 1 }
            if outcome == .emulated { st.emulatedWrites &+= 1 }
            if inWindow {
                st.windowFaults &+= 1
                st.windowLockWaitTicks &+= (lockStats?.pointee.wait_ticks ?? 0) &- w0
                if let l = p.latencies, st.latenciesRecorded < p.latencyCapacity {
                    l[st.latenciesRecorded] = t1 &- t0
                    st.latenciesRecorded &+= 1
                } else {
                    st.latenciesDropped &+= 1
                }
            }
            i &+= 1
        }
        exitGuest(r)
        return st
    }

    /// What a write fault did.
    enum FaultOutcome: Equatable {
        /// The slow path made the spte writable.
        case madeWritable
        /// The fast path did, by cmpxchg, without mmu_lock.
        case fastPath
        /// Someone else had made it writable first.
        case alreadyWritable
        /// The page is a shadowed guest page table: the write was emulated
        /// and logged, the spte stays read-only.
        case emulated
    }

    /// The write fault of a logging slot's write-protected spte.
    ///
    /// `fast` (c7ba5b48's fast_page_fault()): if the spte is write-protected
    /// for dirty logging only, cmpxchg it writable without the lock, then
    /// mark the page dirty. Otherwise, or if the cmpxchg lost, the locked
    /// path: under mmu_lock (the TDP MMU's read side, where the spte is
    /// set by cmpxchg since other faults and tdp-walk hold it too), a
    /// tracked guest page table's write is emulated and logged; anything
    /// else is made writable and logged.
    ///
    /// The whole fault is an SRCU read section (`VCPURun.inSRCU`): the
    /// bitmap it marks was read inside it.
    @inline(never)
    func vcpuWriteFault(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int, fast: Bool) -> FaultOutcome {
        let r = run(vcpu)
        ca_store_seq32(&r.pointee.inSRCU, 1)
        defer { ca_store32(&r.pointee.inSRCU, 0) }
        if fast {
            let spte = ca_read_once64(sptep)
            if isLocklesslyWritableSPTE(spte) && ca_cmpxchg64(sptep, spte, spte | SPTE.writable | SPTE.dirty) != 0 {
                markPageDirty(slot: s, gfn: gfn, vcpu: vcpu)
                return .fastPath
            }
        }
        // The read side: the TDP MMU's rwlock shared with other faults and
        // tdp-walk, the whole lock in the eras before it.
        let shared = vm.pointee.era == .tdpMMU
        readLock()
        defer { readUnlock() }
        while true {
            let spte = ca_read_once64(sptep)
            if isWritableSPTE(spte) { return .alreadyWritable }
            if isShadowedGuestTable(gfn) {
                markPageDirty(slot: s, gfn: gfn, vcpu: vcpu)
                return .emulated
            }
            let made = spte | SPTE.writable | SPTE.dirty | SPTE.mmuWritable
            if shared {
                guard ca_cmpxchg64(sptep, spte, made) != 0 else { continue }
            } else {
                ca_write_once64(sptep, made)
            }
            markPageDirty(slot: s, gfn: gfn, vcpu: vcpu)
            return .madeWritable
        }
    }

    /// Write-protecting a guest page table the vCPU starts to shadow
    /// (kvm_mmu_get_page() → account_shadowed() → rmap_write_protect()),
    /// under mmu_lock: every spte of `gfn` loses its writable and
    /// MMU-writable bits, and the TLBs are flushed if the era's rule says
    /// one may hold a writable translation: at the seed only if this call
    /// cleared a writable bit; since 198c74f4 also if an spte was still
    /// MMU-writable, which a harvest that flushes after unlocking leaves.
    /// Returns whether it flushed. The vCPU then believes the gfn
    /// write-protected until `unshadowGuestTable`.
    @discardableResult
    func shadowGuestTable(_ gfn: GFN, vcpu: Int) -> Bool {
        let s = slot(id: VMLayout.measuredSlotID)
        let seedRule = vm.pointee.era == .seed
        spinLock()
        var flush = false
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        while let sptep = it.next() {
            while true {
                let spte = ca_read_once64(sptep)
                let cleared = spte & ~(SPTE.writable | SPTE.mmuWritable)
                if seedRule ? isWritableSPTE(spte) : spte != cleared { flush = true }
                if spte == cleared || ca_cmpxchg64(sptep, spte, cleared) != 0 { break }
            }
        }
        ca_store64(&run(vcpu).pointee.guardGFN, gfn.rawValue &+ 1)
        if flush { flushRemoteTLBs() }
        spinUnlock()
        return flush
    }

    /// The shadow page of the vCPU's guest page table is gone
    /// (kvm_mmu_zap_page() → unaccount_shadowed()): its writes fault into
    /// the slow path again, which makes the spte writable.
    func unshadowGuestTable(vcpu: Int) {
        spinLock()
        ca_store64(&run(vcpu).pointee.guardGFN, 0)
        spinUnlock()
    }
}
