import DirtyLogCore
import Foundation

/// One lifecycle series: the guest (paging, memory, backing, vCPUs) whose
/// dirty logging is turned on, harvested and turned off under each policy.
public struct LifecycleKey: Hashable, Sendable, Comparable {
    public var paging: PagingMode
    public var sptesPerGFN: Int
    public var slotPages: Int
    public var backing: Backing
    public var vcpus: Int

    public init(paging: PagingMode, sptesPerGFN: Int, slotPages: Int, backing: Backing, vcpus: Int) {
        self.paging = paging
        self.sptesPerGFN = sptesPerGFN
        self.slotPages = slotPages
        self.backing = backing
        self.vcpus = vcpus
    }

    /// "lifecycle 1GiB tdp 2m 1 vCPU"
    public var label: String {
        var s = "lifecycle \(Bytes.pages(slotPages)) \(paging.rawValue)"
        if sptesPerGFN > 1 { s += "×\(sptesPerGFN)" }
        return s + " \(backing.rawValue) \(vcpus) vCPU" + (vcpus == 1 ? "" : "s")
    }

    public var slug: String {
        var s = ""
        for c in label.map({ $0.isLetter || $0.isNumber ? $0 : "-" }) where !(c == "-" && s.last == "-") { s.append(c) }
        while s.last == "-" { s.removeLast() }
        return s
    }

    public static func < (a: LifecycleKey, b: LifecycleKey) -> Bool {
        (a.slotPages, a.paging, a.backing, a.vcpus) < (b.slotPages, b.paging, b.backing, b.vcpus)
    }
}

/// A phase of the lifecycle, as dirty_log_perf_test times them.
public enum LifecyclePhase: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The vCPUs' first pass over their memory ("Populate memory time").
    case populate
    /// KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES.
    case enable
    /// An iteration's guest pass ("Iteration k dirty memory time").
    case dirty
    /// KVM_GET_DIRTY_LOG.
    case get
    /// KVM_CLEAR_DIRTY_LOG (manual protect).
    case clear
    /// Logging turned off ("Disabling dirty logging time").
    case disable
    /// The guest's pass after it: where huge mappings come back by fault.
    case refault

    public static func < (a: LifecyclePhase, b: LifecyclePhase) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// One phase of one lifecycle (lifecycle.csv): its time and the MMU's
/// state after it.
public struct LifecycleRow: Sendable {
    public var series: LifecycleKey
    public var policy: EnablePolicy
    /// How the iterations' logs were harvested.
    public var strategy: Strategy
    /// The release whose enable, write-fault and disable paths it ran.
    public var kernel: LifecycleKernel
    /// Its era: mmu_lock, fault paths, harvests.
    public var era: KernelEra { kernel.era }
    public var phase: LifecyclePhase
    /// dirty, get, clear: the iteration, from 1.
    public var iteration: Int?
    /// disable, refault: the disable policy.
    public var disable: DisablePolicy?
    public var ns: Double
    /// After the phase.
    public var nUsedMMUPages = 0
    public var pages4K = 0, pages2M = 0, pages1G = 0
    /// Regions of the host's page size mapped huge, and split, in the guest's tree.
    public var hugeRegions = 0
    public var splitRegions = 0
    public var eligibleRegions = 0
    /// During the phase.
    public var tablesAllocated = 0
    public var tablesFreed = 0
    /// mmu_lock acquisitions: the kernel thread's (the ioctl's), and the
    /// vCPUs' locked faults.
    public var lockHolds = 0
    public var tlbFlushes = 0
    /// The vCPUs' exits (passes; a disable with the vCPUs running): all,
    /// fixed without mmu_lock, that built a mapping, that first zapped a
    /// large leaf or a table or split a large leaf in place (the TDP MMU
    /// from 6.2); and their mean latency.
    public var faults = 0
    public var fastFaults = 0
    public var mappingFaults = 0
    public var splitFaults = 0
    public var faultMeanNs: Double?
    /// get: nr_dirty_pages, and the seed rule's choice there.
    public var nrDirtyPages: Int?
    public var seedChoice: Strategy?
    /// get: timed by this branch of the seed's rule instead, on the same
    /// state as the rule's own harvest of the iteration (its regret).
    public var alternative: Strategy?
    /// disable: the vCPUs ran through it (the test's -e).
    public var vcpusRunning = false
    public var violations: [String] = []
    public var violationCount = 0

