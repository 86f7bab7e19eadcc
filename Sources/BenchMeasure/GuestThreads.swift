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
    /// Write every page of its share once (they fault: the round's writes).
    case dirty
    /// Run through a harvest (`GuestThreads.run`).
    case run
    /// Read a buffer, one load per line (warm it, or re-read it, timed).
    case read
    /// Time a read of a buffer from memory (after flushing it) and from cache.
    case calibrate
    /// The lifecycle: one pass of dirty_log_perf_test's guest over the
    /// vCPU's memory (`LifecyclePass`).
    case pass
    /// The lifecycle: passes of writes until told to stop (the vCPUs
    /// running while logging is disabled, the test's -e).
    case runUntilStopped
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
    /// The run records its lock waits (`ca_lock_stats`).
    var instrumented: UInt32 = 0
    /// Whether the thread runs on a CPU of its own (pinning succeeded), and
    /// whether it has started (set once it knows).
    var pinned: UInt32 = 0
    var started: UInt32 = 0
    // The work.
    var gfns: UnsafePointer<GFN>?
    var sptes: UnsafePointer<UnsafeMutablePointer<UInt64>>?
    var count = 0
    /// The `harvestState` at which the harvest run through has returned.
    var doneState: UInt64 = 0
    var readBuffer: UnsafePointer<UInt64>?
    var readWords = 0
    // Results.
    var stats = GuestRunStats()
    var latencyCount = 0
    var readNs: UInt64 = 0
    var coldReadNs: UInt64 = 0
    var sink: UInt64 = 0
    /// Its lock operations: waits counted, holds not kept.
    var lockStats = ca_lock_stats()
    /// The lifecycle's pass and what it did; `stop` ends `runUntilStopped`.
    var lifecycle = LifecyclePass()
    var lifecycleStats = LifecyclePassStats()
    var stop: UInt32 = 0
    /// Set once a `runUntilStopped` has entered guest mode.
    var running: UInt32 = 0
    /// Per fault in the window: latency and lock wait, ticks.
    var latencies: UnsafeMutablePointer<UInt64>
    var lockWaits: UnsafeMutablePointer<UInt64>
    var latencyCapacity: Int
    /// Per page of its share: written after the harvest returned.
    var afterDone: UnsafeMutablePointer<UInt8>
    var afterDoneCapacity: Int
    /// The lifecycle pass's accesses, drawn before it runs
    /// (`GuestThreads.prepareLifecycle`): page offsets in the share, the
    /// top bit set for a write. `afterDoneCapacity` of them at most.
    var accesses: UnsafeMutablePointer<UInt32>
    var accessCount = 0
}

/// The vCPU threads of the concurrent scenario: each pinned to a CPU of
/// its own where the OS allows (the harvesting thread on CPU 0, vCPU i on
/// CPU 1 + i, wrapping), each running its share of the round's pages
/// through the model's guest side (`MMU.vcpuWrite` and the faults), timing
/// what the guest pays. They spin, outside guest mode, between commands.
final class GuestThreads {
    let mmu: MMU
    let count: Int
    let faultPath: FaultPath
    let shadowing: Bool
    let slot: SlotView
    let boxes: [UnsafeMutablePointer<GuestMailbox>]
    private var threads: [Thread] = []
    private var running = 0
    /// Whether the harvesting thread was pinned (and must be let go).
    let pinnedHarvester: Bool
    /// The round whose pages the threads write, kept alive while they do.
    private var round: GuestRound?
    /// When the harvest being run through began (`ca_ticks`): the start of
    /// the relog time.
    let harvestStart: UnsafeMutablePointer<UInt64>

    /// Faults a vCPU can record in one window before the run fails.
    static let latencyCapacity = 1 << 20
    /// How long the harness waits for a vCPU thread to answer a command.
    static let answerDeadlineNs: UInt64 = 60_000_000_000

    /// `maxPages`: the most pages the threads share among them in a round
    /// or a lifecycle pass (each gets room for its share).
    init(vm: VirtualMachine, mmu: MMU, count: Int, faultPath: FaultPath, shadowing: Bool, maxPages: Int) {
        self.mmu = mmu
        self.count = count
        self.faultPath = faultPath
        self.shadowing = shadowing
        slot = mmu.slot(id: VMLayout.measuredSlotID)
        harvestStart = .allocate(capacity: 1)
        harvestStart.initialize(to: 0)
        let perThread = maxPages / count + 1
        boxes = (0..<count).map { _ in
            let raw = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<GuestMailbox>.stride, alignment: 128)
            let box = raw.bindMemory(to: GuestMailbox.self, capacity: 1)
            box.initialize(to: GuestMailbox(latencies: .allocate(capacity: Self.latencyCapacity),
                                            lockWaits: .allocate(capacity: Self.latencyCapacity),
                                            latencyCapacity: Self.latencyCapacity,
                                            afterDone: .allocate(capacity: perThread), afterDoneCapacity: perThread,
                                            accesses: .allocate(capacity: perThread)))
            return box
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        pinnedHarvester = cpus > 1 && ca_pin_thread(0) == 0
        vm.startGuests(count: count)
        for i in 0..<count {
            let box = UnsafeTransfer(boxes[i]), handle = UnsafeTransfer(mmu), start = UnsafeTransfer(harvestStart)
            let cpu = cpus > 1 ? (1 + i) % cpus : 0
            let t = Thread {
                GuestThreads.body(box.value, mmu: handle.value, vcpu: i, cpu: cpu, faultPath: faultPath, shadowing: shadowing,
                                  harvestStart: start.value)
            }
            t.name = "vcpu\(i)"
            t.start()
            threads.append(t)
        }
        running = count
        for b in boxes { while ca_load32(&b.pointee.started) == 0 { sched_yield() } }
    }

