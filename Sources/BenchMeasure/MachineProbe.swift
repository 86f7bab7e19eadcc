import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

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

        // Pointer chase: one 8-byte pointer per 64-byte line, lines linked in
        // a random cyclic order (Sattolo's shuffle gives a single cycle).
        let lines = bufferBytes / 64
        var order = Array(0..<lines)
        var rng = SeededGenerator(seed: 0xCA1B)
        var i = lines - 1
        while i > 0 {
            let j = rng.below(i)
            order.swapAt(i, j)
            i -= 1
        }
        for k in 0..<lines { buffer[order[k] * 8] = UInt64(order[(k + 1) % lines] * 8) }
        let loads = min(lines, 400_000)
        var latency: [Double] = []
        var at = 0
        for _ in 0..<trials {
            let t0 = MonotonicClock.now()
            at = chase(buffer, from: at, loads: loads)
            latency.append(Double(MonotonicClock.now() - t0) / Double(loads))
        }
        sink &+= UInt64(at)
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

    @inline(never)
    static func chase(_ p: UnsafeMutablePointer<UInt64>, from start: Int, loads: Int) -> Int {
        var at = start
        for _ in 0..<loads { at = Int(p[at]) }
        return at
    }
}
