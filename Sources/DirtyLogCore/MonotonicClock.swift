import Glibc

/// The clock every measurement reads: CLOCK_MONOTONIC through the vDSO,
/// nanoseconds, no system call, no allocation. The one clock of the
/// harness: the timed region, the kernel backend's deadlines and the run's
/// phase accounting all read it.
public enum MonotonicClock {
    /// clock_gettime(CLOCK_MONOTONIC)
    @inline(__always)
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Seconds since `start`, a reading of `now()`.
    @inline(__always)
    public static func seconds(since start: UInt64) -> Double {
        Double(now() &- start) / 1e9
    }

    /// The median cost of two back-to-back reads, which every timed region
    /// includes once: the floor under the smallest measurement.
    public static func overheadNanoseconds(samples: Int = 2001) -> Double {
        var deltas = [UInt64](repeating: 0, count: samples)
        for i in 0..<samples {
            let a = now()
            let b = now()
            deltas[i] = b &- a
        }
        deltas.sort()
        return Double(deltas[samples / 2])
    }
}

/// Where the first phase of a two-phase harvest (clear-chunked's and the
/// kernel's manual protect: KVM_GET_DIRTY_LOG, then KVM_CLEAR_DIRTY_LOG)
/// ended. The harvest stamps it; whoever times the harvest splits its time
/// there.
public struct HarvestPhaseMarks: Sendable {
    /// A `MonotonicClock` reading, 0 until the first phase ends.
    public var firstPhaseEnd: UInt64 = 0

    public init() {}

    @inline(__always) public mutating func firstPhaseEnded() { firstPhaseEnd = MonotonicClock.now() }
}
