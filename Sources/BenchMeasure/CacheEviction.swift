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
    /// Size of the last-level cache, from sysfs (the highest cache index of
    /// cpu0), falling back to sysconf and then 32 MiB.
    public static let lastLevelCacheBytes: Int = detect().bytes
    /// Whether another CPU shares that cache.
    public static let lastLevelCacheShared: Bool = detect().shared
    /// What a full eviction reads: twice the last-level cache, at least 64 MiB.
    public static let fullEvictionBytes = max(64 << 20, 2 * lastLevelCacheBytes)

    private static func detect() -> (bytes: Int, shared: Bool) {
        var best = 0
        var shared = false
        for index in 0..<8 {
            let dir = "/sys/devices/system/cpu/cpu0/cache/index\(index)"
            guard let text = readSmallFile(dir + "/size")?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { continue }
            var digits = text
            var scale = 1
            if let last = text.last, !last.isNumber {
                digits = String(text.dropLast())
                scale = last == "K" ? 1 << 10 : last == "M" ? 1 << 20 : last == "G" ? 1 << 30 : 1
            }
            if let v = Int(digits), v * scale > best {
                best = v * scale
                let cpus = readSmallFile(dir + "/shared_cpu_list")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0"
                shared = cpus.contains(",") || cpus.contains("-")
            }
        }
        if best > 0 { return (best, shared) }
        let l3 = sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))
        return (l3 > 0 ? l3 : 32 << 20, false)
    }
}

/// How a timed harvest starts with its data out of the caches.
public final class CacheEviction {
    private let full = FullCacheRead()

    public init() {}

    /// Before a harvest on the model.
    func evict(model vm: VirtualMachine, strategy: Strategy, round: GuestRound) {
        full.flush()
    }

    /// Before a look at a bitmap.
    func evict(bitmap: UnsafeRawBufferPointer) {
        full.flush()
    }

    /// Before a harvest whose data the harness cannot see (the kernel's).
    func evictAll() {
        full.flush()
    }
}
