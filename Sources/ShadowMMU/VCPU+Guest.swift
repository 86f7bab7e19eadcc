import CAtomics
import DirtyLogCore

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
    /// the IPIs go out one after another to the vCPUs in guest mode, the
    /// k-th of them (`VCPUContext.ipiPosition`, from 0) reached
    /// (k + 1) · `ChargedCosts.ipiTicks` after the flush began. It exits (the
    /// sender, waiting in kvm_flush_remote_tlbs(), sees it leave guest mode),
    /// and serves the flush request as it enters again. Returns whether it
    /// took one: an exit it paid for.
    @inline(__always)
    public func vcpuTakeInterrupts(_ vcpu: Int) -> Bool {
        let c = context(vcpu)
        let generation = ca_load64(&vm.pointee.flushGeneration)
        guard generation != c.pointee.ackedFlush,
              flushIPIHasArrived(position: Int(ca_load64(&c.pointee.ipiPosition))) else { return false }
        vcpuExitGuest(c)
        vcpuEnterGuest(vcpu)
        return true
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
        let era = vm.pointee.era
        lockMMUExclusive()
        ca_store64(&c.pointee.believedProtectedGFN, 0)
        ca_store64(&c.pointee.trackedGFN, gfn.rawValue &+ 1)
        var flush = false
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        while let sptep = it.next() {
            let old = spteWriteProtect(sptep, ca_read_once64(sptep), ptProtect: true)
            if era.shadowerMustFlush(found: old) { flush = true }
        }
        if flush { flushRemoteTLBs(widen: false) }
        unlockMMUExclusive()
        ca_store32(&c.pointee.inSRCU, 0)
        ca_store64(&c.pointee.believedProtectedGFN, gfn.rawValue &+ 1)
        vcpuEnterGuest(vcpu)
        return VCPUFault(.shadowed(flushed: flush))
    }
}
