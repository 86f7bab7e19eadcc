import Foundation

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

/// The machine's memory, from /proc/meminfo.
public enum SystemMemory {
    /// MemAvailable in bytes (MemFree when the kernel does not report it).
    public static var availableBytes: Int {
        guard let text = readSmallFile("/proc/meminfo") else { return 0 }
        var free = 0
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let kb = Int(f[1]) else { continue }
            if f[0] == "MemAvailable:" { return kb * 1024 }
            if f[0] == "MemFree:" { free = kb * 1024 }
        }
        return free
    }

    public static var totalBytes: Int {
        guard let text = readSmallFile("/proc/meminfo") else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count >= 2, let kb = Int(f[1]) { return kb * 1024 }
        }
        return 0
    }
}
