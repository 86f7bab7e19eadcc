import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// The kernel lab's report (`bench lab-report`): what `scripts/kernel-lab`
/// brought back from each boot (the harness's kernel lifecycles and
/// threshold series, dirty_log_perf_test's output) beside the model run
/// here on the same workloads at that kernel's rules.
///
/// The model for each boot of the lab's kernel (Linux 6.1):
/// - tdp (kvm_amd npt=1): the TDP MMU. kvm-get: eager split at enable
///   (a3fe5dbd; eager_page_split is on by default), kvm-get+clear: the
///   split at the first KVM_CLEAR_DIRTY_LOG of a range with initially-set
///   (cb00a70b); disable: 6.1's zap of collapsible tables, a flush each
///   (85f44f8cc07b).
/// - shadow (npt=0): the guest has no paging of its own, so the shadow MMU
///   maps it directly (nonpaging mode) and the TDP MMU never runs. kvm-get:
///   kvm_mmu_slot_remove_write_access() write-protects the leaves of every
///   level through the rmaps (6.1's kvm_mmu_slot_try_split_huge_pages()
///   splits only the TDP MMU's); kvm-get+clear: the first CLEAR
///   write-protects a range's large leaf whole (kvm_mmu_try_split_huge_pages()
///   returns unless the TDP MMU runs); disable: the rmap zap of
///   collapsible sptes (3ea3b7fa).
public struct KernelLab {
    public let folder: String

    public init(folder: String) { self.folder = folder }

    /// What the report found.
    public struct Result {
        public var rows: [KernelLabRow] = []
        /// Per lifecycle: its label and dirty_log_perf_test's lines beside the harness's.
        public var sideBySide: [(label: String, lines: [String])] = []
        /// Kernel threshold points: verified ones, and the fewest 4 KiB
        /// sptes the kernel held at one.
        public var kernelPoints = 0, kernelPointsVerified = 0
        public var fewestKernelSptes: Int?
        /// Lifecycles backed by huge pages in which the kernel never held
        /// a huge leaf: the backing did not reach it, and its counts
        /// cannot speak for huge pages.
        public var hugeMissing: [String] = []
    }

    /// The model's policies and era for a boot and a harvest mode.
    public static func modelPolicies(paging: String, mode: KernelStrategy) -> (enable: EnablePolicy, disable: DisablePolicy) {
        if paging == "tdp" { return (mode == .getClear ? .splitOnClear : .eagerSplit, .zap) }
        return (mode == .getClear ? .splitOnClear : .wrprot, .zapRmap)
    }

    public func run(progress: Progress) throws -> Result {
        var out = Result()
        let fm = FileManager.default
        for paging in ["tdp", "shadow"] {
            let dir = folder + "/" + paging
            guard fm.fileExists(atPath: dir) else { continue }
            for file in Self.files(named: "points.csv", under: dir) {
                let t = try CSVTable.parse(String(contentsOfFile: file, encoding: .utf8), file: file)
                for r in t.records where r["backend"] == "kvm" {
                    out.kernelPoints += 1
                    if r["verified"] == "true" { out.kernelPointsVerified += 1 }
                    if let n = Int(r["kernel_sptes_4k"] ?? "") { out.fewestKernelSptes = min(out.fewestKernelSptes ?? n, n) }
                }
            }
            for file in Self.files(named: "lifecycle-kvm.csv", under: dir) {
                let t = try CSVTable.parse(String(contentsOfFile: file, encoding: .utf8), file: file)
                var groups: [String: [[String: String]]] = [:]
                var order: [String] = []
                for r in t.records {
                    let k = (r["series"] ?? "") + "|" + (r["mode"] ?? "")
                    if groups[k] == nil { order.append(k) }
                    groups[k, default: []].append(r)
                }
                for k in order {
                    let records = groups[k]!
                    guard let first = records.first, let slotPages = Int(first["slot_pages"] ?? ""),
                          let backing = Backing(rawValue: first["backing"] ?? ""), let mode = KernelStrategy(rawValue: first["mode"] ?? "")
                    else { continue }
                    progress.note("lab-report: \(paging) \(first["series"] ?? "") \(mode.rawValue): the model on the same workload")
                    if backing != .page4K, !records.contains(where: { (Int($0["pages_2m"] ?? "") ?? 0) + (Int($0["pages_1g"] ?? "") ?? 0) > 0 }) {
                        out.hugeMissing.append("\(paging) \(first["series"] ?? "") \(mode.rawValue)")
                    }
                    let rows = try compare(paging: paging, slotPages: slotPages, backing: backing, mode: mode, kernel: records)
                    out.rows += rows
                    let kernelRows = records.compactMap(Self.kernelRow)
                    let selftest = folder + "/" + paging + "/dirty_log_perf_test-\(backing.rawValue)\(mode == .get ? "-g" : "").txt"
                    if let text = try? String(contentsOfFile: selftest, encoding: .utf8) {
                        let label = "\(paging) \(Bytes.pages(slotPages)) \(backing.rawValue) \(mode.rawValue) (selftest \(mode == .get ? "-g" : "manual protect"))"
                        out.sideBySide.append((label, Reports.sideBySideLines(harness: kernelRows, selftest: SelftestPhases.parse(text))))
                    }
                }
            }
        }
        return out
    }

