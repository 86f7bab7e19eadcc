import BenchAnalysis
import CAtomics
import DirtyLogCore
import Foundation
import ShadowMMU

/// A value handed to a thread that uses it while its owner keeps it alive.
struct UnsafeTransfer<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// What the harness asks a vCPU thread to do.
enum GuestCommand: UInt32 {
    case none = 0
    /// Write every page of its working set once (they fault: the round's writes).
    case dirty
    /// Pass over its pages again and again, shadowing a guest page table per
    /// pass under shadow paging, until the harvest being run through
    /// returns; then time one pass from its first page (the dirty memory time).
    case run
    /// Read its share of the guest's working set (warm it).
    case warm
    /// Read it again, timed.
    case reread
    /// Time a read of its share from memory (after flushing it) and from cache.
    case calibrate
    case exit
}

/// What the harness and one vCPU thread exchange, on lines of their own.
/// The harness writes the work and then `sequence`; the thread answers
/// with `acknowledged` = `sequence` when it is done.
struct GuestMailbox {
    var command: UInt32 = 0
    var sequence: UInt32 = 0
    var acknowledged: UInt32 = 0
    /// Passes finished in the current `run`, published as they end.
    var passes: UInt32 = 0
    // The work.
    var gfns: UnsafePointer<GFN>?
    var sptes: UnsafePointer<UnsafeMutablePointer<UInt64>>?
    var count = 0
    var doneState: UInt64 = 0
    // Results.
    var stats = VCPUPassStats()
    var dirtyMemoryNs: UInt64 = 0
    var readNs: UInt64 = 0
    var coldReadNs: UInt64 = 0
    var sink: UInt64 = 0
    /// Its lock operations: waits counted, holds not kept.
    var lockStats = ca_lock_stats()
    /// Fault latencies in ticks, of the `run`'s faults begun during the harvest.
    var latencies: UnsafeMutablePointer<UInt64>
    var latencyCapacity: Int
    /// Per page of its working set: written after the harvest returned.
    var afterDone: UnsafeMutablePointer<UInt8>
    var afterDoneCapacity: Int
    /// Its share of the guest's working set.
    var memory: UnsafeMutablePointer<UInt64>
    var memoryWords: Int
}

/// The vCPU threads of the concurrent scenario: each pinned to a CPU of
/// its own where the OS allows (the harvesting thread on CPU 0, vCPU i on
/// CPU 1 + i, wrapping), each writing its share of the round's pages
/// through `MMU.vcpuPass` and reading its share of the guest's working set.
/// They spin, outside guest mode, between commands.
final class GuestThreads {
    let mmu: MMU
    let count: Int
    let faultPath: FaultPath
    let shadowing: Bool
    let workingSetBytes: Int
    private let boxes: [UnsafeMutablePointer<GuestMailbox>]
    private var threads: [Thread] = []
    private var running = 0
    /// Whether the harvesting thread was pinned (and must be let go).
    private let pinnedHarvester: Bool
    /// The round whose pages the threads write, kept alive while they do.
    private var round: GuestRound?

    static let latencyCapacity = 1 << 20

    init(vm: VirtualMachine, mmu: MMU, count: Int, faultPath: FaultPath, shadowing: Bool, workingSetBytes: Int, maxPages: Int) {
        self.mmu = mmu
        self.count = count
        self.faultPath = faultPath
        self.shadowing = shadowing
        self.workingSetBytes = workingSetBytes
        let share = max(64, workingSetBytes / count / 64 * 64)
        let perThread = maxPages / count + 1
        boxes = (0..<count).map { _ in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<GuestMailbox>.stride, alignment: 128)
            let memory = UnsafeMutableRawPointer.allocate(byteCount: share, alignment: 4096).bindMemory(to: UInt64.self, capacity: share / 8)
            memory.initialize(repeating: 1, count: share / 8)
            let latencies = UnsafeMutablePointer<UInt64>.allocate(capacity: Self.latencyCapacity)
            let after = UnsafeMutablePointer<UInt8>.allocate(capacity: perThread)
            let box = raw.bindMemory(to: GuestMailbox.self, capacity: 1)
            box.initialize(to: GuestMailbox(latencies: latencies, latencyCapacity: Self.latencyCapacity, afterDone: after,
                                            afterDoneCapacity: perThread, memory: memory, memoryWords: share / 8))
            return box
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        pinnedHarvester = cpus > 1 && ca_pin_thread(0) == 0
        vm.startGuests(count: count)
        for i in 0..<count {
            let box = UnsafeTransfer(boxes[i]), handle = UnsafeTransfer(mmu)
            let cpu = cpus > 1 ? (1 + i) % cpus : 0
            let t = Thread { GuestThreads.body(box.value, mmu: handle.value, vcpu: i, cpu: cpu, faultPath: faultPath, shadowing: shadowing) }
            t.name = "vcpu\(i)"
            t.start()
            threads.append(t)
        }
        running = count
    }

