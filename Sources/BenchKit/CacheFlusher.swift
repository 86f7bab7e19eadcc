import Foundation
import ShadowMMU

/// Evicts the model's data from every cache level before a timed protection,
/// by reading one word per line of a buffer twice the size of the last-level
/// cache. Reads, not writes, so no dirty lines are left to be written back
/// during the measurement that follows.
public final class CacheFlusher {
    /// Size of the last-level cache, from sysfs (the highest cache index of
    /// cpu0), falling back to sysconf and then 32 MiB.
    public static let lastLevelCacheBytes: Int = detectLastLevelCache()

    public let bytes: Int
    private let buffer: UnsafeMutablePointer<UInt64>
    private var sink: UInt64 = 0

    public init(bytes: Int = max(64 << 20, 2 * CacheFlusher.lastLevelCacheBytes)) {
        self.bytes = bytes
        buffer = .allocate(capacity: bytes / 8)
        // Touch every page now so the first flush does not take page faults.
        for i in stride(from: 0, to: bytes / 8, by: 8) { buffer[i] = UInt64(i) }
    }

    deinit { buffer.deallocate() }

    /// Read one word per 64-byte line over the whole buffer.
    @inline(never)
    public func flush() {
        let p = buffer
        let n = bytes / 8
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        var i = 0
        while i < n {
            a &+= p[i]; b &+= p[i + 8]; c &+= p[i + 16]; d &+= p[i + 24]
            i &+= 32
        }
        sink &+= a ^ b ^ c ^ d
    }

    private static func detectLastLevelCache() -> Int {
        var best = 0
        for index in 0..<8 {
            let path = "/sys/devices/system/cpu/cpu0/cache/index\(index)/size"
            guard let text = readSmallFile(path)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else { continue }
            var digits = text
            var scale = 1
            if let last = text.last, !last.isNumber {
                digits = String(text.dropLast())
                scale = last == "K" ? 1 << 10 : last == "M" ? 1 << 20 : last == "G" ? 1 << 30 : 1
            }
            if let v = Int(digits) { best = max(best, v * scale) }
        }
        if best > 0 { return best }
        let l3 = sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))
        return l3 > 0 ? l3 : 32 << 20
    }
}

/// The whole of a small text file (sysfs, procfs), or nil.
func readSmallFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}
