import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

/// The guest's writes of a round: the write list, KVM_RUN until HLT or a full ring.
extension KVMGuest {
    // Guest writes

    /// Places the guest-physical addresses of `pages` (offsets in the
    /// measured slot) in the guest's list, for `resumeWrites()`. Throws
    /// `.invalidSetup` for a page past the slot, before any ioctl.
    public func loadWriteList(_ pages: UnsafeBufferPointer<SlotOffset>) throws {
        try loadWriteList(pages, allowingWholeVM: false)
    }

    func loadWriteList(_ pages: UnsafeBufferPointer<SlotOffset>, allowingWholeVM: Bool) throws {
        let limit = allowingWholeVM ? vmPages : slotPages
        let base = GuestLayout.slotGPA(mode)
        let list = code! + GuestLayout.listOffset
        for (i, p) in pages.enumerated() {
            guard p.index < limit else {
                throw KVMError.invalidSetup("page \(p) is past the slot's \(limit) pages")
            }
            let gpa = base + UInt64(p.rawValue) * GuestLayout.pageSize
            if mode == .flat32 {
                list.storeBytes(of: UInt32(gpa), toByteOffset: i * 4, as: UInt32.self)
            } else {
                list.storeBytes(of: gpa, toByteOffset: i * 8, as: UInt64.self)
            }
        }
        listCount = pages.count
        let listPages = (pages.count * GuestLayout.entryBytes(mode) + 4095) / 4096
        let tablePages = mode == .long64 ? 2 + Int((GuestLayout.slotGPA(mode) + UInt64(vmPages) * GuestLayout.pageSize + (1 << 30) - 1) >> 30) : 0
        codeSlotPagesTouched = max(codeSlotPagesTouched, 1 + listPages + tablePages)
    }

    /// Where a round of guest writes stopped.
    public enum WriteStop: Equatable, Sendable {
        /// Every page of the list is written.
        case done
        /// KVM_EXIT_DIRTY_RING_FULL: harvest the ring, then resume.
        case ringFull
        /// A ring VM finished one chunk of the list (see `ringChunk`):
        /// harvest the ring, then resume.
        case chunkEnd
    }

    /// Most pages one KVM_RUN writes on a ring VM: half the ring. A kernel
    /// that emulates the guest checks for a full ring only between batches
    /// of instructions and overwrites entries past it, so the harness never
    /// lets a single run outgrow the ring; the pages of a larger round are
    /// written in chunks with a harvest after each, as a VMM answering
    /// ring-full exits would.
    public var ringChunk: Int { max(1, ringEntries / 2) }

    /// Pages of the loaded list written so far, and whether the vCPU is in

    /// Starts a round of writes over the loaded list.
    public func beginWrites() {
        writesDone = 0
        chunkPages = 0
    }

    /// Runs the guest over (the rest of) the loaded list, until it halts at
    /// the end, a full dirty ring stops it, or a ring VM's chunk ends.
    ///
    /// Bounded in time (`runBudgetNanoseconds`): a guest that does not halt
    /// by then, or a kernel that keeps returning without progress, is an
    /// error, not a hang.
    public func resumeWrites() throws -> WriteStop {
        try resumeWrites(budget: Self.runBudgetNanoseconds(writes: listCount - writesDone))
    }

    func resumeWrites(budget: UInt64) throws -> WriteStop {
        if chunkPages == 0 {
            guard writesDone < listCount else { return .done }
            let n = ringEntries > 0 ? min(listCount - writesDone, ringChunk) : listCount - writesDone
            var regs = kvm_regs()
            regs.rip = UInt64(GuestLayout.codeOffset)
            regs.rflags = 2
            regs.rsi = UInt64(GuestLayout.listOffset + writesDone * GuestLayout.entryBytes(mode))
            regs.rcx = UInt64(n / WriteLoop.unroll)
            regs.rdx = UInt64(n % WriteLoop.unroll)
            try check("KVM_SET_REGS", ck_ioctl_ptr(vcpu, ck_KVM_SET_REGS(), &regs))
            chunkPages = n
        }
        var deadline = ck_deadline()
        try check("timer_create(KVM_RUN deadline)", ck_deadline_arm(&deadline, budget, 100_000_000))
        defer { ck_deadline_disarm(&deadline) }
        if try runUntilHalt(giveUpAt: MonotonicClock.now() + budget, budget: budget, writesLeft: listCount - writesDone) == .ringFull {
            return .ringFull
        }
        writesDone += chunkPages
        chunkPages = 0
        return writesDone == listCount ? .done : .chunkEnd
    }

    /// Writes the whole list where no dirty ring logs the pages (populating).
    func writeAll() throws {
        beginWrites()
        while try resumeWrites() != .done {
            try harvestRing()
        }
    }

    /// The longest a round of `writes` guest writes may take: 10 s, and
    /// 100 µs a write (the emulating kernel here takes about 3).
    static func runBudgetNanoseconds(writes: Int) -> UInt64 {
        10_000_000_000 + UInt64(writes) * 100_000
    }

    enum RunStop { case halted, ringFull }

    func runUntilHalt(giveUpAt: UInt64, budget: UInt64, writesLeft: Int) throws -> RunStop {
        func expired() throws {
            guard MonotonicClock.now() >= giveUpAt else { return }
            var r = kvm_regs()
            _ = ck_ioctl_ptr(vcpu, ck_KVM_GET_REGS(), &r)
            throw KVMError.timedOut(String(format: "the guest did not halt within %.1f s (%d writes to do, rip %#llx): KVM_RUN kept returning without one",
                                           Double(budget) / 1e9, writesLeft, r.rip))
        }
        while true {
            if ck_ioctl_val(vcpu, ck_KVM_RUN(), 0) < 0 {
                let e = Errno.current
                if e == .interrupted || e == .resourceTemporarilyUnavailable { try expired(); continue }
                throw KVMError.systemCall(name: "KVM_RUN", errno: e)
            }
            let reason = run!.pointee.exit_reason
            if reason == ck_exit_hlt() { return .halted }
            if reason == ck_exit_intr() { try expired(); continue }
            if reason == ck_exit_dirty_ring_full(), ringEntries > 0 { return .ringFull }
            var r = kvm_regs()
            _ = ck_ioctl_ptr(vcpu, ck_KVM_GET_REGS(), &r)
            throw KVMError.unexpectedExit(reason: reason, detail: String(format: "rip %#llx, %llu writes left", r.rip, r.rcx * 8 + r.rdx))
        }
    }

    /// After a KVM_EXIT_DIRTY_RING_FULL, the harvest must have found
    /// entries; none means the kernel overran the ring between two checks.
    public func checkFullRingHarvest() throws {
        guard ringHarvested + ringForeign > 0 else {
            throw KVMError.unexpectedExit(reason: ck_exit_dirty_ring_full(), detail: "the dirty ring is full but holds no dirty entry: "
                + "the kernel overran the ring between two checks")
        }
    }
}
