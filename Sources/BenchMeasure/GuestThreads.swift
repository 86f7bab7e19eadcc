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

/// What the harness asks of one lifecycle pass (`GuestCommand.pass`).
struct LifecyclePass {
    /// The vCPU's memory: `count` pages from `first`.
    var first: UInt64 = 0
    var count = 0
    /// Accesses that write, percent; the rest read (the test's -w).
    var writePercent = 100
    /// Random pages, with replacement, as many as the share (the test's
    /// -a), from `seed`; else every page in order.
    var random = false
    var seed: UInt64 = 0
    /// Pages the pass logged (a write, or a read that mapped a writable
    /// leaf in a logging slot): set here, by atomic OR.
    var expected: UnsafeMutablePointer<UInt64>?
}

/// What one vCPU's lifecycle pass did.
struct LifecyclePassStats {
    var accesses = 0
    /// Accesses that exited, and of them: fixed without mmu_lock (the fast
    /// path), faults that built a mapping (and those that zapped a large
    /// leaf or a table first), tables they allocated.
    var faults = 0
    var fastFaults = 0
    var mappingFaults = 0
    var splitFaults = 0
    var tablesAllocated = 0
    /// Fault latencies from exit to re-entry, ticks: their sum and maximum.
    var faultTicks: UInt64 = 0
    var maxFaultTicks: UInt64 = 0
    /// Flush IPIs it took while in guest mode.
    var ipiExits = 0
    var passes = 0

    mutating func add(_ o: LifecyclePassStats) {
        accesses += o.accesses; faults += o.faults; fastFaults += o.fastFaults; mappingFaults += o.mappingFaults
        splitFaults += o.splitFaults; tablesAllocated += o.tablesAllocated; faultTicks &+= o.faultTicks
        maxFaultTicks = max(maxFaultTicks, o.maxFaultTicks); ipiExits += o.ipiExits; passes += o.passes
    }
}

/// What one vCPU thread's `run` through a harvest did. The window is the
/// harvest's: from just before it begins to just after it returns.
struct GuestRunStats {
    var writes = 0
    /// Writes begun in the window, and the faults among them: those whose
    /// latency (and, instrumented, lock wait) is recorded.
    var windowWrites = 0
    var windowFaults = 0
    /// Of the window's faults: fixed by the fast path, emulated writes to a
    /// shadowed guest page table, faults that shadowed one.
    var windowFastFaults = 0
    var windowEmulated = 0
    var windowShadowingFaults = 0
    /// Exits the window's flush IPIs cost the vCPU.
    var windowIPIExits = 0
    /// The seed's race: writes through a cached writable translation of a
    /// guest page table its shadowing had returned believing write-protected.
    var raceViolations = 0
    /// Writes through a cached writable translation after the harvest had
    /// returned, although the spte was protected: a flush that did not happen.
    var staleWrites = 0
    var shadowings = 0
    var shadowFlushes = 0
    /// Pages of its share logged anew since the harvest began, and when
    /// (`ca_ticks`) the last of them was (0 until then).
    var relogged = 0
    var reloggedAt: UInt64 = 0
    /// Its share's size.
    var pages = 0

    mutating func add(_ o: GuestRunStats) {
        writes += o.writes; windowWrites += o.windowWrites; windowFaults += o.windowFaults
        windowFastFaults += o.windowFastFaults; windowEmulated += o.windowEmulated
        windowShadowingFaults += o.windowShadowingFaults; windowIPIExits += o.windowIPIExits
        raceViolations += o.raceViolations; staleWrites += o.staleWrites
        shadowings += o.shadowings; shadowFlushes += o.shadowFlushes
        relogged += o.relogged; reloggedAt = max(reloggedAt, o.reloggedAt); pages += o.pages
    }
}

