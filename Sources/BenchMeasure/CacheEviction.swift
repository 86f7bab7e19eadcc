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
    /// The last-level cache the full reads are sized by: sysfs's, at most
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

/// How a timed harvest starts with its data out of the caches.
///
/// - `footprint` (`--cache cold`): `clflushopt` every line the harvest will
///   touch (`MMU.forEachHarvestRange`) and every line of the executable's
///   code (`ExecutableText`), which holds the model and its strategies:
///   the harvest's data and instructions leave every cache level, and are
///   fetched from memory as the harvest needs them.
/// - `full` (`--cache full`, and the kernel's harvests, whose lines the
///   harness cannot name): read a buffer twice the last-level cache
///   (`FullCacheRead`).
///
/// A model harvest is always evicted by its footprint, however large: the
/// flushes put its lines in memory whatever the other tenants of a shared
/// last-level cache do, where a read leaves them cached to a degree those
/// tenants decide (`bench check-eviction` on 2026-12-07: after the
/// flushes, harvests took 1.096 of their time after a read of twice the
/// last-level cache and 1.019-1.048 after a read of 600 MiB, medians of 240,
/// up to 1.6 at 65536 pages under shadow paging; what the flushes leave is
/// the page walks' page-table lines, `EvictionCheck`). Until that day
/// the cheaper of the flushes and the full read was chosen from their costs
/// measured at the start of a run; those costs move with the shared cache,
/// so one run evicted a point's harvests one way and the next the other (in
/// one run every harvest got the full read, its eviction phase 55 s against
/// 28), and `bench compare` of two runs of one commit found the walking
/// strategies 34-87% slower against the per-page ones in 14 series.
///
/// Until then the flushes were also followed by a read of a buffer the size
/// of the last-level cache (128 MiB here), for what the harvest touches
/// beyond its footprint: code, page-table lines, the harness's data. With
/// the model on 2 MiB pages (`malloc_conf`'s `thp:always`) that read made no
/// difference the check could see: with the code flushed instead, 240
/// samples at 0.991 of their time after flushes and the read (2 beyond 10%
/// with p < 0.01), with neither 0.991 (7), at 3.8 ms an eviction against
/// 5.9 ms. It was a third of a default run.
public final class CacheEviction {
    public enum Mode: String, Sendable, CaseIterable {
        case full, footprint
    }

    /// Allocated (and its pages touched) only when a full read is asked for.
    private lazy var full = FullCacheRead(bytes: fullReadBytes)
    private let fullReadBytes: Int
    /// How a model harvest is evicted.
    public let mode: Mode
    /// How many evictions of each mode.
    public private(set) var counts: [Mode: Int] = [:]

    /// `fullReadBytes`: what the full read reads (twice the last-level
    /// cache, at least 64 MiB, unless `bench check-eviction --full-read`
    /// asks for more).
    public init(mode: Mode = .footprint, fullReadBytes: Int = CacheGeometry.fullEvictionBytes) {
        self.mode = mode
        self.fullReadBytes = fullReadBytes
    }

    /// Before a harvest of `strategy` on the model after `round`'s writes.
    func evict(mmu: MMU, slot s: SlotView, strategy: Strategy, round: GuestRound) {
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
            ExecutableText.flush()
            ca_flush_fence()
        }
    }

    /// Before a look at a bitmap.
    func evict(bitmap: UnsafeRawBufferPointer) {
        counts[mode, default: 0] += 1
        guard mode == .footprint else { full.flush(); return }
        Self.flushLines(bitmap.baseAddress!, bitmap.count)
        ExecutableText.flush()
        ca_flush_fence()
    }

    /// Before a harvest whose data the harness cannot see (the kernel's).
    func evictAll() {
        counts[.full, default: 0] += 1
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

/// The executable's code: its `r-x` mapping in `/proc/self/maps`, the one
/// whose file is `/proc/self/exe`. The model, its strategies and the timed
/// path are compiled into it, so a harvest's instructions are among its
/// lines.
enum ExecutableText {
    /// Start and length of each executable mapping of the program's own file.
    static let ranges: [(start: UInt, bytes: Int)] = {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
              let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return [] }
        return maps.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, f[1].hasPrefix("r-x"), f[5...].joined(separator: " ") == exe else { return nil }
            let r = f[0].split(separator: "-")
            guard r.count == 2, let a = UInt(r[0], radix: 16), let b = UInt(r[1], radix: 16), b > a else { return nil }
            return (a, Int(b - a))
        }
    }()

    /// `clflushopt` of every line of that code; the caller fences.
    static func flush() {
        for r in ranges { CacheEviction.flushLines(UnsafeRawPointer(bitPattern: r.start)!, r.bytes) }
    }
}
