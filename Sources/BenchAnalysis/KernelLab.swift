import DirtyLogCore

/// The phases KVM selftests' dirty_log_perf_test printed, in seconds.
public struct SelftestPhases: Sendable, Equatable {
    public var populate: Double?
    public var enable: Double?
    public var dirty: [Int: Double] = [:]
    public var get: [Int: Double] = [:]
    public var clear: [Int: Double] = [:]
    public var disable: Double?

    public init() {}

    /// The phase lines of the test's output ("Populate memory time:
    /// 0.048695480s", "Iteration 2 get dirty log time: ..."); anything else
    /// is passed over.
    public static func parse(_ text: String) -> SelftestPhases {
        var p = SelftestPhases()
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let seconds = Double(parts[1].trimmingCharacters(in: .whitespaces).dropLast()) else { continue }
            let name = parts[0].trimmingCharacters(in: .whitespaces)
            switch name {
            case "Populate memory time": p.populate = seconds
            case "Enabling dirty logging time": p.enable = seconds
            case "Disabling dirty logging time": p.disable = seconds
            default:
                let words = name.split(separator: " ")
                guard words.count >= 3, words[0] == "Iteration", let k = Int(words[1]) else { continue }
                if name.hasSuffix("dirty memory time") { p.dirty[k] = seconds }
                if name.hasSuffix("get dirty log time") { p.get[k] = seconds }
                if name.hasSuffix("clear dirty log time") { p.clear[k] = seconds }
            }
        }
        return p
    }

    /// The phase's time, nil where the test printed none.
    public func seconds(_ phase: LifecyclePhase, iteration: Int?) -> Double? {
        switch phase {
        case .populate: populate
        case .enable: enable
        case .dirty: iteration.flatMap { dirty[$0] }
        case .get: iteration.flatMap { get[$0] }
        case .clear: iteration.flatMap { clear[$0] }
        case .disable: disable
        case .refault: nil
        }
    }
}

/// One phase of one lifecycle in the kernel lab: the kernel's counts and
/// the model's on the same workload, side by side (kernel-lab.csv).
public struct KernelLabRow: Sendable {
    /// `tdp` (kvm_amd with nested paging) or `shadow` (npt=0).
    public var paging: String
    public var slotPages: Int
    public var backing: Backing
    /// kvm-get or kvm-get+clear (manual protect, initially set).
    public var mode: String
    public var phase: LifecyclePhase
    public var iteration: Int?
    /// The model's enable and disable policies and era for the kernel.
    public var enablePolicy: EnablePolicy
    public var disablePolicy: DisablePolicy
    public var era: KernelEra
    /// The slot's leaves after the phase (the kernel's pages_* less its
    /// code slot's 4 KiB leaves), each side.
    public var kernelLeaves: [Int]
    public var modelLeaves: [Int]
    /// kvm_flush_remote_tlbs() calls during the phase: the kernel's
    /// remote_tlb_flush_requests, the model's flushes.
    public var kernelFlushes: Int?
    public var modelFlushes: Int
    /// Shadow pages zapped during the phase: the kernel's
    /// mmu_shadow_zapped (the shadow MMU's count; the TDP MMU keeps none),
    /// the model's tables freed.
    public var kernelZapped: Int?
    public var modelFreed: Int
    /// Why the counts differ, when they do: a named kernel behaviour.
    public var explanation: String = ""

    public init(paging: String, slotPages: Int, backing: Backing, mode: String, phase: LifecyclePhase, iteration: Int?,
                enablePolicy: EnablePolicy, disablePolicy: DisablePolicy, era: KernelEra, kernelLeaves: [Int], modelLeaves: [Int],
                kernelFlushes: Int?, modelFlushes: Int, kernelZapped: Int?, modelFreed: Int) {
        self.paging = paging
        self.slotPages = slotPages
        self.backing = backing
        self.mode = mode
        self.phase = phase
        self.iteration = iteration
        self.enablePolicy = enablePolicy
        self.disablePolicy = disablePolicy
        self.era = era
        self.kernelLeaves = kernelLeaves
        self.modelLeaves = modelLeaves
        self.kernelFlushes = kernelFlushes
        self.modelFlushes = modelFlushes
        self.kernelZapped = kernelZapped
        self.modelFreed = modelFreed
    }