/// What the vCPU threads' `run` through one harvest gathered.
struct GuestRunResult {
    /// Summed over the vCPUs (`reloggedAt`: the last vCPU's).
    var stats = GuestRunStats()
    /// The window's faults, from the VM exit to the re-entry, in ticks.
    var faultTicks: [UInt64] = []
    /// Instrumented runs: each window fault's wait for mmu_lock, in ticks.
    var lockWaitTicks: [UInt64] = []
    /// Pages written after the harvest returned.
    var writtenAfter: [SlotOffset] = []
    /// Every vCPU logged its whole share anew.
    var complete: Bool { stats.relogged == stats.pages }
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
    private let slot: SlotView
    private let boxes: [UnsafeMutablePointer<GuestMailbox>]
    private var threads: [Thread] = []
    private var running = 0
    /// Whether the harvesting thread was pinned (and must be let go).
    let pinnedHarvester: Bool
    /// The round whose pages the threads write, kept alive while they do.
    private var round: GuestRound?
    /// When the harvest being run through began (`ca_ticks`): the start of
    /// the dirty memory time.
    private let harvestStart: UnsafeMutablePointer<UInt64>

    /// Faults a vCPU can record in one window before the run fails.
    static let latencyCapacity = 1 << 20
    /// How long the harness waits for a vCPU thread to answer a command.
    static let answerDeadlineNs: UInt64 = 60_000_000_000

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
                                            afterDone: .allocate(capacity: perThread), afterDoneCapacity: perThread))
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

    /// The vCPUs start running through the harvest that will end at
    /// `doneState`, and have each finished one pass over their share (the
    /// guest in its steady state, translations cached) when this returns.
    func startRun(doneState: UInt64, instrumented: Bool) throws {
        try command(.run, doneState: doneState, instrumented: instrumented, wait: false)
        for (i, b) in boxes.enumerated() {
            try Self.spin("vCPU thread \(i) did not finish a pass") {
                ca_load32(&b.pointee.passes) != 0 || ca_load32(&b.pointee.acknowledged) == ca_load32(&b.pointee.sequence)
            }
        }
    }

    /// The lifecycle: each vCPU's pass over its share of `pages` pages from
    /// gfn 0, as `template` says (its seed varied per vCPU); waits for them
    /// unless `wait` is false. With `runUntilStopped`, passes of writes
    /// until `stopRunning`.
    func lifecycle(_ c: GuestCommand, pages: Int, template: LifecyclePass, wait: Bool = true) throws {
        for (i, b) in boxes.enumerated() {
            let lo = pages * i / count, hi = pages * (i + 1) / count
            var p = template
            p.first = UInt64(lo)
            p.count = hi - lo
            p.seed = template.seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15
            b.pointee.lifecycle = p
            ca_store32(&b.pointee.stop, 0)
            ca_store32(&b.pointee.running, 0)
        }
        try command(c, wait: wait)
    }

    /// Waits until every vCPU has begun its `runUntilStopped`.
    func waitRunning() throws {
        for (i, b) in boxes.enumerated() {
            try Self.spin("vCPU thread \(i) did not start running") {
                ca_load32(&b.pointee.running) != 0 || ca_load32(&b.pointee.acknowledged) == ca_load32(&b.pointee.sequence)
            }
        }
    }

    /// Ends a `runUntilStopped` and waits for the vCPUs.
    func stopRunning() throws {
        for b in boxes { ca_store32(&b.pointee.stop, 1) }
        try waitAll()
    }

    /// The last lifecycle command's stats, summed over the vCPUs.
    var lifecycleStats: LifecyclePassStats {
        var out = LifecyclePassStats()
        for b in boxes { out.add(b.pointee.lifecycleStats) }
        return out
    }

    /// Passes vCPU 0 has finished in the current run (for tests).
    func passesDone() throws -> Int { Int(ca_load32(&boxes[0].pointee.passes)) }

    /// The harvest the vCPUs run through begins now.
    @inline(__always)
    func markHarvestStart() { ca_store64(harvestStart, ca_ticks()) }

    /// Waits for the run to end and gathers it.
    func finishRun() throws -> GuestRunResult {
        try waitAll()
        var out = GuestRunResult()
        for b in boxes {
            let st = b.pointee.stats
            out.stats.add(st)
            out.faultTicks.append(contentsOf: UnsafeBufferPointer(start: b.pointee.latencies, count: b.pointee.latencyCount))
            if b.pointee.instrumented != 0 {
                out.lockWaitTicks.append(contentsOf: UnsafeBufferPointer(start: b.pointee.lockWaits, count: b.pointee.latencyCount))
            }
            for i in 0..<b.pointee.count where b.pointee.afterDone[i] != 0 { out.writtenAfter.append(slot.offset(of: b.pointee.gfns![i])) }
        }
        if out.stats.windowFaults > out.faultTicks.count {
            throw BenchError.failed("a vCPU faulted more than \(Self.latencyCapacity) times during one harvest: too many to record")
        }
        return out
    }

    /// When the run's harvest began (`ca_ticks`).
    var harvestStartTicks: UInt64 { ca_load64(harvestStart) }

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

    /// Spins until `done`, yielding the CPU now and then (with more threads
    /// than CPUs the one spun for may need this one's); past the deadline,
    /// an error: a vCPU thread stuck in the model must fail the run, not
    /// hang it.
    private static func spin(_ what: @autoclosure () -> String, until done: () -> Bool) throws {
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

    /// One vCPU's run through a harvest: passes over its share, as
    /// dirty_log_perf_test's vCPUs write theirs, until the harvest has
    /// returned and every page of the share has been logged anew since it
    /// began (the dirty memory time's end), or two passes after the harvest
    /// returned could not log them all (a flush that did not happen leaves
    /// writes going through stale translations, which never fault).
    ///
    /// Before every write the vCPU takes the flush IPI that has reached it;
    /// under shadow paging, one write per pass is first a fault that
    /// shadows the page as a guest page table (each pass another page). A
    /// fault is timed from the exit to the re-entry; the window's faults
    /// are recorded, with their lock wait when the run is instrumented.
    private static func run(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, fastPath: Bool, shadowing: Bool) {
        guard let gfns = box.pointee.gfns, let sptes = box.pointee.sptes, box.pointee.count > 0 else {
            box.pointee.stats = GuestRunStats()
            box.pointee.latencyCount = 0
            return
        }
        let slot = mmu.slot(id: VMLayout.measuredSlotID)
        let n = box.pointee.count
        let done = box.pointee.doneState
        let windowState = done &- 1
        let instrumented = box.pointee.instrumented != 0
        let latencies = box.pointee.latencies, lockWaits = box.pointee.lockWaits, capacity = box.pointee.latencyCapacity
        let afterDone = box.pointee.afterDone
        afterDone.update(repeating: 0, count: n)
        let lockStats = withUnsafeMutablePointer(to: &box.pointee.lockStats) { $0 }
        lockStats.pointee = ca_lock_stats()
        if instrumented { ca_lock_stats_set(lockStats) }
        var st = GuestRunStats()
        st.pages = n
        var recorded = 0
        var passesAfterDone = 0
        var pass = 0

        /// A fault begun in the window: its latency and lock wait.
        @inline(__always) func record(_ t0: UInt64, _ t1: UInt64, waited: UInt64) {
            st.windowFaults &+= 1
            guard recorded < capacity else { return }
            latencies[recorded] = t1 &- t0
            lockWaits[recorded] = waited
            recorded &+= 1
        }
        /// A page logged anew: its bit was clear, which it is only once the
        /// harvest has taken it, so the window was open by the time the
        /// fault returned (read then: the write may have begun before it).
        @inline(__always) func relogged(_ f: VCPUFault, at t: UInt64) {
            guard f.newlyLogged, mmu.harvestState >= windowState else { return }
            st.relogged &+= 1
            if st.relogged == n { st.reloggedAt = t }
        }

        mmu.vcpuEnterGuest(vcpu)
        while true {
            let shadowAt = shadowing ? pass % n : -1
            var i = 0
            while i < n {
                let gfn = gfns[i], sptep = sptes[i]
                let state = mmu.harvestState
                let inWindow = state == windowState
                let returned = state >= done
                if mmu.vcpuTakeInterrupts(vcpu), inWindow { st.windowIPIExits &+= 1 }
                if returned { afterDone[i] = 1 }
                st.writes &+= 1
                if inWindow { st.windowWrites &+= 1 }
                if i == shadowAt {
                    let w0 = lockStats.pointee.wait_ticks, t0 = ca_ticks()
                    let f = mmu.vcpuShadowingFault(vcpu, slot: slot, gfn: gfn)
                    let t1 = ca_ticks()
                    st.shadowings &+= 1
                    if f.kind == .shadowed(flushed: true) { st.shadowFlushes &+= 1 }
                    if inWindow {
                        st.windowShadowingFaults &+= 1
                        record(t0, t1, waited: lockStats.pointee.wait_ticks &- w0)
                    }
                }
                switch mmu.vcpuWrite(vcpu, gfn: gfn, sptep: sptep) {
                case .cached, .walked:
                    break
                case .cachedStale:
                    if returned { st.staleWrites &+= 1 }
                case .cachedRace:
                    st.raceViolations &+= 1
                case .mustFault:
                    let w0 = lockStats.pointee.wait_ticks, t0 = ca_ticks()
                    let f = mmu.vcpuWriteFault(vcpu, slot: slot, gfn: gfn, sptep: sptep, fastPath: fastPath)
                    let t1 = ca_ticks()
                    relogged(f, at: t1)
                    if inWindow {
                        if f.kind == .fastPath { st.windowFastFaults &+= 1 }
                        if f.kind == .emulated { st.windowEmulated &+= 1 }
                        record(t0, t1, waited: lockStats.pointee.wait_ticks &- w0)
                    }
                }
                i &+= 1
            }
            pass &+= 1
            ca_store32(&box.pointee.passes, UInt32(truncatingIfNeeded: pass))
            if mmu.harvestState >= done {
                passesAfterDone &+= 1
                if st.relogged >= n || passesAfterDone >= 2 { break }
            }
        }
        mmu.vcpuLeaveGuest(vcpu)
        ca_lock_stats_set(nil)
        box.pointee.stats = st
        box.pointee.latencyCount = recorded
    }
}

