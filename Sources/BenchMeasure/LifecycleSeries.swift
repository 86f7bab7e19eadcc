import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// One lifecycle series: dirty_log_perf_test's experiment on the model.
/// The guest (`vcpus` × `pagesPerVCPU` pages in one slot, backed by
/// `backing`) is populated by its vCPUs, logging enabled under each
/// policy, `iterations` rounds of its vCPUs' passes each followed by a
/// harvest, then logging disabled by each policy of the era.
public struct LifecycleSpec: Sendable, Hashable {
    public var paging: Paging
    public var pagesPerVCPU: Int
    public var vcpus: Int
    public var backing: Backing
    public var iterations: Int
    public var policies: [EnablePolicy]
    /// nil: every disable policy of each enable policy's kernel.
    public var disablePolicies: [DisablePolicy]?
    /// Harvests by KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG (manual
    /// protect), where the policy's kernel had it; split-on-clear always.
    public var manualProtect: Bool
    /// The test's -a: random pages, with replacement.
    public var randomAccess: Bool
    /// The test's -w.
    public var writePercent: Int
    /// The test's -e: the vCPUs keep writing while logging is disabled.
    public var vcpusRunDuringDisable: Bool
    /// Whether the TDP MMU runs a two-dimensional-paging guest in the eras
    /// that have it (`VMState.tdpMMUEnabled`). False models the kernel
    /// lab's shadow boot: kvm_amd npt=0 runs its guest, which has no paging
    /// of its own, in the shadow MMU's direct mappings.
    public var tdpMMUEnabled = true
    /// The largest leaf the MMU builds, whatever backs the guest (3: 1 GiB).
    /// 2 models a guest without paging under shadow paging:
    /// nonpaging_page_fault() "builds a PAE pagetable, we can map 2mb pages
    /// at maximum" (fault->max_level = PG_LEVEL_2M).
    public var maxLeafLevel = 3

    public init(paging: Paging, pagesPerVCPU: Int, vcpus: Int = 1, backing: Backing = .page2M, iterations: Int = 2,
                policies: [EnablePolicy] = EnablePolicy.allCases, disablePolicies: [DisablePolicy]? = nil, manualProtect: Bool = false,
                randomAccess: Bool = false, writePercent: Int = 100, vcpusRunDuringDisable: Bool = true) {
        self.paging = paging
        self.pagesPerVCPU = pagesPerVCPU
        self.vcpus = vcpus
        self.backing = backing
        self.iterations = iterations
        self.policies = policies
        self.disablePolicies = disablePolicies
        self.manualProtect = manualProtect
        self.randomAccess = randomAccess
        self.writePercent = writePercent
        self.vcpusRunDuringDisable = vcpusRunDuringDisable
    }

    public var slotPages: Int { pagesPerVCPU * vcpus }

    public var layout: VMLayout { VMLayout(paging: paging, slotPages: slotPages, backing: backing) }

    public var key: LifecycleKey {
        LifecycleKey(paging: paging.mode, sptesPerGFN: paging.sptesPerGFN, slotPages: slotPages, backing: backing, vcpus: vcpus)
    }

    /// How the iterations of `policy` are harvested under `paging`: the
    /// seed's policy by its rule (each of its branches timed beside it on
    /// the same state, `LifecycleRun.harvest`); the others by their
    /// kernel's masked GET, or its GET and CLEAR under manual protect. The
    /// reason instead when no kernel ran it.
    public static func strategies(_ policy: EnablePolicy, paging: PagingMode, manualProtect: Bool,
                                  tdpMMU: Bool = true) -> Result<[Strategy], Skip> {
        if let r = policy.skipReason(paging: paging) { return .failure(Skip(r)) }
        switch policy {
        case .drop:
            if manualProtect { return .failure(Skip("drop: 3.3 had no KVM_CLEAR_DIRTY_LOG (manual protect came in 5.0, 2a31b9db)")) }
            return .success([.seed])
        case .wrprot, .eagerSplit:
            if manualProtect { return .success([.clearChunked]) }
            return .success([paging == .tdp && tdpMMU ? .tdpMasked : .masked])
        case .splitOnClear:
            return .success([.clearChunked])
        }
    }

    /// Why a lifecycle is not run.
    public struct Skip: Error, Sendable {
        public var reason: String
        init(_ r: String) { reason = r }
    }

    /// Bytes the series' largest VM takes: every page at 4 KiB twice over
    /// (the tables split, and under the shadow MMU the ones a disable
    /// leaves unlinked), the bitmaps and the vCPUs' expected log.
    public var estimatedBytes: Int { 2 * layout.estimatedBytes(vcpus: vcpus) }
}

/// What a lifecycle series produced.
public struct LifecycleOutcome {
    public var rows: [LifecycleRow] = []
    public var skipped: [SkipNote] = []
    public var phases = PhaseTimes()
    public var interruptedAt: String?
}

