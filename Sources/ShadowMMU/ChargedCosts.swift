import CAtomics

/// What the model charges in time for work it does not do: a VM exit and
/// the entry after it (the world switch around a fault or an IPI's
/// handler), and an IPI's delivery from its sender to the target's exit.
///
/// The one seam between the model and the clock. The measuring side sets
/// the costs (`VirtualMachine.setExitCosts`, from the machine's own
/// figures or the command line); the model calls the functions below at
/// the points where the kernel pays them. Nothing else in ShadowMMU reads
/// the time-stamp counter or spins to pass time: the model's other loops
/// are the kernel's own waits (cpu_relax() while a lock, a flush or an
/// SRCU section is held by another thread).
public struct ChargedCosts {
    /// A VM exit and the entry after it, together, in time-stamp ticks:
    /// paid half on each side of the handler (0: free).
    public var exitTicks: UInt64 = 0
    /// An IPI from its sending to the target's exit, in ticks.
    public var ipiTicks: UInt64 = 0
    /// When the last flush's IPIs were sent (`ca_ticks`).
    var flushPostedAt: UInt64 = 0
}

extension MMU {
    /// The entry's half of the world switch (vcpu_enter_guest()).
    @inline(__always) func chargeEntry() { ca_spin_ticks(vm.pointee.charged.exitTicks >> 1) }

    /// The exit's half.
    @inline(__always) func chargeExit() {
        let t = vm.pointee.charged.exitTicks
        ca_spin_ticks(t &- t >> 1)
    }

    /// `n` PAUSE instructions: a delay a planted fault asks for
    /// (`FaultInjection.flushWindowSpins`), the only other time the model
    /// passes doing nothing.
    @inline(__always) func chargePauses(_ n: Int) {
        if n > 0 { for _ in 0..<n { ca_cpu_relax() } }
    }

    /// kvm_flush_remote_tlbs() sends its IPIs now.
    @inline(__always) func stampFlushPosted() {
        withUnsafeMutablePointer(to: &vm.pointee.charged.flushPostedAt) { ca_store64($0, ca_ticks()) }
    }

    /// Whether the last flush's IPI has reached the vCPU that is
    /// `position`-th (from 0) in the order the IPIs went out: they are sent
    /// one after another, each taking `ipiTicks`.
    @inline(__always) func flushIPIHasArrived(position: Int) -> Bool {
        let posted = withUnsafeMutablePointer(to: &vm.pointee.charged.flushPostedAt) { ca_load64($0) }
        return ca_ticks() &- posted >= vm.pointee.charged.ipiTicks &* UInt64(position &+ 1)
    }
}
