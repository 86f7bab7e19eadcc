import BenchAnalysis
import CAtomics
import DirtyLogCore
import Foundation
import ShadowMMU

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

/// The concurrent scenario's guest: vCPU threads writing their share of
/// the round's pages again and again while a harvest runs, each fault
/// timed from exit to re-entry.
extension GuestThreads {
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

    // MARK: On the vCPU threads

    /// One vCPU's run through a harvest: passes over its share, as
    /// dirty_log_perf_test's vCPUs write theirs, until the harvest has
    /// returned and every page of the share has been logged anew since it
    /// began (the relog time's end), or two passes after the harvest
    /// returned could not log them all (a flush that did not happen leaves
    /// writes going through stale translations, which never fault).
    ///
    /// Before every write the vCPU takes the flush IPI that has reached it;
    /// under shadow paging, one write per pass is first a fault that
    /// shadows the page as a guest page table (each pass another page). A
    /// fault is timed from the exit to the re-entry; the window's faults
    /// are recorded, with their lock wait when the run is instrumented.
    static func run(_ box: UnsafeMutablePointer<GuestMailbox>, mmu: MMU, vcpu: Int, fastPath: Bool, shadowing: Bool) {
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