    /// Whether the leaves per level agree.
    public var leavesAgree: Bool { kernelLeaves == modelLeaves }

    /// The lifecycle the row belongs to: paging, slot size, backing, mode.
    public var workload: String { "\(paging) \(Bytes.pages(slotPages)) \(backing.rawValue) \(mode)" }
}

extension Reports {
    public static let kernelLabColumns = [
        "paging", "slot_pages", "backing", "mode", "phase", "iteration", "model_enable", "model_disable", "model_era",
        "kernel_pages_4k", "model_pages_4k", "kernel_pages_2m", "model_pages_2m", "kernel_pages_1g", "model_pages_1g", "leaves_agree",
        "kernel_tlb_flush_requests", "model_tlb_flushes", "kernel_shadow_zapped", "model_tables_freed", "explanation",
    ]

    public static func kernelLabTable(_ rows: [KernelLabRow]) -> CSVTable {
        var t = CSVTable(columns: kernelLabColumns)
        for r in rows {
            var cells = [r.paging, "\(r.slotPages)", r.backing.rawValue, r.mode, r.phase.rawValue, r.iteration.map { "\($0)" } ?? ""]
            cells += [r.enablePolicy.rawValue, r.disablePolicy.rawValue, r.era.rawValue]
            for level in 0..<3 { cells += ["\(r.kernelLeaves[level])", "\(r.modelLeaves[level])"] }
            cells += [r.leavesAgree ? "true" : "false", r.kernelFlushes.map { "\($0)" } ?? "", "\(r.modelFlushes)"]
            cells += [r.kernelZapped.map { "\($0)" } ?? "", "\(r.modelFreed)", r.explanation]
            t.append(cells)
        }
        return t
    }

    /// kernel-lab.md: what the counts are, the kernel's threshold points,
    /// a section per lifecycle (`KernelLabRow.workload`, in the rows'
    /// order) and dirty_log_perf_test's lines beside the harness's.
    public static func kernelLabDocument(rows: [KernelLabRow], kernelPoints: Int, kernelPointsVerified: Int, fewestKernelSptes: Int?,
                                         sideBySide: [(label: String, lines: [String])]) -> String {
        var md = "# The kernel lab: Linux 6.1's KVM under emulation beside the model\n\n"
        md += "Counts only: every count is the kernel's own (its binary statistics after each phase) or the model's; "
        md += "the lab's times are QEMU's software emulation's and are set only against each other (same boot). "
        md += "Leaves are the measured slot's (the kernel's pages_* less its code slot's 4 KiB leaves); flushes are "
        md += "kvm_flush_remote_tlbs() calls during the phase (the kernel's remote_tlb_flush_requests); zapped is the kernel's "
        md += "mmu_shadow_zapped, which 6.1 counts in __kvm_mmu_prepare_zap_page() alone (none under the TDP MMU: -), beside the "
        md += "model's tables freed.\n\n"
        md += "Kernel threshold points: \(kernelPointsVerified) of \(kernelPoints) verified exactly against the pages the guest wrote"
        md += fewestKernelSptes.map { "; the kernel held at least \($0) 4 KiB sptes at each (pages_4k)" } ?? ""
        md += ".\n\n"
        let byWorkload = Dictionary(grouping: rows, by: \.workload)
        var seen: Set<String> = []
        for workload in rows.map(\.workload) where seen.insert(workload).inserted {
            let section = byWorkload[workload]!, first = section[0]
            md += "## \(workload)\n\nModel: enable `\(first.enablePolicy.rawValue)`, disable `\(first.disablePolicy.rawValue)`, era \(first.era.label)"
            md += first.paging == "shadow" ? ", the shadow MMU (no TDP MMU: npt=0)" : ", the TDP MMU"
            md += ".\n\n" + kernelLabMarkdown(section) + "\n"
        }
        if !sideBySide.isEmpty {
            md += "## dirty_log_perf_test beside the harness\n\nSame boot, both emulated: harness's kernel lifecycle against the selftest with the matching options.\n\n"
            md += "The same ioctls under the same names: enabling and disabling logging (KVM_SET_USER_MEMORY_REGION), "
            md += "KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG of the whole slot in one call, on a slot of the same size and backing. "
            md += "Different work under the same names: the harness's guest runs without paging of its own (flat 32-bit) and "
            md += "stores one byte a page from a list, one vCPU, halting after each pass; the selftest's guest runs in long mode "
            md += "on its own 4 KiB page tables and stores 8 bytes a page in a loop, and its populate time includes its vCPU "
            md += "thread's start. Under shadow paging (npt=0) the selftest's page tables are shadowed (indirect shadow pages, "
            md += "a guest walk per fault) where the harness's guest is mapped directly (nonpaging): there the selftest's "
            md += "populate and passes do more, and their ratios say so.\n\n"
            for s in sideBySide { md += "### \(s.label)\n\n```\n" + s.lines.joined(separator: "\n") + "\n```\n\n" }
        }
        return md
    }

