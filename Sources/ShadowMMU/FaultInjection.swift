/// Bugs planted on purpose, so that a test (or `bench --plant`) can see
/// the harness catch them: the model's one seam for them, kept apart from
/// the kernel's state (`VMState`). All off in every run; the two that
/// change what the model does act in debug builds only.
public struct FaultInjection: Sendable {
    /// Pauses before each harvest's kvm_flush_remote_tlbs() while vCPU
    /// threads run: widens the window between a harvest's protection and
    /// its flush, for the tests of every strategy's flush placement.
    public var flushWindowSpins = 0
    /// Flushes counted but not sent (`PlantedBug.skipFlush`).
    public var skipFlushes = false
    /// The walks that enable logging pass large leaves by
    /// (`PlantedBug.largeLeafWritable`).
    public var leaveLargeLeavesWritable = false

    public init() {}
}

extension VirtualMachine {
    /// What is planted in this VM. Set between rounds.
    public var faultInjection: FaultInjection {
        get { injected.pointee }
        set { injected.pointee = newValue }
    }
}

extension MMU {
    /// `FaultInjection.flushWindowSpins` pauses.
    @inline(__always) func injectedFlushDelay() { chargePauses(injected.pointee.flushWindowSpins) }

    /// `FaultInjection.skipFlushes`; false in release builds.
    @inline(__always) var injectedSkipFlush: Bool {
        #if DEBUG
        injected.pointee.skipFlushes
        #else
        false
        #endif
    }

    /// `FaultInjection.leaveLargeLeavesWritable`; false in release builds.
    @inline(__always) var plantedLeaveLarge: Bool {
        #if DEBUG
        injected.pointee.leaveLargeLeavesWritable
        #else
        false
        #endif
    }
}
