/// A way to write-protect a slot at harvest time, with the protocol it
/// hands the log out by: the names the model, the reports and the command
/// line share. What each does is in ShadowMMU's `Strategies/`.
public enum Strategy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// kvm_mmu_slot_remove_write_access() at the seed: walk every shadow page of the VM.
    case slotWalk = "slot-walk"
    /// The seed's new branch as written: per dirty page, lock and walk its
    /// rmaps, release the lock; one TLB flush after the last, outside it.
    case rmap
    /// The same branch as 6dbf79e7 fixed it ("KVM: Fix write protection race
    /// during dirty logging"): one hold of mmu_lock over every dirty page
    /// and the TLB flush.
    case rmapFixed = "rmap-fixed"
    /// The seed's rule: `rmap` when nr_dirty_pages < n_used_mmu_pages, else `slot-walk`.
    case seed
    /// KVM_GET_DIRTY_LOG since Linux 3.4 (kvm_mmu_write_protect_pt_masked,
    /// 5dc99b23; one lock hold and xchg per word since 60c34612): per
    /// non-zero bitmap word, xchg it to zero and write-protect the 4 KiB
    /// rmap of each set bit. With vCPUs running, as the shadow MMU of 4.2
    /// to 5.11 ran it: the TLB flush after unlocking (198c74f4).
    case masked
    /// The whole slot through its rmap arrays, every gfn at every level
    /// (slot_handle_level(), the shadow MMU's way to enable logging),
    /// yielding mmu_lock when another thread waits for it.
    case rmapWalk = "rmap-walk"
    /// The TDP MMU's range walk, kvm_tdp_mmu_wrprot_slot(): the paging
    /// structure over the slot's gfn range, no rmaps. In the kernel this is
    /// the path that enables logging (kvm_mmu_slot_remove_write_access()),
    /// under mmu_lock's read side since 5.13; timed here as if it served a
    /// harvest. Two-dimensional paging only.
    case tdpWalk = "tdp-walk"
    /// The same structure visited per bitmap word, for its set bits only
    /// (clear_dirty_pt_masked). Two-dimensional paging only.
    case tdpMasked = "tdp-masked"
    /// PML: harvest clears dirty bits instead of writable bits; guest
    /// writes do not fault, the hardware logs them.
    case dbitClear = "dbit-clear"
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: GET only copies the bitmap, CLEAR
    /// re-protects in 64-page-aligned chunks, the lock taken per chunk.
    case clearChunked = "clear-chunked"
    /// KVM_CAP_DIRTY_LOG_RING: per-vCPU rings of (slot, offset); harvest
    /// collects them and resets, merging entries within 64 pages into masks.
    case ring
    /// The project's rule: per harvest, the cheapest of the KVM_GET_DIRTY_LOG
    /// family by a cost model measured on the machine.
    case adaptive

    /// What a run measures when no strategy is named: every one but
    /// rmap-fixed, which only differs from rmap when vCPUs run through the
    /// harvest (the concurrent scenario's default has it).
    public static let sweepDefaults: [Strategy] = allCases.filter { $0 != .rmapFixed }

    /// What the concurrent scenario measures by default: the seed's two
    /// branches, its branch as fixed, and the kernel's later bitmap strategies.
    public static let concurrentDefaults: [Strategy] = [.slotWalk, .rmap, .rmapFixed, .masked, .tdpWalk, .tdpMasked]

    /// Whether vCPUs can run through the strategy's harvest in the model: the
    /// write-protecting KVM_GET_DIRTY_LOG family (dbit-clear, clear-chunked,
    /// ring and adaptive are measured without them).
    public var runsConcurrently: Bool { Self.getDirtyLogFamily.contains(self) || self == .rmapFixed || self == .seed }

    /// Whether a harvest by the strategy that chose `choice` (a rule's)
    /// releases mmu_lock before its TLB flush while page-table shadowing of
    /// its era flushes only when it cleared the writable bit itself: the
    /// seed's race (rmap, and the seed's rule when it picks rmap). Its race
    /// violations are counted, not failed.
    public func racesWithShadowing(choice: Strategy?) -> Bool {
        self == .rmap || (self == .seed && choice == .rmap)
    }

    /// The kernel whose mmu_lock, fault paths and page-table shadowing a
    /// concurrent harvest by this strategy runs with: the seed's branches
    /// in 3.3's; masked and rmap-walk in the shadow MMU of 4.2 to 5.11; the
    /// TDP MMU's walks in 5.14's.
    public var era: KernelEra {
        switch self {
        case .slotWalk, .rmap, .rmapFixed, .seed: .linux3_3to3_5
        case .tdpWalk, .tdpMasked: .linux5_14on
        default: .linux4_2to5_11
        }
    }

    /// What the seed's rule picks at this many dirty pages.
    @inline(__always)
    public static func seedChoice(nrDirtyPages: Int, nUsedMMUPages: Int) -> Strategy {
        nrDirtyPages < nUsedMMUPages ? .rmap : .slotWalk
    }

    /// Strategies that pick another per harvest rather than protect on their own.
    public var isRule: Bool { self == .seed || self == .adaptive }

    /// Whether the strategy walks the two-dimensional-paging structure, so
    /// needs the VM to have one.
    public var needsTDP: Bool { self == .tdpWalk || self == .tdpMasked }

    /// Whether guest writes are logged to dirty rings rather than the bitmap.
    public var usesRing: Bool { self == .ring }

    /// Whether the harvest has two phases timed apart (GET, then CLEAR).
    public var hasTwoPhases: Bool { self == .clearChunked }

    /// The strategies one KVM_GET_DIRTY_LOG implementation could switch
    /// between per call: same protocol with user space (a bitmap handed out,
    /// pages write-protected), same write path. Rules are measured against
    /// the best of these. dbit-clear, clear-chunked and ring change the
    /// protocol or the hardware path and are reported beside them.
    public static let getDirtyLogFamily: [Strategy] = [.slotWalk, .rmap, .masked, .rmapWalk, .tdpWalk, .tdpMasked]

    /// What adaptive chooses among.
    public static let adaptiveCandidates: [Strategy] = [.masked, .tdpMasked, .rmap, .slotWalk, .rmapWalk, .tdpWalk]

    /// The model strategy that does what the kernel's KVM_GET_DIRTY_LOG does
    /// with the shadow MMU (tdp_mmu=N): per non-zero bitmap word, under one
    /// hold of mmu_lock, write-protect the word's pages through their rmaps
    /// (kvm_mmu_write_protect_pt_masked; MODEL.md's "masked rmap").
    public static let counterpartOfKernelGet = Strategy.masked

    public var summary: String {
        switch self {
        case .slotWalk: "every shadow page on the VM-wide list, the slot's tables scanned whole (seed era)"
        case .rmap: "per dirty page: take mmu_lock, walk its 4 KiB rmap, look up its large-page rmaps (the seed's branch)"
        case .rmapFixed: "rmap under one hold of mmu_lock, the TLB flush inside it (6dbf79e7's fix of the seed's race)"
        case .seed: "the seed's rule: rmap when nr_dirty_pages < n_used_mmu_pages, else slot-walk"
        case .masked: "one lock hold; per non-zero bitmap word: xchg to zero, protect the 4 KiB rmap of each set bit"
        case .rmapWalk: "every gfn's rmap at every level of the slot, yielding mmu_lock when it is contended"
        case .tdpWalk: "the TDP MMU's walk over the slot's range (the enable-logging path), no rmaps"
        case .tdpMasked: "the two-dimensional paging structure, visited per bitmap word for its set bits"
        case .dbitClear: "PML: clear dirty bits per bitmap word; guest writes set them without faulting"
        case .clearChunked: "manual protect: GET copies the bitmap; CLEAR re-protects in chunks, a lock per chunk"
        case .ring: "per-vCPU dirty rings; collect, reset, merge entries within 64 pages into masks"
        case .adaptive: "per harvest, the cheapest of slot-walk, rmap, masked, rmap-walk, tdp-walk, tdp-masked by a cost model measured here"
        }
    }

    /// What it models, in full: the README's table of strategies, which a
    /// test checks against this (`markdownTable`).
    public var details: String {
        switch self {
        case .slotWalk: "`kvm_mmu_slot_remove_write_access()` at the seed: one hold of `mmu_lock`, every shadow page on the VM-wide `active_mmu_pages` list, the slot's tables scanned whole, the TLB flush inside the hold"
        case .rmap: "the seed's new branch as written: per set bit of the bitmap, take `mmu_lock`, write-protect the gfn's 4 KiB rmap, look up its 2 MiB and 1 GiB rmaps, release; one TLB flush after the last, outside the lock"
        case .rmapFixed: "the same branch as 6dbf79e7 (\"KVM: Fix write protection race during dirty logging\") fixed it: one hold over every dirty page and the flush. Measured by default only in the concurrent scenario, where it differs"
        case .seed: "the seed's rule: `rmap` when `nr_dirty_pages < n_used_mmu_pages`, else `slot-walk`"
        case .masked: "Linux 3.4 on: per non-zero bitmap word, write-protect the 4 KiB rmap of each set bit (`kvm_mmu_write_protect_pt_masked`, 5dc99b23), each word taken with `xchg` under one hold of `mmu_lock` (60c34612); the TLB flush after the hold, where 198c74f4 moved it"
        case .rmapWalk: "`slot_handle_level()`, the shadow MMU's way to enable logging: every rmap of the slot at every level, yielding `mmu_lock` when another thread waits for it (`spin_needbreak()`)"
        case .tdpWalk: "the TDP MMU's `kvm_tdp_mmu_wrprot_slot()`, its enable-logging path, timed as if it served a harvest: the paging structure over the slot's gfn range, no rmaps, yielding when a writer waits (two-dimensional paging only)"
        case .tdpMasked: "`clear_dirty_pt_masked()`: the paging structure, descended per bitmap word for its set bits (two-dimensional paging only)"
        case .dbitClear: "PML: leaves stay writable, the hardware sets dirty bits and logs frames in per-vCPU PML buffers; the harvest flushes them and clears dirty bits per mask"
        case .clearChunked: "`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: GET copies the bitmap; CLEAR re-protects in `--clear-chunk-pages` chunks, a lock per chunk; both phases timed"
        case .ring: "`KVM_CAP_DIRTY_LOG_RING`: per-vCPU rings (`--vcpus`, `--ring-entries`); a full ring stops its vCPU until harvested; reset merges entries within 64 pages into masks, a lock per mask; no bitmap scan"
        case .adaptive: "this project's rule (below): per harvest, the cheapest of slot-walk, rmap, masked, rmap-walk, tdp-walk and tdp-masked"
        }
    }

    /// The README's table of strategies, from `details`.
    public static var markdownTable: String {
        "| name | what it models |\n| --- | --- |\n" + allCases.map { "| `\($0.rawValue)` | \($0.details) |" }.joined(separator: "\n")
    }

    /// The help's list: each name and its summary, wrapped within 79
    /// columns under the name's column.
    public static var helpList: String {
        let indent = String(repeating: " ", count: 17)
        return allCases.map { s in
            var lines: [String] = []
            var line = "  " + s.rawValue + String(repeating: " ", count: max(1, 15 - s.rawValue.count))
            var empty = true
            for word in s.summary.split(separator: " ") {
                if !empty && line.count + 1 + word.count > 79 {
                    lines.append(line)
                    line = indent + word
                } else {
                    line += (empty ? "" : " ") + word
                }
                empty = false
            }
            lines.append(line)
            return lines.joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Declaration order.
    public static func < (a: Strategy, b: Strategy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The ways the real kernel hands out a dirty log, as `points.csv` names them.
public enum KernelStrategy: String, CaseIterable, Sendable, Hashable, Comparable {
    /// KVM_GET_DIRTY_LOG: the kernel copies the bitmap out and re-protects.
    case get = "kvm-get"
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG only reads,
    /// KVM_CLEAR_DIRTY_LOG of what it returned re-protects.
    case getClear = "kvm-get+clear"
    /// KVM_CAP_DIRTY_LOG_RING: read the vCPU's ring, then KVM_RESET_DIRTY_RINGS.
    case ring = "kvm-ring"

    /// Whether the strategy needs a VM of its own (the ring must be enabled
    /// before the vCPU exists and rules out the bitmap ioctls).
    public var usesRing: Bool { self == .ring }

    public static func < (a: KernelStrategy, b: KernelStrategy) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// Which implementation a row measured.
public enum Backend: String, CaseIterable, Sendable, Hashable, Comparable {
    /// The struct-of-arrays model.
    case model
    /// The real kernel through /dev/kvm.
    case kvm

    public static func < (a: Backend, b: Backend) -> Bool { a.rawValue < b.rawValue }
}

/// A strategy of either backend: what a row of points.csv measured.
public enum MeasuredStrategy: Hashable, Sendable, Comparable, CustomStringConvertible {
    case model(Strategy)
    case kernel(KernelStrategy)

    public var backend: Backend {
        switch self {
        case .model: .model
        case .kernel: .kvm
        }
    }

    /// The name in points.csv: the model's and the kernel's names do not overlap.
    public var name: String {
        switch self {
        case .model(let s): s.rawValue
        case .kernel(let k): k.rawValue
        }
    }

    public var description: String { name }

    public init?(name: String) {
        if let s = Strategy(rawValue: name) { self = .model(s) } else if let k = KernelStrategy(rawValue: name) { self = .kernel(k) } else { return nil }
    }

    /// The model strategy, when it is one.
    public var model: Strategy? {
        if case .model(let s) = self { return s }
        return nil
    }

    /// Whether harvests during the guest's writes (full rings) belong to the round's cost.
    public var usesRing: Bool {
        switch self {
        case .model(let s): s.usesRing
        case .kernel(let k): k.usesRing
        }
    }

    public static func < (a: MeasuredStrategy, b: MeasuredStrategy) -> Bool {
        switch (a, b) {
        case (.kernel(let x), .kernel(let y)): x < y
        case (.model(let x), .model(let y)): x < y
        case (.kernel, .model): true
        case (.model, .kernel): false
        }
    }
}

/// The kernel a concurrent harvest runs in: what mmu_lock is, whether a
/// vCPU's write fault can be fixed without it, and what a thread
/// write-protecting a guest page table flushes on. Named by the releases
/// whose kernels had every one of those facts together: the model's figures
/// in an era are ones those kernels could produce.
public enum KernelEra: String, Sendable, Hashable, CaseIterable, Comparable {
    /// Linux 3.3 to 3.5, from the seed to the fast page fault: mmu_lock a
    /// ticket spinlock; every write fault takes it (no fast page fault, no
    /// SPTE_MMU_WRITEABLE: both came with c7ba5b48's series in 3.6); a
    /// thread shadowing a guest page table flushes only if it cleared a
    /// writable bit itself (__rmap_write_protect() at 3.3).
    case linux3_3to3_5 = "3.3-3.5"
    /// Linux 4.2 to 5.11, the shadow MMU: mmu_lock a queued spinlock (x86
    /// since 4.2); c7ba5b48's fast page fault (3.6) for direct sptes that
    /// are MMU-writable and host-writable; 198c74f4's rule: the shadower
    /// also flushes when an spte it protects was still MMU-writable, so a
    /// harvest may flush after unlocking.
    case linux4_2to5_11 = "4.2-5.11"
    /// Linux 5.14 on, the TDP MMU: mmu_lock an rwlock (531810ca, 5.12);
    /// write faults under its read side, sptes changed by cmpxchg; the slot
    /// write-protection that enables logging (kvm_tdp_mmu_wrprot_slot())
    /// under the read side too (5.13), the masked harvest of GET/CLEAR
    /// under the write side; the fast page fault for TDP MMU sptes ("KVM:
    /// x86/mmu: Make fast_page_fault support the TDP MMU", 5.14: before it,
    /// direct_page_fault() skipped fast_page_fault() on a TDP MMU root).
    case linux5_14on = "5.14+"

    /// Whether a write fault on an spte write-protected only for dirty
    /// logging could be fixed without mmu_lock (c7ba5b48, 3.6).
    public var hasFastPageFault: Bool { self != .linux3_3to3_5 }

    /// Whether sptes carry SPTE_MMU_WRITEABLE, which the fast path and
    /// 198c74f4's flush rule read (introduced with the fast path).
    public var hasMMUWritable: Bool { self != .linux3_3to3_5 }

    /// "Linux 3.3 to 3.5", "Linux 5.14 on"
    public var label: String {
        switch self {
        case .linux3_3to3_5: "Linux 3.3 to 3.5"
        case .linux4_2to5_11: "Linux 4.2 to 5.11"
        case .linux5_14on: "Linux 5.14 on"
        }
    }

    public static func < (a: KernelEra, b: KernelEra) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// How a vCPU's write to a write-protected spte is handled.
public enum FaultPath: String, Sendable, Hashable, CaseIterable, Comparable {
    /// As at the seed: the fault takes mmu_lock, makes the spte writable and
    /// marks the page dirty under it (the TDP MMU: under its read side).
    case locked
    /// c7ba5b48's fast path, where the strategy's era had it (3.6 on) and
    /// only for a direct spte (two-dimensional paging: "fast page fault
    /// only works for direct mapping since the gfn is not stable for
    /// indirect shadow page") write-protected only for dirty logging
    /// (MMU-writable and host-writable): made writable by cmpxchg without
    /// the lock, the page marked dirty after. Anything else takes the lock.
    case fast

    public static func < (a: FaultPath, b: FaultPath) -> Bool { a.rawValue > b.rawValue }
}
