import BenchAnalysis
import CAtomics
import DirtyLogCore
import Foundation
import ShadowMMU

/// The pollution probe's reads of a working set, on vCPU 0's CPU.
extension GuestThreads {
    /// Reads the working set at `buffer` on vCPU 0's CPU, every line once
    /// (`WorkingSet.chase`); returns the read's time.
    func read(_ buffer: UnsafePointer<UInt64>, words: Int) throws -> Double {
        boxes[0].pointee.readBuffer = buffer
        boxes[0].pointee.readWords = words
        try command(.read, first: true)
        return Double(boxes[0].pointee.readNs)
    }

    /// On vCPU 0's CPU: a read of the buffer from memory (after flushing
    /// it) and one from cache right after.
    func calibrateRead(_ buffer: UnsafePointer<UInt64>, words: Int) throws -> (coldNs: Double, warmNs: Double) {
        boxes[0].pointee.readBuffer = buffer
        boxes[0].pointee.readWords = words
        try command(.calibrate, first: true)
        return (Double(boxes[0].pointee.coldReadNs), Double(boxes[0].pointee.readNs))
    }
}

/// What reading a working set costs from memory and from cache, every
/// line once (`WorkingSet.chase`).
enum ReadCost {
    /// A read after flushing the buffer from every cache, and one right
    /// after it, ns.
    static func measure(_ buffer: UnsafePointer<UInt64>, words: Int, sink: inout UInt64) -> (cold: UInt64, warm: UInt64) {
        CacheEviction.flushLines(buffer, words * 8)
        ca_flush_fence()
        let t0 = MonotonicClock.now()
        sink &+= WorkingSet.chase(buffer, lines: words / 8)
        let t1 = MonotonicClock.now()
        sink &+= WorkingSet.chase(buffer, lines: words / 8)
        let t2 = MonotonicClock.now()
        return (t1 &- t0, t2 &- t1)
    }
}