extension GuestThreads {
    /// dirty_log_perf_test's guest (perf_test_guest_code()) over one vCPU's
    /// memory, in guest mode: each page in order, or as many random pages
    /// as it has; an access writes with `writePercent`% probability, else
    /// reads. Through the model's paging structure (`MMU.vcpuAccess`),
    /// taking each flush IPI that has reached it first; faults timed from
    /// exit to re-entry. `untilStopped`: passes of writes in order until
    /// the harness sets `stop`.
    fileprivate static func lifecyclePass(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, fastPath: Bool,
                                          untilStopped: Bool) {
        let p = box.pointee.lifecycle
        let slot = mmu.slot(id: VMLayout.measuredSlotID)
        var st = LifecyclePassStats()
        var rng = SeededGenerator(seed: p.seed)
        let expected = p.expected
        mmu.vcpuEnterGuest(vcpu)
        ca_store32(&box.pointee.running, 1)
        repeat {
            var i = 0
            while i < p.count {
                let page = p.random && !untilStopped ? rng.below(p.count) : i
                let write = untilStopped || p.writePercent >= 100 || rng.below(100) < p.writePercent
                let gfn = GFN(p.first &+ UInt64(page))
                if mmu.vcpuTakeInterrupts(vcpu) { st.ipiExits &+= 1 }
                let t0 = ca_ticks()
                let a = mmu.vcpuAccess(vcpu, slot: slot, gfn: gfn, write: write, fastPath: fastPath)
                st.accesses &+= 1
                if a.faulted {
                    let t = ca_ticks() &- t0
                    st.faults &+= 1
                    st.faultTicks &+= t
                    if t > st.maxFaultTicks { st.maxFaultTicks = t }
                    switch a.kind {
                    case .fixed(.fastPath): st.fastFaults &+= 1
                    case .mapped:
                        st.mappingFaults &+= 1
                        st.tablesAllocated &+= a.tables
                        if a.zapped { st.splitFaults &+= 1 }
                    default: break
                    }
                }
                // What the kernel logs: every write, and a read that mapped
                // its page writable while the slot logs.
                if let e = expected, slot.state.pointee.dirtyLogging, write || a.kind == .mapped {
                    let off = slot.offset(of: gfn)
                    _ = ca_fetch_or64(e + off.word, off.bit)
                }
                i &+= 1
            }
            st.passes &+= 1
            ca_store32(&box.pointee.passes, UInt32(truncatingIfNeeded: st.passes))
        } while untilStopped && ca_load32(&box.pointee.stop) == 0
        mmu.vcpuLeaveGuest(vcpu)
        box.pointee.lifecycleStats = st
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
