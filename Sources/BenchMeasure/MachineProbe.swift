import BenchAnalysis
import DirtyLogCore
import Foundation

/// Measures the machine's limits the way the strategies use memory, at
/// the start of every run: how fast a long sequential read streams (the
/// slot walk's pattern) and how long a load that misses every cache takes
/// when the next address depends on it (the rmap walk's pattern).
public enum MachineProbe {
    /// Median of `trials` measurements of each figure.
    public static func measure(bufferBytes: Int = max(128 << 20, 4 * CacheGeometry.lastLevelCacheBytes), trials: Int = 5) -> MachineCalibration {
        let words = bufferBytes / 8
        let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
        defer { buffer.deallocate() }

        // Sequential read: sum every word, four accumulators.
        for i in 0..<words { buffer[i] = UInt64(truncatingIfNeeded: i) }
        var sink: UInt64 = 0
        var bandwidth: [Double] = []
        for _ in 0..<trials {
            let t0 = MonotonicClock.now()
            sink &+= sequentialSum(buffer, words: words)
            bandwidth.append(Double(bufferBytes) / Double(MonotonicClock.now() - t0))
        }

        // Pointer chase: lines linked in one random cycle (`WorkingSet`).
        let set = WorkingSet(bytes: bufferBytes, seed: 0xCA1B)
        let loads = min(set.lines, 400_000)
        var latency: [Double] = []
        for _ in 0..<trials {
            let t0 = MonotonicClock.now()
            sink &+= WorkingSet.chase(set.base, lines: loads)
            latency.append(Double(MonotonicClock.now() - t0) / Double(loads))
        }
        withExtendedLifetime(sink) {}
        return MachineCalibration(readBandwidthGBps: Statistics.median(bandwidth), missLatencyNs: Statistics.median(latency),
                           timerOverheadNs: MonotonicClock.overheadNanoseconds(), bufferBytes: bufferBytes)
    }

    @inline(never)
    static func sequentialSum(_ p: UnsafeMutablePointer<UInt64>, words n: Int) -> UInt64 {
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        var i = 0
        while i + 3 < n {
            a &+= p[i]; b &+= p[i + 1]; c &+= p[i + 2]; d &+= p[i + 3]
            i &+= 4
        }
        return a ^ b ^ c ^ d
    }

    /// The last-level cache this machine actually keeps for the process
    /// (a virtual machine's share of a cache shared with other tenants can
    /// be far less than sysfs says): the largest working set, in steps of
    /// half an octave from 1 MiB up to the cache sysfs reports, whose
    /// dependent chase (`WorkingSet`) still runs under half the latency of
    /// a load that misses every cache (`missLatencyNs`), a line's cost in a
    /// chase (`WorkingSet.chaseCostPerLine`); the series stops at the first
    /// size past it.
    public static func effectiveLastLevelCacheBytes(missLatencyNs: Double) -> Int {
        var kept = 1 << 20
        var size = 1 << 20
        var step = 0
        while size <= CacheGeometry.lastLevelCacheBytes {
            guard WorkingSet(bytes: size).chaseCostPerLine() < missLatencyNs / 2 else { break }
            kept = size
            size = step % 2 == 0 ? size / 2 * 3 : size / 3 * 4
            step += 1
        }
        return kept
    }
}