    /// Stops the threads and lets the harvesting thread run anywhere again.
    func shutdown(vm: VirtualMachine) {
        if running > 0 {
            command(.exit)
            running = 0
        }
        vm.stopGuests()
        if pinnedHarvester { _ = ca_unpin_thread() }
        for b in boxes {
            b.pointee.latencies.deallocate()
            b.pointee.afterDone.deallocate()
            UnsafeMutableRawPointer(b.pointee.memory).deallocate()
            UnsafeMutableRawPointer(b).deallocate()
        }
    }

    /// The round's pages, dealt in contiguous shares (dirty_log_perf_test
    /// gives each vCPU a region of its own).
    func assign(_ r: GuestRound) {
        round = r
        r.gfns.withUnsafeBufferPointer { g in
            r.sptes.withUnsafeBufferPointer { s in
                for i in 0..<count {
                    let lo = r.count * i / count, hi = r.count * (i + 1) / count
                    precondition(hi - lo <= boxes[i].pointee.afterDoneCapacity)
                    boxes[i].pointee.gfns = g.baseAddress.map { $0 + lo }
                    boxes[i].pointee.sptes = s.baseAddress.map { $0 + lo }
                    boxes[i].pointee.count = hi - lo
                }
            }
        }
    }

    /// Sends `c` to every thread; waits for them all unless `wait` is false.
    func command(_ c: GuestCommand, doneState: UInt64 = 0, wait: Bool = true) {
        for b in boxes {
            b.pointee.command = c.rawValue
            b.pointee.doneState = doneState
            b.pointee.passes = 0
            withUnsafeMutablePointer(to: &b.pointee.sequence) { ca_store32($0, $0.pointee &+ 1) }
        }
        if wait { waitAll() }
    }

    /// Until every thread has acknowledged its last command.
    func waitAll() {
        for b in boxes {
            let want = ca_load32(&b.pointee.sequence)
            Self.spin { ca_load32(&b.pointee.acknowledged) == want }
        }
    }

    /// Until every thread running `run` has finished a pass: the guest is
    /// in its steady state (translations cached) when the harvest begins.
    func waitForFirstPass() {
        for b in boxes {
            Self.spin { ca_load32(&b.pointee.passes) != 0 || ca_load32(&b.pointee.acknowledged) == ca_load32(&b.pointee.sequence) }
        }
    }

    /// What the threads' last `run` measured: their passes summed, the
    /// fault latencies of the harvest window (ticks), the longest dirty
    /// memory time, and the offsets of the pages written after the harvest returned.
    func runResults(slot s: SlotView) -> (stats: VCPUPassStats, latencies: [UInt64], dirtyMemoryNs: Double, writtenAfter: [SlotOffset]) {
        var stats = VCPUPassStats()
        var latencies: [UInt64] = []
        var dirtyNs: UInt64 = 0
        var after: [SlotOffset] = []
        for b in boxes {
            let st = b.pointee.stats
            stats.add(st)
            latencies.append(contentsOf: UnsafeBufferPointer(start: b.pointee.latencies, count: st.latenciesRecorded))
            dirtyNs = max(dirtyNs, b.pointee.dirtyMemoryNs)
            for i in 0..<b.pointee.count where b.pointee.afterDone[i] != 0 { after.append(s.offset(of: b.pointee.gfns![i])) }
        }
        return (stats, latencies, Double(dirtyNs), after)
    }

    /// The longest of the threads' timed reads.
    var readNs: Double { Double(boxes.map(\.pointee.readNs).max() ?? 0) }

