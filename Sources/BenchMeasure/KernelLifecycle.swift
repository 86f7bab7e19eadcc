import BenchAnalysis
import DirtyLogCore
import Foundation
import HostKVM

/// The lifecycle on the real kernel: the same guest memory and backing as
/// a model series, the host's own enable and disable through
/// KVM_SET_USER_MEMORY_REGION, in its two modes (KVM_GET_DIRTY_LOG
/// re-protecting; manual protect with initially-set, KVM_CLEAR_DIRTY_LOG
/// re-protecting), each phase timed once and the VM's pages_4k/2m/1g read
/// after it. One vCPU writes the whole guest; it is stopped while logging
/// is disabled. Within the kernel budget: after the populate, a series
/// whose remaining passes would exceed it is skipped, and said to be.
public final class KernelLifecycleSeries {
    public let spec: LifecycleSpec
    public let settings: KernelSettings
    private let progress: Progress

    public init(spec: LifecycleSpec, settings: KernelSettings, progress: Progress) {
        self.spec = spec
        self.settings = settings
        self.progress = progress
    }

    public struct Outcome {
        public var rows: [KernelLifecycleRow] = []
        public var skipped: [SkipNote] = []
        public var notes: [String] = []
        public var phases = PhaseTimes()
    }

    public func run(device: KVMDevice) throws -> Outcome {
        var out = Outcome()
        let label = spec.key.label + " (kvm)"
        let started = MonotonicClock.now()
        for mode in [KernelStrategy.get, .getClear] {
            if Termination.requested != nil { break }
            progress.point(mode.rawValue)
            let guest = try KVMGuest(device: device, lifecyclePages: spec.slotPages, backing: spec.backing)
            var rows: [KernelLifecycleRow] = []
            var emulated = false
            func record(_ phase: LifecyclePhase, _ k: Int? = nil, _ body: () throws -> Void) throws {
                let t0 = MonotonicClock.now()
                try body()
                try append(phase, k, ns: MonotonicClock.now() - t0)
            }
            func append(_ phase: LifecyclePhase, _ k: Int?, ns: UInt64) throws {
                var r = KernelLifecycleRow(series: spec.key, mode: mode, phase: phase, iteration: k, ns: Double(ns))
                let stats = try guest.vmStats()
                if let k4 = stats["pages_4k"], let m2 = stats["pages_2m"], let g1 = stats["pages_1g"] {
                    r.pages4K = Int(k4)
                    r.pages2M = Int(m2)
                    r.pages1G = Int(g1)
                }
                r.stats = stats.filter { Reports.kernelStatColumns.contains($0.key) }
                r.codeSlotPages4K = guest.codeSlotPagesTouched
                r.clock = settings.clock
                r.emulated = emulated
                rows.append(r)
            }
            // The budget, judged after the populate's first 1/16: every pass
            // still to come, of both modes, at its pace.
            let first = max(1, spec.slotPages / 16)
            let t0 = MonotonicClock.now()
            try guest.writePages(0..<first)
            let perPass = MonotonicClock.seconds(since: t0) * Double(spec.slotPages) / Double(first)
            let spent = MonotonicClock.seconds(since: started)
            let left = perPass * (Double(spec.iterations + 2) * (mode == .get ? 2 : 1) - Double(first) / Double(spec.slotPages))
            guard spent + left <= settings.budgetSeconds else {
                out.skipped.append(SkipNote(series: label, backend: .kvm, strategy: mode == .get ? "kvm-get kvm-get+clear" : mode.rawValue,
                                            reason: String(format: "its %d passes at %.2f s each (the populate's first sixteenth) would pass the kernel budget of %.0f s (--kvm-budget)",
                                                           spec.iterations + 2, perPass, settings.budgetSeconds)))
                break
            }
            try guest.writePages(first..<spec.slotPages)
            try append(.populate, nil, ns: MonotonicClock.now() - t0)
            if let p = rows.last, (p.pages4K ?? 0) + (p.pages2M ?? 0) + (p.pages1G ?? 0) == 0, p.pages4K != nil {
                emulated = true
                rows[rows.count - 1].emulated = true
            }
            if mode == .getClear {
                guard try guest.enableInitiallySet() else {
                    out.skipped.append(SkipNote(series: label, backend: .kvm, strategy: mode.rawValue,
                                                reason: "KVM_DIRTY_LOG_INITIALLY_SET is not offered"))
                    continue
                }
            }
            try record(.enable) { try guest.setDirtyLogging(true) }
            for k in 1...spec.iterations {
                try record(.dirty, k) { try guest.writeEveryPage() }
                try record(.get, k) { try guest.getDirtyLog() }
                if mode == .getClear { try record(.clear, k) { try guest.clearDirtyLog() } }
            }
            try record(.disable) { try guest.setDirtyLogging(false) }
            try record(.refault) { try guest.writeEveryPage() }
            out.rows += rows
            if emulated {
                let n = "\(label): the kernel emulates the guest (no spte after populating): its lifecycle times the dirty log's bookkeeping, not write protection"
                if !out.notes.contains(n) { out.notes.append(n) }
            }
        }
        if !out.rows.isEmpty && (spec.vcpus > 1 || spec.vcpusRunDuringDisable) {
            out.notes.append("\(label): one vCPU writes the whole guest, stopped while logging is disabled")
        }
        out.phases.add(.kernelWrites, MonotonicClock.seconds(since: started))
        return out
    }
}
