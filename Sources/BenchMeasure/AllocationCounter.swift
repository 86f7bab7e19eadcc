import CJemalloc

/// This thread's running total of bytes allocated through any malloc in
/// the process (jemalloc is the process's malloc once linked), read from
/// `thread.allocatedp` with a plain load. Reading it around a timed region
/// proves the region allocated nothing.
struct ThreadAllocationCounter {
    private let allocated: UnsafeMutablePointer<UInt64>

    /// mallctl("thread.allocatedp"): the calling thread's counter.
    init() {
        guard let a = cj_thread_counter("thread.allocatedp") else {
            fatalError("mallctl(\"thread.allocatedp\") failed: jemalloc built without stats?")
        }
        allocated = a
    }

    /// Bytes this thread has allocated so far.
    @inline(__always) var allocatedBytes: UInt64 { allocated.pointee }
}