    /// Reading the working set from memory (after flushing it) and from
    /// cache (right after), each the median of three.
    func readCosts() -> (coldNs: Double, warmNs: Double) {
        var cold: [Double] = [], warm: [Double] = []
        for _ in 0..<3 {
            command(.calibrate)
            cold.append(Double(boxes.map(\.pointee.coldReadNs).max() ?? 0))
            warm.append(readNs)
        }
        return (Statistics.median(cold), Statistics.median(warm))
    }

    /// Cache lines of the working set per vCPU.
    var linesPerVCPU: Int { boxes[0].pointee.memoryWords / 8 }

    /// Spins until `done`, yielding the CPU now and then: with more threads
    /// than CPUs the one spun for may need this one's.
    @inline(__always)
    private static func spin(until done: () -> Bool) {
        var spins = 0
        while !done() {
            ca_cpu_relax()
            spins &+= 1
            if spins & 4095 == 0 { sched_yield() }
        }
    }

    // MARK: The threads

    private static func body(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, cpu: Int, faultPath: FaultPath, shadowing: Bool) {
        _ = ca_pin_thread(Int32(cpu))
        withUnsafeMutablePointer(to: &box.pointee.lockStats) { ca_lock_stats_set($0) }
        mmu.resetGuest(vcpu: vcpu)
        var seen: UInt32 = 0
        while true {
            spin { ca_load32(&box.pointee.sequence) != seen }
            seen = ca_load32(&box.pointee.sequence)
            let command = GuestCommand(rawValue: box.pointee.command) ?? .none
            if command == .exit {
                mmu.resetGuest(vcpu: vcpu)
                ca_lock_stats_set(nil)
                ca_store32(&box.pointee.acknowledged, seen)
                return
            }
            perform(command, box, mmu: mmu, vcpu: vcpu, faultPath: faultPath, shadowing: shadowing)
            ca_store32(&box.pointee.acknowledged, seen)
        }
    }

    private static func perform(_ command: GuestCommand, _ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int,
                                faultPath: FaultPath, shadowing: Bool) {
        switch command {
        case .dirty, .run:
            guard let g = box.pointee.gfns, let s = box.pointee.sptes, box.pointee.count > 0 else { return }
            var pass = VCPUPass(gfns: g, sptes: s, count: box.pointee.count, vcpu: vcpu, faultPath: faultPath)
            guard command == .run else {
                box.pointee.stats = mmu.vcpuPass(pass)
                return
            }
            box.pointee.afterDone.update(repeating: 0, count: pass.count)
            pass.doneState = box.pointee.doneState
            pass.abandonOnDone = true
            pass.latencies = box.pointee.latencies
            var total = VCPUPassStats()
            var n: UInt32 = 0
            while true {
                pass.shadowAt = shadowing ? Int(n) % pass.count : -1
                pass.latencyCapacity = box.pointee.latencyCapacity - total.latenciesRecorded
                pass.latencies = box.pointee.latencies + total.latenciesRecorded
                let st = mmu.vcpuPass(pass)
                total.add(st)
                n &+= 1
                ca_store32(&box.pointee.passes, n)
                if st.abandoned { break }
            }
            // The harvest has returned: its pages fault again.
            pass.shadowAt = -1
            pass.abandonOnDone = false
            pass.writtenAfterDone = box.pointee.afterDone
            pass.latencyCapacity = 0
            let t0 = MonotonicClock.now()
            total.add(mmu.vcpuPass(pass))
            box.pointee.dirtyMemoryNs = MonotonicClock.now() &- t0
            box.pointee.stats = total
        case .warm:
            box.pointee.sink &+= read(box)
        case .reread:
            let t0 = MonotonicClock.now()
            box.pointee.sink &+= read(box)
            box.pointee.readNs = MonotonicClock.now() &- t0
        case .calibrate:
            CacheEviction.flushLines(box.pointee.memory, box.pointee.memoryWords * 8)
            ca_flush_fence()
            let t0 = MonotonicClock.now()
            box.pointee.sink &+= read(box)
            let t1 = MonotonicClock.now()
            box.pointee.sink &+= read(box)
            let t2 = MonotonicClock.now()
            box.pointee.coldReadNs = t1 &- t0
            box.pointee.readNs = t2 &- t1
        case .none, .exit:
            break
        }
    }

    /// One load per 64-byte line of the thread's share, in order.
    private static func read(_ box: UnsafeMutablePointer<GuestMailbox>) -> UInt64 {
        FullCacheRead.readLines(box.pointee.memory, words: box.pointee.memoryWords)
    }
}
