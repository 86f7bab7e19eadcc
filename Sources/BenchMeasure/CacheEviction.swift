import BenchAnalysis
import CAtomics
import DirtyLogCore
import Foundation
import ShadowMMU

/// Evicts the model's data from every cache level before a timed protection,
/// by reading one word per line of a buffer twice the size of the last-level
/// cache. Reads, not writes, so no dirty lines are left to be written back
/// during the measurement that follows.
///
/// When the last-level cache is shared with another CPU, a helper thread on
/// it reads half the buffer while the measuring thread reads the other
/// half: the shared cache still sees the whole buffer go through it and the
/// measuring CPU's private caches still see more than their size, in about
/// half the time. The helper sleeps on a semaphore outside flushes, so it is
/// idle during timed regions.
final class FullCacheRead {
    public let bytes: Int
    private let buffer: UnsafeMutablePointer<UInt64>
    private var sink: UInt64 = 0
    private let helper: Helper?

    /// The helper thread's side: it touches only this.
    private final class Helper: @unchecked Sendable {
        let start: UnsafePointer<UInt64>
        let words: Int
        let go = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        var stopping = false
        var sink: UInt64 = 0

        init(start: UnsafePointer<UInt64>, words: Int) {
            self.start = start
            self.words = words
        }

        func loop() {
            while true {
                go.wait()
                if stopping { return }
                sink &+= FullCacheRead.readLines(start, words: words)
                done.signal()
            }
        }
    }

    init(bytes: Int = CacheGeometry.fullEvictionBytes) {
        self.bytes = bytes
        buffer = .allocate(capacity: bytes / 8)
        // Touch every page now so the first flush does not take page faults.
        for i in stride(from: 0, to: bytes / 8, by: 8) { buffer[i] = UInt64(i) }
        if CacheGeometry.lastLevelCacheShared && ProcessInfo.processInfo.activeProcessorCount > 1 {
            let half = bytes / 16
            let h = Helper(start: UnsafePointer(buffer + half), words: bytes / 8 - half)
            let t = Thread { h.loop() }
            t.name = "cache-flusher"
            t.start()
            helper = h
        } else {
            helper = nil
        }
    }

    deinit {
        if let h = helper {
            h.stopping = true
            h.go.signal()
        }
        // The helper may still be reading the buffer's second half for the
        // last time only if a flush were in progress, and none is here.
        buffer.deallocate()
    }

    /// Whether a helper thread shares the work.
    var threads: Int { helper == nil ? 1 : 2 }

    /// Evict: read one word per 64-byte line of the whole buffer.
    @inline(never)
    func flush() {
        if let h = helper {
            h.go.signal()
            sink &+= Self.readLines(UnsafePointer(buffer), words: bytes / 16)
            h.done.wait()
        } else {
            sink &+= Self.readLines(UnsafePointer(buffer), words: bytes / 8)
        }
    }

    @inline(never)
    static func readLines(_ p: UnsafePointer<UInt64>, words n: Int) -> UInt64 {
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        var i = 0
        while i + 24 < n {
            a &+= p[i]; b &+= p[i + 8]; c &+= p[i + 16]; d &+= p[i + 24]
            i &+= 32
        }
        while i < n { a &+= p[i]; i &+= 8 }
        return a ^ b ^ c ^ d
    }
}

/// The caches the eviction must empty.
public enum CacheGeometry {
    /// Size of the last-level cache as sysfs reports it (the highest cache
    /// index of cpu0), falling back to sysconf and then 32 MiB.
    public static let sysfsLastLevelCacheBytes: Int = detect().bytes
    /// The last-level cache the evictions are sized by: sysfs's, at most
    /// `evictionCapBytes`. A virtual machine's sysfs can report a host's
    /// whole L3: 300 MiB on the machine of 2026-12-07, where a dependent
    /// chase on 2 MiB pages cost 29-40 ns a line up to 32-64 MiB and 70-120
    /// ns from 128 MiB, the end moving between 64 and 256 MiB within the
    /// hour with the other tenants' traffic. An eviction sized by the 300 MiB
    /// read 14-24 ms before every harvest and took the default run to
    /// 135-150 s; one sized by that moving end made two runs of one commit
    /// evict differently (64 and 128 MiB: rmap-walk's shadow series 22-23%
    /// apart in `bench compare`; 256 MiB: 130 s). A fixed size evicts
    /// alike in every run; what it leaves warm against a larger read,
    /// `bench check-eviction --full-read` measures (README, "Cold caches").
    public static let lastLevelCacheBytes: Int = min(sysfsLastLevelCacheBytes, evictionCapBytes)
    public static let evictionCapBytes = 128 << 20
    /// Whether another CPU shares that cache.
    public static let lastLevelCacheShared: Bool = detect().shared
    /// What a full eviction reads: twice the last-level cache, at least 64 MiB.
    public static let fullEvictionBytes = max(64 << 20, 2 * lastLevelCacheBytes)
    /// Size of cpu0's level-2 cache (its own), from sysfs; 512 KiB when
    /// sysfs does not say.
    public static let levelTwoCacheBytes: Int = {
        for index in 0..<8 {
            guard readSmallFile("/sys/devices/system/cpu/cpu0/cache/index\(index)/level")?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "2", let size = cacheSize(index: index) else { continue }
            return size
        }
        return 512 << 10
    }()

