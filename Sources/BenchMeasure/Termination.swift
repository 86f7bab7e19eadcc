import CTermination
import Glibc

/// SIGINT (Ctrl-C) and SIGTERM during a run: the first is recorded and the
/// run stops at the next measurement, abandoning its point, writing every
/// file whole with the points finished; a second exits at once.
public enum Termination {
    /// Installs the handlers (sigaction).
    public static func watch() {
        _ = ct_watch()
    }

    /// The first signal received, or nil.
    @inline(__always)
    public static var requested: Int32? {
        let s = ct_received()
        return s == 0 ? nil : s
    }

    /// "SIGINT", "SIGTERM".
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        default: "signal \(signal)"
        }
    }

    /// Forgets a received signal.
    public static func forget() { ct_forget() }

    /// Thrown out of a long step (calibration) that a signal stopped.
    struct Stopped: Error {}
}