    /// One lifecycle's counts, kernel against model, as a Markdown table.
    public static func kernelLabMarkdown(_ rows: [KernelLabRow]) -> String {
        var md = "| phase | 4K kernel / model | 2M kernel / model | 1G kernel / model | flushes kernel / model | zapped kernel / model | |\n"
        md += "|---|---:|---:|---:|---:|---:|---|\n"
        for r in rows {
            let phase = r.phase.rawValue + (r.iteration.map { " \($0)" } ?? "")
            func pair(_ l: Int) -> String { "\(r.kernelLeaves[l]) / \(r.modelLeaves[l])" }
            md += "| \(phase) | \(pair(0)) | \(pair(1)) | \(pair(2)) | \(r.kernelFlushes.map { "\($0)" } ?? "-") / \(r.modelFlushes) | "
            let verdict = !r.leavesAgree ? "**differs**: " + r.explanation : r.explanation.isEmpty ? "same" : "leaves same; " + r.explanation
            md += "\(r.kernelZapped.map { "\($0)" } ?? "-") / \(r.modelFreed) | \(verdict) |\n"
        }
        return md
    }

    /// dirty_log_perf_test's phase lines for the harness's kernel
    /// lifecycle and the selftest, same boot, with their ratio.
    public static func sideBySideLines(harness: [KernelLifecycleRow], selftest: SelftestPhases) -> [String] {
        var out: [String] = []
        for r in harness where r.phase != .refault {
            let name: String
            switch r.phase {
            case .populate: name = "Populate memory time"
            case .enable: name = "Enabling dirty logging time"
            case .dirty: name = "Iteration \(r.iteration ?? 0) dirty memory time"
            case .get: name = "Iteration \(r.iteration ?? 0) get dirty log time"
            case .clear: name = "Iteration \(r.iteration ?? 0) clear dirty log time"
            case .disable: name = "Disabling dirty logging time"
            case .refault: continue
            }
            let h = r.ns / 1e9
            let s = selftest.seconds(r.phase, iteration: r.iteration)
            let ratio = s.map { $0 > 0 ? String(format: "%.2fx", h / $0) : "-" } ?? "-"
            out.append(name.padding(toLength: 36, withPad: " ", startingAt: 0)
                + "harness \(seconds9(r.ns))  selftest \(s.map { String(format: "%.9fs", $0) } ?? "-".padding(toLength: 12, withPad: " ", startingAt: 0))  \(ratio)")
        }
        return out
    }
}