    /// Whether the harvesting thread and every vCPU thread got a CPU of its own.
    var pinned: Bool {
        pinnedHarvester && boxes.allSatisfy { ca_load32(&$0.pointee.pinned) == 1 }
    }

    /// Stops the threads and lets the harvesting thread run anywhere again.
    func shutdown(vm: VirtualMachine) {
        if running > 0 {
            try? command(.exit)
            running = 0
        }
        vm.stopGuests()
        if pinnedHarvester { _ = ca_unpin_thread() }
        for b in boxes {
            b.pointee.latencies.deallocate()
            b.pointee.lockWaits.deallocate()
            b.pointee.afterDone.deallocate()
            b.pointee.accesses.deallocate()
            UnsafeMutableRawPointer(b).deallocate()
        }
        harvestStart.deallocate()
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

    /// Sends `c` to every thread (or only vCPU 0's, `first`); waits for
    /// them unless `wait` is false.
    func command(_ c: GuestCommand, doneState: UInt64 = 0, instrumented: Bool = false, first: Bool = false, wait: Bool = true) throws {
        for b in first ? [boxes[0]] : boxes {
            b.pointee.command = c.rawValue
            b.pointee.doneState = doneState
            b.pointee.instrumented = instrumented ? 1 : 0
            b.pointee.passes = 0
            withUnsafeMutablePointer(to: &b.pointee.sequence) { ca_store32($0, $0.pointee &+ 1) }
        }
        if wait { try waitAll() }
    }

    /// Until every thread has acknowledged its last command.
    func waitAll() throws {
        for (i, b) in boxes.enumerated() {
            let want = ca_load32(&b.pointee.sequence)
            try Self.spin("vCPU thread \(i) did not finish its command") { ca_load32(&b.pointee.acknowledged) == want }
        }
    }

    /// Passes vCPU 0 has finished in the current run (for tests).
    func passesDone() throws -> Int { Int(ca_load32(&boxes[0].pointee.passes)) }

    /// Spins until `done`, yielding the CPU now and then (with more threads
    /// than CPUs the one spun for may need this one's); past the deadline,
    /// an error: a vCPU thread stuck in the model must fail the run, not
    /// hang it.
    static func spin(_ what: @autoclosure () -> String, until done: () -> Bool) throws {
        var spins = 0
        var start: UInt64 = 0
        while !done() {
            ca_cpu_relax()
            spins &+= 1
            if spins & 4095 == 0 {
                sched_yield()
                if start == 0 { start = MonotonicClock.now() }
                if MonotonicClock.now() &- start > answerDeadlineNs {
                    throw BenchError.failed("\(what()) within \(answerDeadlineNs / 1_000_000_000) s")
                }
            }
        }
    }

    // MARK: The threads

    private static func body(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, cpu: Int, faultPath: FaultPath,
                             shadowing: Bool, harvestStart: UnsafeMutablePointer<UInt64>) {
        ca_store32(&box.pointee.pinned, ca_pin_thread(Int32(cpu)) == 0 && ProcessInfo.processInfo.activeProcessorCount > 1 ? 1 : 0)
        mmu.vcpuReset(vcpu)
        ca_store32(&box.pointee.started, 1)
        var seen: UInt32 = 0
        while true {
            var spins = 0
            while ca_load32(&box.pointee.sequence) == seen {
                ca_cpu_relax()
                spins &+= 1
                if spins & 4095 == 0 { sched_yield() }
            }
            seen = ca_load32(&box.pointee.sequence)
            let command = GuestCommand(rawValue: box.pointee.command) ?? .none
            if command == .exit {
                mmu.vcpuReset(vcpu)
                ca_store32(&box.pointee.acknowledged, seen)
                return
            }
            perform(command, box, mmu: mmu, vcpu: vcpu, fastPath: faultPath == .fast, shadowing: shadowing)
            ca_store32(&box.pointee.acknowledged, seen)
        }
    }

    private static func perform(_ command: GuestCommand, _ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int,
                                fastPath: Bool, shadowing: Bool) {
        switch command {
        case .dirty:
            guard let g = box.pointee.gfns, let s = box.pointee.sptes else { return }
            let slot = mmu.slot(id: VMLayout.measuredSlotID)
            mmu.vcpuEnterGuest(vcpu)
            for i in 0..<box.pointee.count where mmu.vcpuWrite(vcpu, gfn: g[i], sptep: s[i]) == .mustFault {
                _ = mmu.vcpuWriteFault(vcpu, slot: slot, gfn: g[i], sptep: s[i], fastPath: fastPath)
            }
            mmu.vcpuLeaveGuest(vcpu)
        case .run:
            run(box, mmu: mmu, vcpu: vcpu, fastPath: fastPath, shadowing: shadowing)
        case .read:
            let t0 = MonotonicClock.now()
            box.pointee.sink &+= WorkingSet.chase(box.pointee.readBuffer!, lines: box.pointee.readWords / 8)
            box.pointee.readNs = MonotonicClock.now() &- t0
        case .calibrate:
            let (cold, warm) = ReadCost.measure(box.pointee.readBuffer!, words: box.pointee.readWords, sink: &box.pointee.sink)
            box.pointee.coldReadNs = cold
            box.pointee.readNs = warm
        case .pass, .runUntilStopped:
            lifecyclePass(box, mmu: mmu, vcpu: vcpu, fastPath: fastPath, untilStopped: command == .runUntilStopped)
        case .none, .exit:
            break
        }
    }

}
