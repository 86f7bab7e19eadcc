import CAtomics
import Dispatch
import Foundation

// What the concurrency tests share: a watchdog for code no test time limit
// can stop, threads started together with a deadline, values handed to them.

/// Runs `body` with a watchdog armed: if it has not returned within
/// `seconds`, the test process writes which test hung to stderr and exits
/// with status 1. A broken lock, or a flush no vCPU acknowledges, spins
/// forever in C code that no test time limit can cancel; this makes such
/// a bug fail the run instead of hanging it.
public func watchdog<T>(_ seconds: Double = 60, _ name: String = #function, _ body: () throws -> T) rethrows -> T {
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

/// Runs `body(i)` on `count` threads at once (each waits at a barrier
/// until all have started, so that they overlap) and waits for them, at
/// most `seconds`: false when one has not finished by then. A lock that
/// never lets go fails the test instead of hanging the suite (its threads
/// are left spinning until the process ends).
public func onThreads(_ count: Int, within seconds: Double = 20, _ body: @escaping @Sendable (Int) -> Void) -> Bool {
    let group = DispatchGroup()
    let arrived = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    arrived.initialize(to: 0)
    let barrier = Shared(arrived)
    for i in 0..<count {
        group.enter()
        Thread {
            _ = ca_fetch_add64(barrier.value, 1)
            while ca_load64(barrier.value) < UInt64(count) { ca_cpu_relax() }
            body(i)
            group.leave()
        }.start()
    }
    let done = group.wait(timeout: .now() + seconds) == .success
    if done { arrived.deallocate() }
    return done
}

/// A value a test hands its threads, which only use it while the test waits.
public struct Shared<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