/// Runs a lifecycle series on the model: a fresh VM per lifecycle (enable
/// policy and harvest strategy), its vCPU threads (`GuestThreads`) doing
/// the guest's passes, each phase timed once (TimedRegion) as the test
/// times it and checked after: the invariant, the leaves per level the
/// policy implies, the log against the pages the vCPUs touched.
public final class LifecycleSeries {
    public let spec: LifecycleSpec
    public let settings: MeasureSettings
    private let progress: Progress
    private let allocations = ThreadAllocationCounter()
    #if DEBUG
    /// See `PlantedBug`.
    public var plantedBug: PlantedBug?
    #endif

    public init(spec: LifecycleSpec, settings: MeasureSettings, progress: Progress) {
        self.spec = spec
        self.settings = settings
        self.progress = progress
    }

    /// One lifecycle: how logging is enabled, by which kernel, harvested how.
    public struct Lifecycle: Sendable, Equatable {
        public var policy: EnablePolicy
        public var kernel: LifecycleKernel
        public var strategy: Strategy
    }

    /// The lifecycles the series runs, and the skipped ones: each enable
    /// policy under each kernel that had it and one of the disable
    /// policies asked for.
    public var lifecycles: (runs: [Lifecycle], skipped: [SkipNote]) {
        var runs: [Lifecycle] = [], skipped: [SkipNote] = []
        for p in spec.policies {
            switch LifecycleSpec.strategies(p, paging: spec.paging.mode, manualProtect: spec.manualProtect, tdpMMU: spec.tdpMMUEnabled) {
            case .success(let s):
                for k in p.kernels(paging: spec.paging.mode, tdpMMU: spec.tdpMMUEnabled) where !Self.disables(k, spec: spec).isEmpty {
                    runs += s.map { Lifecycle(policy: p, kernel: k, strategy: $0) }
                }
            case .failure(let skip): skipped.append(SkipNote(series: spec.key.label, backend: .model, strategy: p.rawValue, reason: skip.reason))
            }
        }
        return (runs, skipped)
    }

    /// The disable policies a lifecycle under `kernel` runs: the kernel's
    /// on this host (`LifecycleKernel.disablePolicies`), those asked for.
    static func disables(_ kernel: LifecycleKernel, spec: LifecycleSpec) -> [DisablePolicy] {
        let own = kernel.disablePolicies(tdpMMU: spec.tdpMMUEnabled)
        return (spec.disablePolicies ?? DisablePolicy.allCases).filter { own.contains($0) }
    }

    public func run() throws -> LifecycleOutcome {
        var out = LifecycleOutcome()
        let (runs, skipped) = lifecycles
        out.skipped = skipped
        for l in runs {
            let label = "\(l.policy.rawValue)/\(l.strategy.rawValue) \(l.kernel.rawValue)"
            if let s = Termination.requested {
                out.interruptedAt = "\(spec.key.label) \(label) (\(Termination.name(s)))"
                break
            }
            progress.point(label)
            let t0 = MonotonicClock.now()
            out.rows += try runLifecycle(l)
            out.phases.add(.lifecycle, MonotonicClock.seconds(since: t0))
            progress.pointDone()
        }
        return out
    }

    /// One lifecycle, start to end.
    private func runLifecycle(_ l: Lifecycle) throws -> [LifecycleRow] {
        let paging = spec.paging.mode
        let era = l.kernel.era
        let tdpMMU = era == .linux5_14on && paging == .tdp && spec.tdpMMUEnabled
        let layout = spec.layout
        let vm = VirtualMachine(unloggedLayout: layout, vcpus: spec.vcpus, reserve: 2 * layout.expectedShadowPages + 64,
                                rmaps: !tdpMMU, populate: false)
        vm.state.pointee.tdpMMUEnabled = spec.tdpMMUEnabled
        vm.state.pointee.hostLevel = min(vm.state.pointee.hostLevel, spec.maxLeafLevel)
        vm.enterEra(era)
        vm.state.pointee.splitHugeLeafOnFault = l.kernel.splitsHugeLeafOnFault
        let costs = settings.exitCosts
        vm.setExitCosts(exitTicks: TickClock.ticks(costs.exitNs), ipiTicks: TickClock.ticks(costs.ipiNs))
        vm.state.pointee.clearChunkPages = settings.clearChunkPages
        #if DEBUG
        plantedBug?.plant(in: vm)
        #endif
        return try vm.withMMU { mmu in
            let guests = GuestThreads(vm: vm, mmu: mmu, count: spec.vcpus, faultPath: .fast, shadowing: false,
                                      maxPages: spec.slotPages)
            defer { guests.shutdown(vm: vm) }
            var run = LifecycleRun(spec: spec, vm: vm, mmu: mmu, guests: guests, policy: l.policy, strategy: l.strategy, kernel: l.kernel,
                                   allocations: allocations)
            defer { run.release() }
            return try run.all()
        }
    }
}
