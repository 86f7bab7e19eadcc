import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

extension ModelSeries {
    /// The concurrent scenario: vCPU threads started on the VM, every point
    /// measured with them running through each harvest, no cache eviction;
    /// then, if the series asks, the cache pollution at its fewest dirty
    /// pages.
    func measureConcurrent(vm: VirtualMachine, mmu: MMU, nUsed: Int, out: inout ModelOutcome) throws {
        progress.point("starting \(settings.guestThreads) vCPU thread\(settings.guestThreads == 1 ? "" : "s")")
        let costs = settings.exitCosts
        vm.setExitCosts(exitTicks: TickClock.ticks(costs.exitNs), ipiTicks: TickClock.ticks(costs.ipiNs))
        // Holds and waits are reported here: the instrumented lock, which
        // records them only on the threads of an instrumented repetition.
        vm.instrumentLock(true)
        let guests = GuestThreads(vm: vm, mmu: mmu, count: settings.guestThreads, faultPath: spec.faultPath ?? .locked,
                                  shadowing: spec.layout.paging != .tdp, maxPages: spec.layout.slotPages)
        var backend = ConcurrentBackend(vm: vm, mmu: mmu, guests: guests)
        defer {
            backend.release()
            guests.shutdown(vm: vm)
            vm.setExitCosts(exitTicks: 0, ipiTicks: 0)
            vm.instrumentLock(false)
        }
        guestSetting = GuestSetting(vcpus: settings.guestThreads, pinned: guests.pinned)
        out.rows = try sweep(&backend, nUsed: nUsed, out: &out)
        guard spec.measuresPollution, out.interruptedAt == nil, let fewest = spec.plannedCounts(nUsed: nUsed).first else { return }
        let subjects = [Strategy.slotWalk, .rmap].filter { spec.runnable.contains($0) }
        guard !subjects.isEmpty else { return }
        progress.point("cache pollution at \(fewest) dirty")
        let began = MonotonicClock.now()
        let set = spec.pattern.dirtySet(count: fewest, slotPages: spec.layout.slotPages, seed: settings.seed, parameters: settings.patterns)
        let round = GuestRound(vm: vm, set: set, sptesPerGFN: spec.layout.paging.sptesPerGFN, seed: settings.seed)
        var probe = PollutionProbe(vm: vm, mmu: mmu, guests: guests)
        out.pollution = try probe.measure(series: spec.key, strategies: subjects, round: round,
                                          workingSets: settings.pollutionWorkingSets,
                                          cpus: settings.guestCPUs)
        out.phases.add(.pollution, MonotonicClock.seconds(since: began))
    }
}
