import Dispatch
import Foundation

/// Runs `body` with a watchdog armed: if it has not returned within
/// `seconds`, the test process writes which test hung to stderr and exits
/// with status 1. A broken lock, or a flush no vCPU acknowledges, spins
/// forever in C code that no test time limit can cancel; this makes such
/// a bug fail the run instead of hanging it.
func watchdog<T>(_ seconds: Double = 60, _ name: String = #function, _ body: () throws -> T) rethrows -> T {
    let done = DispatchSemaphore(value: 0)
    Thread {
        if done.wait(timeout: .now() + seconds) == .timedOut {
            FileHandle.standardError.write(Data("watchdog: \(name) did not finish within \(Int(seconds)) s: a lock or a flush that never lets go\n".utf8))
            exit(1)
        }
    }.start()
    defer { done.signal() }
    return try body()
}
