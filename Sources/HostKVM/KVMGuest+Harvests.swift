import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

extension KVMGuest {
    // Harvests (the caller times each call)

    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 on or off for this VM.
    public func setManualProtect(_ on: Bool) throws {
        guard on != manualProtect else { return }
        guard kvm.unsupported(.getClear) == nil else { throw KVMError.missingCapability("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2") }
        try enableCap(UInt32(ck_cap_manual_dirty_log_protect2()), on ? ck_dirty_log_manual_protect_enable() : 0,
                      name: "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)")
        manualProtect = on
    }

    /// KVM_GET_DIRTY_LOG of the measured slot into `bitmap`.
    @inline(__always)
    public func getDirtyLog() throws {
        var log = kvm_dirty_log()
        log.slot = GuestLayout.measuredSlot
        log.dirty_bitmap = UnsafeMutableRawPointer(bitmap.baseAddress!)
        try check("KVM_GET_DIRTY_LOG", ck_ioctl_ptr(vm, ck_KVM_GET_DIRTY_LOG(), &log))
    }

    /// KVM_CLEAR_DIRTY_LOG of the whole slot with what the last
    /// KVM_GET_DIRTY_LOG returned: those pages are write-protected again.
    @inline(__always)
    public func clearDirtyLog() throws {
        var clear = kvm_clear_dirty_log()
        clear.slot = GuestLayout.measuredSlot
        clear.first_page = 0
        clear.num_pages = UInt32(slotPages)
        clear.dirty_bitmap = UnsafeMutableRawPointer(bitmap.baseAddress!)
        try check("KVM_CLEAR_DIRTY_LOG", ck_ioctl_ptr(vm, ck_KVM_CLEAR_DIRTY_LOG(), &clear))
    }

    /// Collects every dirty entry of the vCPU's ring (acquire-load the flags,
    /// record the offset, release-store RESET), then KVM_RESET_DIRTY_RINGS,
    /// which re-protects what the entries name. Offsets of the measured slot
    /// land in `ringOffsets[0..<ringHarvested]`.
    @inline(__always)
    public func harvestRing() throws {
        let ring = ring!
        let mask = ringEntries - 1
        let dirty = ck_dirty_gfn_f_dirty(), reset = ck_dirty_gfn_f_reset()
        let out = ringOffsets.baseAddress!
        var n = 0, foreign = 0
        while true {
            let e = ring + (ringFetch & mask)
            let flags = withUnsafeMutablePointer(to: &e.pointee.flags) { ck_load_acquire_u32($0) }
            if flags & dirty == 0 { break }
            if e.pointee.slot == GuestLayout.measuredSlot, n < ringEntries {
                out[n] = e.pointee.offset
                n += 1
            } else {
                foreign += 1
            }
            withUnsafeMutablePointer(to: &e.pointee.flags) { ck_store_release_u32($0, reset) }
            ringFetch &+= 1
        }
        ringHarvested = n
        ringForeign = foreign
        try check("KVM_RESET_DIRTY_RINGS", ck_ioctl_val(vm, ck_KVM_RESET_DIRTY_RINGS(), 0))
    }
}
