import BenchAnalysis
import CAtomics
import DirtyLogCore
import Foundation
import ShadowMMU

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

/// The lifecycle's guest: dirty_log_perf_test's vCPUs over their memory.
extension GuestThreads {
    /// Before a lifecycle command, untimed: each vCPU's share of `pages`
    /// pages from gfn 0 and its accesses, as `template` says (its seed
    /// varied per vCPU): every page in order, or as many random ones; each
    /// a write with `writePercent`% probability. The pages the writes will
    /// log are set in `template.expected` here, while the slot logs, so
    /// that the pass itself does what a guest does: the accesses, and the
    /// faults they take.
    func prepareLifecycle(pages: Int, template: LifecyclePass, logging: Bool) {
        for (i, b) in boxes.enumerated() {
            let lo = pages * i / count, hi = pages * (i + 1) / count
            var p = template
            p.first = UInt64(lo)
            p.count = hi - lo
            p.seed = template.seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15
            precondition(p.count <= b.pointee.afterDoneCapacity)
            var rng = SeededGenerator(seed: p.seed)
            for k in 0..<p.count {
                let page = p.random ? rng.below(p.count) : k
                let write = p.writePercent >= 100 || rng.below(100) < p.writePercent
                b.pointee.accesses[k] = UInt32(page) | (write ? 1 << 31 : 0)
                if write, logging, let e = p.expected {
                    let off = SlotOffset(lo + page)
                    e[off.word] |= off.bit
                }
            }
            b.pointee.accessCount = p.count
            b.pointee.lifecycle = p
            ca_store32(&b.pointee.stop, 0)
            ca_store32(&b.pointee.running, 0)
        }
    }

    /// The lifecycle command on the prepared accesses; waits for the vCPUs
    /// unless `wait` is false. With `runUntilStopped`, passes of writes in
    /// order until `stopRunning`.
    func lifecycle(_ c: GuestCommand, wait: Bool = true) throws {
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

    // MARK: On the vCPU threads

    /// dirty_log_perf_test's guest (perf_test_guest_code()) over one vCPU's
    /// memory, in guest mode: its prepared accesses (`prepareLifecycle`),
    /// each through the model's paging structure (`MMU.vcpuAccess`), taking
    /// each flush IPI that has reached it first; faults timed from exit to
    /// re-entry (a time-stamp read around each access, the one piece of
    /// the harness in the pass). A read that maps its page writable while
    /// the slot logs is logged too: the pass adds it to the expected log.
    /// `untilStopped`: passes of writes in order until the harness sets
    /// `stop`, each logged page added as it is written (logging ends
    /// during them).
    static func lifecyclePass(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, fastPath: Bool,
                              untilStopped: Bool) {
        let p = box.pointee.lifecycle
        let accesses = box.pointee.accesses, n = box.pointee.accessCount
        let slot = mmu.slot(id: VMLayout.measuredSlotID)
        var st = LifecyclePassStats()
        let expected = p.expected
        mmu.vcpuEnterGuest(vcpu)
        ca_store32(&box.pointee.running, 1)
        repeat {
            var i = 0
            while i < n {
                let access = untilStopped ? UInt32(i) | 1 << 31 : accesses[i]
                let write = access >> 31 != 0
                let gfn = GFN(p.first &+ UInt64(access & 0x7FFF_FFFF))
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
                        if a.zapped || a.split { st.splitFaults &+= 1 }
                    default: break
                    }
                }
                // What the kernel logs beyond the writes the harness set
                // beforehand: a read that mapped its page writable while the
                // slot logs; while logging ends, every write as it happens.
                if let e = expected, untilStopped || (!write && a.kind == .mapped), slot.state.pointee.dirtyLogging {
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
