import Foundation

/// Human-readable sizes.
public enum Bytes {
    /// "1GiB", "512MiB", "16KiB" for a page count (4 KiB pages), exact when it can be.
    public static func pages(_ n: Int) -> String { format(n * 4096) }

    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var u = 0
        while u < units.count - 1, bytes >= 1 << (10 * (u + 1)) { u += 1 }
        let scale = 1 << (10 * u)
        if bytes % scale == 0 { return "\(bytes / scale)\(units[u])" }
        return String(format: "%.1f", Double(bytes) / Double(scale)) + units[u]
    }
}
