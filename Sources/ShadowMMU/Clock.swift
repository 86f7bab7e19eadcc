import Glibc

/// The clock every timed region reads: CLOCK_MONOTONIC through the vDSO,
/// nanoseconds, no system call, no allocation.
public enum MonotonicClock {
    @inline(__always)
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
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
