import Foundation
import ShadowMMU

/// Progress on stderr. On a terminal, one line rewritten in place: series,
/// point, elapsed time and an estimate of the time left (from the work done
/// so far, in rough units of measurement cost). Elsewhere, and on a terminal
/// too, one line per finished series. `quiet` silences all of it.
public final class Progress {
    private let live: Bool
    private let quiet: Bool
    private let start = MonotonicClock.now()
    private var totalUnits: Double = 0
    private var doneUnits: Double = 0
    private var lastDraw: UInt64 = 0

    public init(quiet: Bool) {
        self.quiet = quiet
        live = !quiet && isatty(STDERR_FILENO) != 0
    }

    /// Work of one measurement at `dirtyPages` in a VM of `nUsed` shadow
    /// pages: the cache flush, plus terms for work that grows with the
    /// dirty pages and with the shadow pages.
    public static func units(dirtyPages: Int, nUsedMMUPages: Int) -> Double {
        1 + Double(dirtyPages) / 16384 + Double(nUsedMMUPages) / 4096
    }

    public func addPlannedWork(_ units: Double) { totalUnits += units }

    public var elapsedSeconds: Double { Double(MonotonicClock.now() - start) / 1e9 }

    /// Work done; redraws the live line at most ten times a second.
    public func advance(_ units: Double, status: @autoclosure () -> String) {
        doneUnits += units
        guard live else { return }
        let now = MonotonicClock.now()
        if now - lastDraw < 100_000_000 { return }
        lastDraw = now
        var line = "\(status()) · \(Self.seconds(elapsedSeconds))"
        if doneUnits > 0, totalUnits > doneUnits {
            line += " · ~\(Self.seconds(elapsedSeconds / doneUnits * (totalUnits - doneUnits))) left"
        }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
    }

    /// A line that stays (a finished series, a skipped backend).
    public func note(_ message: String) {
        guard !quiet else { return }
        let prefix = live ? "\r\u{1B}[K" : ""
        FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
    }

    /// Clears the live line.
    public func finish() {
        if live { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    static func seconds(_ s: Double) -> String {
        s < 60 ? String(format: "%.1f s", s) : String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60)
    }
}
