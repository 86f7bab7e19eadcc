import CAtomics
import DirtyLogCore

/// What a vCPU's write did, short of a fault (`MMU.vcpuWrite`).
public enum VCPUWrite: Equatable, Sendable {
    /// Through a writable translation its TLB held, the spte still writable.
    case cached
    /// Through a cached writable translation whose spte has since been
    /// write-protected: a TLB flush the vCPU has not yet served. Harmless
    /// while the harvest that protected it has not returned (the page is in
    /// the log it hands out); after that, a flush that did not happen.
    case cachedStale
    /// Through a cached writable translation of the guest page table its
    /// own shadowing fault returned believing write-protected: the seed's
    /// race (6dbf79e7).
    case cachedRace
    /// The spte was writable: the page walk's translation is now cached.
    case walked
    /// The spte is write-protected: the write faults (`MMU.vcpuWriteFault`).
    case mustFault
}

/// What a vCPU's fault did (`MMU.vcpuWriteFault`, `MMU.vcpuShadowingFault`).
public struct VCPUFault: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// c7ba5b48's fast path made the spte writable by cmpxchg, without mmu_lock.
        case fastPath
        /// The locked path made it writable.
        case madeWritable
        /// Someone else had made it writable first.
        case alreadyWritable
        /// The page is a tracked guest page table: the write was emulated
        /// and logged, the spte stays read-only.
        case emulated
        /// The fault shadowed a guest page table: write-protected it (and,
        /// if the era's rule said so, flushed TLBs) under mmu_lock.
        case shadowed(flushed: Bool)
    }

    public var kind: Kind
    /// The fault set the page's bit in the log (it was clear): the page is
    /// logged again since the last harvest took it.
    public var newlyLogged = false

    public init(_ kind: Kind, newlyLogged: Bool = false) {
        self.kind = kind
        self.newlyLogged = newlyLogged
    }
}

/// The guest's side: what a vCPU thread running through the harvests does
/// to the MMU, one event at a time. The model exposes the events; whoever
/// runs the vCPU (BenchMeasure's `GuestThreads`) times them.
///
/// A vCPU is in guest mode between `vcpuEnterGuest` and a fault or an
/// interrupt's exit. A VM exit and the entry after it cost
/// `ChargedCosts.exitTicks` together, paid half on each side: the world
/// switch the kernel's fault handler, or its IPI handler, sits between.
extension MMU {
    /// The vCPU thread starts or stops running in the MMU: outside guest
    /// mode, TLB empty, nothing shadowed.
    public func vcpuReset(_ vcpu: Int) {
        let c = context(vcpu)
        ca_store32(&c.pointee.mode, VCPUContext.outsideGuest)
        c.pointee.tlb.update(repeating: 0, count: VCPUContext.tlbEntries)
        ca_store64(&c.pointee.ackedFlush, ca_load64(&vm.pointee.flushGeneration))
        if c.pointee.trackedGFN != 0 {
            lockMMUExclusive()
            ca_store64(&c.pointee.trackedGFN, 0)
            ca_store64(&c.pointee.believedProtectedGFN, 0)
            unlockMMUExclusive()
        }
    }

    /// VM entry (vcpu_enter_guest()): vcpu->mode = IN_GUEST_MODE, stored
    /// before the pending requests are read, so that a flush either sees
    /// the vCPU in guest mode and sends it an IPI, or is seen here and
    /// served (the TLB emptied) before the guest runs; then the entry's
    /// half of the world switch.
    @inline(__always)
    public func vcpuEnterGuest(_ vcpu: Int) {
        let c = context(vcpu)
        ca_store_seq32(&c.pointee.mode, VCPUContext.inGuest)
        serveFlushRequest(c)
        chargeEntry()
    }

    /// A VM exit: the exit's half of the world switch, then vcpu->mode =
    /// OUTSIDE_GUEST_MODE; flushes stop waiting for this vCPU.
    @inline(__always)
    func vcpuExitGuest(_ c: UnsafeMutablePointer<VCPUContext>) {
        chargeExit()
        ca_store32(&c.pointee.mode, VCPUContext.outsideGuest)
    }

    /// The vCPU thread stops running the guest (a KVM_RUN returning to user
    /// space): it leaves guest mode.
    @inline(__always)
    public func vcpuLeaveGuest(_ vcpu: Int) { vcpuExitGuest(context(vcpu)) }