    public init(series: LifecycleKey, policy: EnablePolicy, strategy: Strategy, kernel: LifecycleKernel, phase: LifecyclePhase, ns: Double) {
        self.series = series
        self.policy = policy
        self.strategy = strategy
        self.kernel = kernel
        self.phase = phase
        self.ns = ns
    }

    public var verified: Bool { violationCount == 0 }

    /// "eager-split/tdp-masked 6.13"
    public var lifecycleLabel: String { "\(policy.rawValue)/\(strategy.rawValue) \(kernel.rawValue)" }
}

extension Reports {
    public static let lifecycleColumns = [
        "series", "paging", "sptes_per_gfn", "slot_pages", "backing", "vcpus", "policy", "strategy", "kernel", "era", "phase", "iteration",
        "disable", "ns", "n_used_mmu_pages", "pages_4k", "pages_2m", "pages_1g", "huge_regions", "split_regions", "eligible_regions",
        "tables_allocated", "tables_freed", "lock_holds", "tlb_flushes", "faults", "fast_faults", "mapping_faults", "split_faults",
        "fault_mean_ns", "nr_dirty_pages", "seed_choice", "alternative", "vcpus_running", "verified", "violations",
    ]

    public static func lifecycleTable(_ rows: [LifecycleRow]) -> CSVTable {
        var t = CSVTable(columns: lifecycleColumns)
        for r in rows {
            t.append([r.series.label, r.series.paging.rawValue, "\(r.series.sptesPerGFN)", "\(r.series.slotPages)", r.series.backing.rawValue,
                      "\(r.series.vcpus)", r.policy.rawValue, r.strategy.rawValue, r.kernel.rawValue, r.era.rawValue, r.phase.rawValue,
                      r.iteration.map { "\($0)" } ?? "", r.disable?.rawValue ?? "", fmt(r.ns, 0), "\(r.nUsedMMUPages)",
                      "\(r.pages4K)", "\(r.pages2M)", "\(r.pages1G)", "\(r.hugeRegions)", "\(r.splitRegions)", "\(r.eligibleRegions)",
                      "\(r.tablesAllocated)", "\(r.tablesFreed)", "\(r.lockHolds)", "\(r.tlbFlushes)", "\(r.faults)", "\(r.fastFaults)",
                      "\(r.mappingFaults)", "\(r.splitFaults)", r.faultMeanNs.map { fmt($0, 0) } ?? "",
                      r.nrDirtyPages.map { "\($0)" } ?? "", r.seedChoice?.rawValue ?? "", r.alternative?.rawValue ?? "",
                      r.vcpusRunning ? "1" : "0",
                      r.verified ? "1" : "0", "\(r.violationCount): " + r.violations.joined(separator: "; ")])
        }
        return t
    }

    /// dirty_log_perf_test's "%ld.%.9lds".
    static func seconds9(_ ns: Double) -> String {
        let total = Int64(ns.rounded())
        return String(format: "%lld.%09llds", total / 1_000_000_000, total % 1_000_000_000)
    }