    /// The size of cpu0's cache `index` in sysfs, bytes.
    static func cacheSize(index: Int) -> Int? {
        guard let text = readSmallFile("/sys/devices/system/cpu/cpu0/cache/index\(index)/size")?
            .trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { return nil }
        var digits = text
        var scale = 1
        if let last = text.last, !last.isNumber {
            digits = String(text.dropLast())
            scale = last == "K" ? 1 << 10 : last == "M" ? 1 << 20 : last == "G" ? 1 << 30 : 1
        }
        return Int(digits).map { $0 * scale }
    }

    /// The largest cache of cpu0 and whether other CPUs share it.
    private static func detect() -> (bytes: Int, shared: Bool) {
        var best = 0
        var shared = false
        for index in 0..<8 {
            guard let size = cacheSize(index: index), size > best else { continue }
            best = size
            let cpus = readSmallFile("/sys/devices/system/cpu/cpu0/cache/index\(index)/shared_cpu_list")?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "0"
            shared = cpus.contains(",") || cpus.contains("-")
        }
        if best > 0 { return (best, shared) }
        let l3 = sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))
        return (l3 > 0 ? l3 : 32 << 20, false)
    }
}

/// How a timed harvest starts with its data out of the caches, at the
/// least cost that achieves it.
///
/// - `full`: read a buffer twice the last-level cache (`FullCacheRead`):
///   everything goes, the harvest's data, its code, the page-table lines
///   its translations need, whatever else.
/// - `footprint`: `clflushopt` every line the harvest will touch
///   (`MMU.forEachHarvestRange`), then read a buffer the size of the
///   last-level cache. The flushes take the harvest's own data out of every
///   level; the read takes the rest (code, page-table lines, the harness's
///   data) out of the last level, which a buffer of its size now fills.
///   Neither half alone will do: `bench check-eviction` measured harvests
///   after the flushes alone (and an L2 sweep) at 0.5 to 0.8 of their time
///   after a full read, and after a read of one LLC alone at 0.6 to 0.9 on
///   shadow paging; after both, 0.95 to 1.0. It costs about three quarters
///   of a full read here, plus the flushes, so it is used while the
///   footprint is small enough for that to be less than a full read.
public final class CacheEviction {
    public enum Mode: String, Sendable, CaseIterable {
        case full, footprint
    }

    private let full: FullCacheRead
    private let lastLevel = FullCacheRead(bytes: CacheGeometry.lastLevelCacheBytes)
    /// What one line's flush, a last-level read and a full read cost here, measured at start.
    public let flushNsPerLine: Double
    public let lastLevelReadNs: Double
    public let fullReadNs: Double
    /// One mode forced (for the check and `--cache full`), else the cheaper.
    public let forced: Mode?
    /// Shadow pages holding leaves of the measured slot, per VM.
    private var slotTables: [ObjectIdentifier: Int] = [:]
    /// How many evictions of each mode.
    public private(set) var counts: [Mode: Int] = [:]