    /// A flush requested since the TLB last caught up: drop every entry
    /// (kvm_vcpu_flush_tlb_all()).
    @inline(__always)
    func serveFlushRequest(_ c: UnsafeMutablePointer<VCPUContext>) {
        let generation = ca_load64(&vm.pointee.flushGeneration)
        if generation != c.pointee.ackedFlush {
            c.pointee.tlb.update(repeating: 0, count: VCPUContext.tlbEntries)
            ca_store64(&c.pointee.ackedFlush, generation)
        }
    }

    /// A vCPU in guest mode takes the IPI of a flush once it has arrived:
    /// the IPIs go out one after another, vCPU `i`'s reaching it
    /// (i + 1) · `ChargedCosts.ipiTicks` after the flush began. It exits (the
    /// sender, waiting in kvm_flush_remote_tlbs(), sees it leave guest mode),
    /// and serves the flush request as it enters again. Returns whether it
    /// took one: an exit it paid for.
    @inline(__always)
    public func vcpuTakeInterrupts(_ vcpu: Int) -> Bool {
        let c = context(vcpu)
        let generation = ca_load64(&vm.pointee.flushGeneration)
        guard generation != c.pointee.ackedFlush,
              flushIPIHasArrived(position: vcpu) else { return false }
        vcpuExitGuest(c)
        vcpuEnterGuest(vcpu)
        return true
    }

    /// The vCPU writes `gfn` through `sptep`, the spte its translation
    /// reaches: through a cached writable translation if its TLB has one,
    /// else by a page walk that caches the translation of a writable spte.
    /// A write-protected spte means a fault (`mustFault`).
    @inline(__always)
    public func vcpuWrite(_ vcpu: Int, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>) -> VCPUWrite {
        let c = context(vcpu)
        let tlb = c.pointee.tlb + VCPUContext.tlbIndex(gfn)
        let tag = gfn.rawValue &+ 1
        if tlb.pointee == tag {
            if ca_load64(&c.pointee.believedProtectedGFN) == tag { return .cachedRace }
            return isWritableSPTE(ca_read_once64(sptep)) ? .cached : .cachedStale
        }
        guard isWritableSPTE(ca_read_once64(sptep)) else { return .mustFault }
        tlb.pointee = tag
        return .walked
    }

    /// A write fault on a write-protected spte of a logging slot, from the
    /// VM exit to the re-entry.
    ///
    /// With `fastPath`, where the era had it (3.6 on) and the spte is direct
    /// (a two-dimensional-paging VM: fast_pf_fix_direct_spte() warns on an
    /// indirect one), c7ba5b48's fast_page_fault(): an spte write-protected
    /// for dirty logging only (MMU-writable and host-writable) is made
    /// writable by cmpxchg without mmu_lock, retried up to four times when
    /// the spte changed under it, then the page marked dirty. Otherwise the
    /// locked path: under mmu_lock's shared side (the TDP MMU's read side,
    /// where the spte is set by cmpxchg since other faults and the TDP
    /// walk hold it too; the whole lock in the eras before it), a tracked
    /// guest page table's write is emulated and logged; anything else is
    /// made writable and logged.
    ///
    /// The handler is an SRCU read section (`VCPUContext.inSRCU`): the
    /// bitmap it marks was read inside it.
    @inline(never)
    public func vcpuWriteFault(_ vcpu: Int, slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, fastPath: Bool) -> VCPUFault {
        let c = context(vcpu)
        vcpuExitGuest(c)
        let fault = handleWriteFault(c, vcpu: vcpu, slot: s, gfn: gfn, sptep: sptep, fastPath: fastPath)
        vcpuEnterGuest(vcpu)
        return fault
    }

