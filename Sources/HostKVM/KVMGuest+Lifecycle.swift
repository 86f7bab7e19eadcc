import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

extension KVMGuest {
    // The lifecycle (the caller times each call)

    /// The guest writes every page of the slot once, in order (a pass of
    /// dirty_log_perf_test's guest).
    public func writeEveryPage() throws { try writePages(0..<slotPages) }

    /// The guest writes the pages of `range` (offsets in the slot) once, in order.
    public func writePages(_ range: Range<Int>) throws {
        var list = [SlotOffset](repeating: SlotOffset(0), count: range.count)
        for (i, p) in range.enumerated() { list[i] = SlotOffset(p) }
        try list.withUnsafeBufferPointer { try loadWriteList($0) }
        try writeAll()
    }

    /// KVM_SET_USER_MEMORY_REGION of the slot with KVM_MEM_LOG_DIRTY_PAGES
    /// set or cleared: what enables and disables dirty logging.
    public func setDirtyLogging(_ on: Bool) throws {
        try setRegion(slot: GuestLayout.measuredSlot, gpa: GuestLayout.slotGPA(mode), bytes: slotPages * 4096, host: guestRange!,
                      flags: on ? ck_mem_log_dirty_pages() : 0)
    }

    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with KVM_DIRTY_LOG_INITIALLY_SET
    /// where the kernel offers it: logging starts with every bit set and
    /// nothing protected; each KVM_CLEAR_DIRTY_LOG protects (and, with
    /// eager_page_split, splits) what it clears. False when not offered.
    public func enableInitiallySet() throws -> Bool {
        let flags = ck_dirty_log_manual_protect_enable() | ck_dirty_log_initially_set()
        guard UInt64(kvm.manualProtectFlags) & flags == flags else { return false }
        try enableCap(UInt32(ck_cap_manual_dirty_log_protect2()), flags, name: "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2, INITIALLY_SET)")
        manualProtect = true
        return true
    }

    /// pages_4k, pages_2m, pages_1g from the VM's binary statistics, nil
    /// where the kernel has not them (before 5.13: lpages only).
    public func leafPages() throws -> (pages4K: Int, pages2M: Int, pages1G: Int)? {
        let s = try vmStats()
        guard let k4 = s["pages_4k"], let m2 = s["pages_2m"], let g1 = s["pages_1g"] else { return nil }
        return (Int(k4), Int(m2), Int(g1))
    }
}