    /// The lines dirty_log_perf_test prints, for each lifecycle of the
    /// rows, with the model's own figures after each: n_used_mmu_pages,
    /// leaves per level and the shadow pages the phase allocated (freed).
    public static func lifecycleLines(_ rows: [LifecycleRow]) -> [String] {
        var out: [String] = []
        var order: [String] = []
        for r in rows where !order.contains(r.series.label + "|" + r.lifecycleLabel) { order.append(r.series.label + "|" + r.lifecycleLabel) }
        for key in order {
            let rs = rows.filter { $0.series.label + "|" + $0.lifecycleLabel == key }
            guard let first = rs.first else { continue }
            out.append("\(first.series.label): \(first.policy.rawValue) (\(first.policy.commit)), \(first.strategy.rawValue), \(first.kernel.label)")
            func extra(_ r: LifecycleRow) -> String {
                var s = "  [n_used \(r.nUsedMMUPages), 4K \(r.pages4K) 2M \(r.pages2M) 1G \(r.pages1G)"
                if r.tablesAllocated > 0 || r.tablesFreed > 0 { s += ", +\(r.tablesAllocated)/-\(r.tablesFreed) pages" }
                if let c = r.seedChoice { s += ", seed: \(c.rawValue)" }
                return s + "]"
            }
            for r in rs {
                switch r.phase {
                case .populate: out.append("Populate memory time: \(seconds9(r.ns))" + extra(r))
                case .enable: out.append("Enabling dirty logging time: \(seconds9(r.ns))" + extra(r))
                case .dirty: out.append("Iteration \(r.iteration ?? 0) dirty memory time: \(seconds9(r.ns))" + extra(r))
                case .get where r.alternative != nil:
                    out.append("  same state, by \(r.alternative!.rawValue): \(seconds9(r.ns))")
                case .get: out.append("Iteration \(r.iteration ?? 0) get dirty log time: \(seconds9(r.ns))" + extra(r))
                case .clear: out.append("Iteration \(r.iteration ?? 0) clear dirty log time: \(seconds9(r.ns))" + extra(r))
                case .disable:
                    out.append("Disabling dirty logging time: \(seconds9(r.ns))" + extra(r) + " (\(r.disable?.rawValue ?? "")"
                        + (r.vcpusRunning ? ", vCPUs running)" : ")"))
                case .refault: out.append("  after \(r.disable?.rawValue ?? ""): next pass \(seconds9(r.ns))" + extra(r))
                }
            }
            let gets = rs.filter { $0.phase == .get && $0.alternative == nil }, clears = rs.filter { $0.phase == .clear }
            if !gets.isEmpty {
                let total = gets.reduce(0) { $0 + $1.ns }
                out.append("Get dirty log over \(gets.count) iterations took \(seconds9(total)). (Avg \(seconds9(total / Double(gets.count)))/iteration)")
            }
            if !clears.isEmpty {
                let total = clears.reduce(0) { $0 + $1.ns }
                out.append("Clear dirty log over \(clears.count) iterations took \(seconds9(total)). (Avg \(seconds9(total / Double(clears.count)))/iteration)")
            }
            out.append("")
        }
        return out
    }
}

/// One phase of the kernel's lifecycle (lifecycle-kvm.csv): the host's own
/// enable and disable, whatever its version does, timed through /dev/kvm.
public struct KernelLifecycleRow: Sendable {
    public var series: LifecycleKey
    /// kvm-get (KVM_GET_DIRTY_LOG re-protects) or kvm-get+clear (manual
    /// protect with initially-set: KVM_CLEAR_DIRTY_LOG protects).
    public var mode: KernelStrategy
    public var phase: LifecyclePhase
    public var iteration: Int?
    public var ns: Double
    /// After the phase, from the VM's binary statistics; nil where the
    /// kernel has none.
    public var pages4K: Int?
    public var pages2M: Int?
    public var pages1G: Int?
    /// The kernel ran the guest through its instruction emulator: no spte
    /// was built, the phases time its bookkeeping only.
    public var emulated = false
    /// 4 KiB leaves of the VM's that map its code slot (the guest's code
    /// and write list, `KVMGuest.codeSlotPagesTouched`), not the slot the
    /// lifecycle measures: pages_4k less this is that slot's.
    public var codeSlotPages4K: Int?
    /// Whose clock `ns` was read on (the kernel lab's: an emulator's).
    public var clock = KernelClock.host
    /// The VM's binary statistics after the phase (`KVM_GET_STATS_FD`),
    /// those of `Reports.kernelStatColumns` the kernel exports:
    /// cumulative counts since the VM was created.
    public var stats: [String: UInt64] = [:]