    /// Files called `name` in the run folders below `dir` (dir/step/run-id/name).
    static func files(named name: String, under dir: String) -> [String] {
        let fm = FileManager.default
        guard let walk = fm.enumerator(atPath: dir) else { return [] }
        return walk.compactMap { ($0 as? String).flatMap { $0.hasSuffix("/" + name) ? dir + "/" + $0 : nil } }.sorted()
    }

    /// A lifecycle-kvm.csv row, as far as the side-by-side lines need it.
    static func kernelRow(_ r: [String: String]) -> KernelLifecycleRow? {
        guard let phase = LifecyclePhase(rawValue: r["phase"] ?? ""), let ns = Double(r["ns"] ?? ""),
              let mode = KernelStrategy(rawValue: r["mode"] ?? ""), let backing = Backing(rawValue: r["backing"] ?? ""),
              let pages = Int(r["slot_pages"] ?? "") else { return nil }
        let key = LifecycleKey(paging: .tdp, sptesPerGFN: 1, slotPages: pages, backing: backing, vcpus: 1)
        return KernelLifecycleRow(series: key, mode: mode, phase: phase, iteration: Int(r["iteration"] ?? ""), ns: ns)
    }

    /// The model's lifecycle on the kernel's workload, phase by phase beside the kernel's.
    func compare(paging: String, slotPages: Int, backing: Backing, mode: KernelStrategy, kernel: [[String: String]]) throws -> [KernelLabRow] {
        let (enable, disable) = Self.modelPolicies(paging: paging, mode: mode)
        let iterations = kernel.compactMap { Int($0["iteration"] ?? "") }.max() ?? 1
        var spec = LifecycleSpec(paging: .tdp, pagesPerVCPU: slotPages, vcpus: 1, backing: backing, iterations: iterations,
                                 policies: [enable], disablePolicies: [disable], manualProtect: mode == .getClear,
                                 vcpusRunDuringDisable: false)
        spec.tdpMMUEnabled = paging == "tdp"
        // The lab's guest runs without paging of its own: under shadow paging
        // KVM maps it in nonpaging mode, 2 MiB leaves at most.
        spec.maxLeafLevel = paging == "tdp" ? 3 : 2
        let model = try LifecycleSeries(spec: spec, settings: MeasureSettings(), progress: Progress(quiet: true)).run().rows
        var rows: [KernelLabRow] = []
        var previous: [String: String] = [:]
        for k in kernel {
            guard let phase = LifecyclePhase(rawValue: k["phase"] ?? "") else { continue }
            let iteration = Int(k["iteration"] ?? "")
            defer { previous = k }
            // The model's GET and CLEAR of kvm-get+clear are one harvest row
            // (clear-chunked): its counts are the CLEAR's; the GET only
            // copies the bitmap, so the leaves after it are the pass's.
            let modelPhase: LifecyclePhase = mode != .getClear ? phase : phase == .clear ? .get : phase == .get ? .dirty : phase
            guard let m = model.first(where: { $0.phase == modelPhase && $0.iteration == iteration
                && ($0.disable == nil || $0.disable == disable) }) else { continue }
            let getOfManual = mode == .getClear && phase == .get
            func int(_ name: String) -> Int? { Int(k[name] ?? "") }
            func delta(_ name: String) -> Int? {
                guard let now = UInt64(k[name] ?? "") else { return nil }
                return Int(now &- (UInt64(previous[name] ?? "") ?? 0))
            }
            let kernelLeaves = [(int("pages_4k") ?? 0) - (int("code_slot_pages_4k") ?? 0), int("pages_2m") ?? 0, int("pages_1g") ?? 0]
            var row = KernelLabRow(paging: paging, slotPages: slotPages, backing: backing, mode: mode.rawValue, phase: phase,
                                   iteration: iteration, enablePolicy: enable, disablePolicy: disable, era: m.era,
                                   kernelLeaves: kernelLeaves, modelLeaves: [m.pages4K, m.pages2M, m.pages1G],
                                   kernelFlushes: delta("remote_tlb_flush_requests"), modelFlushes: getOfManual ? 0 : m.tlbFlushes,
                                   kernelZapped: paging == "tdp" ? nil : delta("mmu_shadow_zapped"), modelFreed: getOfManual ? 0 : m.tablesFreed)
            row.explanation = Self.explain(row)
            rows.append(row)
        }
        return rows
    }

    /// The kernel behaviour behind a difference the lab has seen; empty
    /// where the counts agree, "not explained" for one nobody has named.
    static func explain(_ r: KernelLabRow) -> String {
        if !r.leavesAgree { return "not explained" }
        guard let k = r.kernelFlushes, k != r.modelFlushes else { return "" }
        if r.paging == "shadow", r.phase == .disable, k > r.modelFlushes {
            // Timing, not a rule: under emulation a walk of a large slot
            // outlasts a scheduler tick.
            return "flushes: the kernel's rmap zap yielded mmu_lock on need_resched() mid-walk, flushing first "
                + "(slot_handle_level_range(), flush_on_yield); the model yields only to a waiting thread, and none waits here"
        }
        return "flushes not explained"
    }
}