    /// `fullReadBytes`: what the full read reads (twice the last-level
    /// cache, at least 64 MiB, unless `bench check-eviction --full-read`
    /// asks for more).
    public init(forcing mode: Mode? = nil, fullReadBytes: Int = CacheGeometry.fullEvictionBytes) {
        forced = mode
        full = FullCacheRead(bytes: fullReadBytes)
        func median(_ reps: Int, _ body: () -> Void) -> Double {
            body()
            var t: [Double] = []
            for _ in 0..<reps {
                let t0 = MonotonicClock.now()
                body()
                t.append(Double(MonotonicClock.now() &- t0))
            }
            return Statistics.median(t)
        }
        let full = full, lastLevel = lastLevel
        fullReadNs = median(3) { full.flush() }
        // Timed alone, each after a full read has taken its buffer out of the
        // caches as a harvest's eviction finds it (a difference of two noisy
        // medians went negative here).
        var lastLevelReads: [Double] = []
        for _ in 0..<3 {
            full.flush()
            let t0 = MonotonicClock.now()
            lastLevel.flush()
            lastLevelReads.append(Double(MonotonicClock.now() &- t0))
        }
        lastLevelReadNs = Statistics.median(lastLevelReads)
        // Flushing lines a write left dirty and cached, as the guest's writes leave the harvest's.
        let lines = 1 << 14
        let probe = UnsafeMutablePointer<UInt64>.allocate(capacity: lines * 8)
        defer { probe.deallocate() }
        var flushes: [Double] = []
        for _ in 0..<3 {
            for i in 0..<lines { probe[i * 8] = UInt64(i) }
            let t0 = MonotonicClock.now()
            Self.flushLines(probe, lines * 64)
            ca_flush_fence()
            flushes.append(Double(MonotonicClock.now() &- t0) / Double(lines))
        }
        flushNsPerLine = Statistics.median(flushes)
    }

    /// The mode for a harvest that touches `lines` lines.
    func mode(lines: Int) -> Mode {
        forced ?? (Double(lines) * flushNsPerLine + lastLevelReadNs < fullReadNs ? .footprint : .full)
    }

    /// Before a harvest of `strategy` on the model after `round`'s writes.
    func evict(model vm: VirtualMachine, mmu: MMU, slot s: SlotView, strategy: Strategy, round: GuestRound) {
        let tables = slotTables[ObjectIdentifier(vm)] ?? {
            let n = mmu.slotTableCount(s)
            slotTables[ObjectIdentifier(vm)] = n
            return n
        }()
        let lines = mmu.harvestFootprintLines(strategy: strategy, slot: s, written: round.count, sptesPerGFN: round.sptesPerGFN, slotTables: tables)
        let mode = mode(lines: lines)
        counts[mode, default: 0] += 1
        switch mode {
        case .full:
            full.flush()
        case .footprint:
            // Every line first, then the flushes: a line flushed while the
            // walk still has words in it to read would cost a miss each.
            pending = 0
            round.expected.pages.withUnsafeBufferPointer { written in
                mmu.forEachHarvestRange(strategy: strategy, slot: s, written: written) { start, bytes in
                    collectLines(start, bytes)
                }
            }
            var i = 0
            while i < pending {
                ca_flush_line(UnsafeRawPointer(bitPattern: lineBuffer[i])!)
                i &+= 1
            }
            ca_flush_fence()
            lastLevel.flush()
        }
    }

    /// Before a look at a bitmap.
    func evict(bitmap: UnsafeRawBufferPointer) {
        guard mode(lines: bitmap.count / 64 + 1) == .footprint else { full.flush(); return }
        Self.flushLines(bitmap.baseAddress!, bitmap.count)
        ca_flush_fence()
        lastLevel.flush()
    }

    /// Before a harvest whose data the harness cannot see (the kernel's).
    func evictAll() {
        full.flush()
    }

    /// Line addresses gathered for the flushes, reused from one eviction to the next.
    private var lineBuffer = UnsafeMutablePointer<UInt>.allocate(capacity: 1 << 16)
    private var lineCapacity = 1 << 16
    private var pending = 0

    @inline(__always)
    private func collectLines(_ start: UnsafeRawPointer, _ bytes: Int) {
        var line = UInt(bitPattern: start) & ~63
        let end = UInt(bitPattern: start) + UInt(bytes)
        while line < end {
            if pending == 0 || lineBuffer[pending &- 1] != line {
                if pending == lineCapacity {
                    let bigger = UnsafeMutablePointer<UInt>.allocate(capacity: 2 * lineCapacity)
                    bigger.update(from: lineBuffer, count: pending)
                    lineBuffer.deallocate()
                    lineBuffer = bigger
                    lineCapacity *= 2
                }
                lineBuffer[pending] = line
                pending &+= 1
            }
            line &+= 64
        }
    }

    deinit { lineBuffer.deallocate() }

    /// `clflushopt` of every line of [start, start + bytes); the caller fences.
    @inline(__always)
    static func flushLines(_ start: UnsafeRawPointer, _ bytes: Int) {
        var line = UInt(bitPattern: start) & ~63
        let end = UInt(bitPattern: start) + UInt(bytes)
        while line < end {
            ca_flush_line(UnsafeRawPointer(bitPattern: line)!)
            line &+= 64
        }
    }
}