    public init(series: LifecycleKey, mode: KernelStrategy, phase: LifecyclePhase, iteration: Int? = nil, ns: Double) {
        self.series = series
        self.mode = mode
        self.phase = phase
        self.iteration = iteration
        self.ns = ns
    }
}

extension Reports {
    /// The VM statistics lifecycle-kvm.csv carries after each phase,
    /// cumulative: the counts the kernel lab sets beside the model's.
    public static let kernelStatColumns = ["remote_tlb_flush", "remote_tlb_flush_requests", "mmu_shadow_zapped", "mmu_cache_miss",
                                           "mmu_pte_write", "mmu_pde_zapped", "mmu_flooded", "mmu_recycled", "mmu_unsync",
                                           "nx_lpage_splits", "max_mmu_rmap_size"]

    public static let kernelLifecycleColumns = ["series", "slot_pages", "backing", "mode", "phase", "iteration", "ns",
                                                "pages_4k", "pages_2m", "pages_1g", "code_slot_pages_4k", "emulated", "clock"] + kernelStatColumns

    public static func kernelLifecycleTable(_ rows: [KernelLifecycleRow]) -> CSVTable {
        var t = CSVTable(columns: kernelLifecycleColumns)
        for r in rows {
            func count(_ v: Int?) -> String { v.map { "\($0)" } ?? "" }
            var cells: [String] = [r.series.label + " (kvm)", "\(r.series.slotPages)", r.series.backing.rawValue, r.mode.rawValue]
            cells += [r.phase.rawValue, count(r.iteration), fmt(r.ns, 0), count(r.pages4K), count(r.pages2M), count(r.pages1G)]
            cells += [count(r.codeSlotPages4K), r.emulated ? "1" : "0", r.clock.rawValue]
            cells += kernelStatColumns.map { name in r.stats[name].map { "\($0)" } ?? "" }
            t.append(cells)
        }
        return t
    }

    /// dirty_log_perf_test's lines for the kernel's lifecycles.
    public static func kernelLifecycleLines(_ rows: [KernelLifecycleRow]) -> [String] {
        var out: [String] = []
        var keys: [String] = []
        for r in rows where !keys.contains(r.series.label + r.mode.rawValue) { keys.append(r.series.label + r.mode.rawValue) }
        for k in keys {
            let rs = rows.filter { $0.series.label + $0.mode.rawValue == k }
            out.append("\(rs[0].series.label) (kvm): \(rs[0].mode.rawValue)" + (rs[0].emulated ? ", guest emulated: no spte built" : "")
                + (rs[0].clock == .emulated ? ", times read under QEMU's emulation (the kernel lab)" : ""))
            func stats(_ r: KernelLifecycleRow) -> String {
                guard let a = r.pages4K, let b = r.pages2M, let c = r.pages1G else { return "" }
                return "  [4K \(a) 2M \(b) 1G \(c)]"
            }
            for r in rs {
                switch r.phase {
                case .populate: out.append("Populate memory time: \(seconds9(r.ns))" + stats(r))
                case .enable: out.append("Enabling dirty logging time: \(seconds9(r.ns))" + stats(r))
                case .dirty: out.append("Iteration \(r.iteration ?? 0) dirty memory time: \(seconds9(r.ns))" + stats(r))
                case .get: out.append("Iteration \(r.iteration ?? 0) get dirty log time: \(seconds9(r.ns))" + stats(r))
                case .clear: out.append("Iteration \(r.iteration ?? 0) clear dirty log time: \(seconds9(r.ns))" + stats(r))
                case .disable: out.append("Disabling dirty logging time: \(seconds9(r.ns))" + stats(r))
                case .refault: out.append("  next pass \(seconds9(r.ns))" + stats(r))
                }
            }
            out.append("")
        }
        return out
    }
}