    @inline(__always)
    func handleWriteFault(_ c: UnsafeMutablePointer<VCPUContext>, vcpu: Int, slot s: SlotView, gfn: GFN,
                          sptep: UnsafeMutablePointer<UInt64>, fastPath: Bool) -> VCPUFault {
        ca_store_seq32(&c.pointee.inSRCU, 1)
        defer { ca_store32(&c.pointee.inSRCU, 0) }
        let era = vm.pointee.era
        if fastPath && era.hasFastPageFault && vm.pointee.tdpRoot >= 0 {
            var retries = 0
            var spte = ca_read_once64(sptep)
            while isLocklesslyWritableSPTE(spte) && retries <= 4 {
                if let mark = fastPFFixDirectSPTE(slot: s, gfn: gfn, sptep: sptep, observed: spte, vcpu: vcpu) {
                    return VCPUFault(.fastPath, newlyLogged: mark.newlyLogged)
                }
                spte = ca_read_once64(sptep)
                retries &+= 1
            }
        }
        let shared = era == .linux5_14
        lockMMUShared()
        defer { unlockMMUShared() }
        while true {
            let spte = ca_read_once64(sptep)
            if isWritableSPTE(spte) { return VCPUFault(.alreadyWritable) }
            if isTrackedGuestTable(gfn) {
                return VCPUFault(.emulated, newlyLogged: markIfLogging(slot: s, gfn: gfn, vcpu: vcpu))
            }
            let made = spte | SPTE.writable | SPTE.dirty | (era.hasMMUWritable ? SPTE.mmuWritable : 0)
            if shared {
                guard ca_cmpxchg64(sptep, spte, made) != 0 else { continue }
            } else {
                ca_write_once64(sptep, made)
            }
            return VCPUFault(.madeWritable, newlyLogged: markIfLogging(slot: s, gfn: gfn, vcpu: vcpu))
        }
    }

    /// fast_pf_fix_direct_spte(): make the spte writable if it still holds
    /// `observed`, the value the fast path read and judged locklessly
    /// writable, by cmpxchg (a thread that write-protected it meanwhile,
    /// MMU-writable bit and all, makes it fail), and mark the page dirty.
    /// Nil when the spte had changed.
    @inline(__always)
    func fastPFFixDirectSPTE(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, observed: UInt64, vcpu: Int) -> DirtyMark? {
        guard ca_cmpxchg64(sptep, observed, observed | SPTE.writable | SPTE.dirty) != 0 else { return nil }
        return DirtyMark(newlyLogged: markIfLogging(slot: s, gfn: gfn, vcpu: vcpu), ringFull: false)
    }

    /// mark_page_dirty_in_slot(), which logs only while the slot logs
    /// (memslot->dirty_bitmap is set): whether the page was logged anew.
    @inline(__always)
    func markIfLogging(slot s: SlotView, gfn: GFN, vcpu: Int) -> Bool {
        s.state.pointee.dirtyLogging && markPageDirty(slot: s, gfn: gfn, vcpu: vcpu).newlyLogged
    }

    /// A fault that shadows a guest page table, from the VM exit to the
    /// re-entry: under mmu_lock, the vCPU's previous guest page table loses
    /// its shadow page (kvm_mmu_zap_page() → unaccount_shadowed(): its
    /// writes fault into the slow path again, which makes it writable), and
    /// `gfn` gets one (kvm_mmu_get_page() → account_shadowed() →
    /// rmap_write_protect()): tracked, every spte of it write-protected,
    /// MMU-writable bit included, and the TLBs flushed if the era's rule
    /// says one may still hold a writable translation: at 3.3 only if this
    /// call cleared a writable bit itself; since 198c74f4 also if an spte
    /// was still MMU-writable, which a harvest flushing after unlocking
    /// leaves. When the fault returns, the vCPU believes `gfn` protected.
    @inline(never)
    public func vcpuShadowingFault(_ vcpu: Int, slot s: SlotView, gfn: GFN) -> VCPUFault {
        let c = context(vcpu)
        vcpuExitGuest(c)
        ca_store_seq32(&c.pointee.inSRCU, 1)
        let seedRule = vm.pointee.era == .linux3_3
        lockMMUExclusive()
        ca_store64(&c.pointee.believedProtectedGFN, 0)
        ca_store64(&c.pointee.trackedGFN, gfn.rawValue &+ 1)
        var flush = false
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        while let sptep = it.next() {
            let old = spteWriteProtect(sptep, ca_read_once64(sptep), ptProtect: true)
            if seedRule ? isWritableSPTE(old) : old != 0 { flush = true }
        }
        if flush { flushRemoteTLBs(widen: false) }
        unlockMMUExclusive()
        ca_store32(&c.pointee.inSRCU, 0)
        ca_store64(&c.pointee.believedProtectedGFN, gfn.rawValue &+ 1)
        vcpuEnterGuest(vcpu)
        return VCPUFault(.shadowed(flushed: flush))
    }
}
