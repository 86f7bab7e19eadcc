import CAtomics
import DirtyLogCore
import Foundation

/// The time-stamp counter (`ca_ticks`, rdtsc), which the lock statistics
/// and the vCPUs' fault latencies are read with: cheaper than the clock
/// inside per-fault and per-hold measurements. Constant-rate here
/// (constant_tsc, nonstop_tsc).
enum TickClock {
    /// Nanoseconds per tick, measured once against the monotonic clock
    /// over 20 ms.
    static let nsPerTick: Double = {
        let c0 = MonotonicClock.now(), t0 = ca_ticks()
        while MonotonicClock.now() &- c0 < 20_000_000 { ca_cpu_relax() }
        let c1 = MonotonicClock.now(), t1 = ca_ticks()
        return Double(c1 &- c0) / Double(max(1, t1 &- t0))
    }()

    static func ns(_ ticks: UInt64) -> Double { Double(ticks) * nsPerTick }

    /// The ticks `ns` nanoseconds take.
    static func ticks(_ ns: Double) -> UInt64 { UInt64(max(0, ns / nsPerTick).rounded()) }
}
