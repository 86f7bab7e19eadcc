import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

/// `/dev/kvm`: the API version, the capabilities this project uses and the
/// vCPU mapping size, read once.
public final class KVMDevice: Sendable {
    /// /dev/kvm, open for the system ioctls.
    public let fd: FileDescriptor
    /// KVM_GET_API_VERSION (12 on every kernel since 2.6.22).
    public let apiVersion: Int32
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: the manual-protect flags offered, 0 when not.
    public let manualProtectFlags: Int32
    /// KVM_CAP_DIRTY_LOG_RING: the largest ring in bytes, 0 when not offered.
    public let dirtyRingMaxBytes: Int32
    /// KVM_CAP_DIRTY_LOG_RING_ACQ_REL: the ring with acquire/release ordering.
    public let dirtyRingAcqRel: Bool
    /// KVM_GET_VCPU_MMAP_SIZE
    public let vcpuMmapSize: Int

    public static let path = "/dev/kvm"

    /// Opens /dev/kvm. Throws `.unavailable` with the reason when it cannot be used.
    public init() throws {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(Self.path), .readWrite, options: .closeOnExec)
        } catch let e as Errno {
            throw KVMError.unavailable("open(\(Self.path)): \(e)")
        }
        self.fd = fd
        let api = ck_ioctl_val(fd.rawValue, ck_KVM_GET_API_VERSION(), 0)
        guard api == 12 else {
            try? fd.close()
            throw KVMError.unavailable("KVM_GET_API_VERSION is \(api), not 12")
        }
        apiVersion = api
        func ext(_ cap: Int32) -> Int32 { max(0, ck_ioctl_val(fd.rawValue, ck_KVM_CHECK_EXTENSION(), UInt(cap))) }
        manualProtectFlags = ext(ck_cap_manual_dirty_log_protect2())
        dirtyRingMaxBytes = ext(ck_cap_dirty_log_ring())
        dirtyRingAcqRel = ext(ck_cap_dirty_log_ring_acq_rel()) > 0
        let size = ck_ioctl_val(fd.rawValue, ck_KVM_GET_VCPU_MMAP_SIZE(), 0)
        guard size > 0 else {
            let e = Errno.current
            try? fd.close()
            throw KVMError.systemCall(name: "KVM_GET_VCPU_MMAP_SIZE", errno: e)
        }
        vcpuMmapSize = Int(size)
    }

    deinit { try? fd.close() }

    /// Entries of the largest dirty ring the kernel offers (16 bytes each).
    public var dirtyRingMaxEntries: Int { Int(dirtyRingMaxBytes) / MemoryLayout<kvm_dirty_gfn>.stride }

    /// Why a strategy cannot run on this kernel, or nil when it can.
    public func unsupported(_ strategy: KernelStrategy) -> String? {
        switch strategy {
        case .get: nil
        case .getClear:
            manualProtectFlags & Int32(truncatingIfNeeded: ck_dirty_log_manual_protect_enable()) == 0
                ? "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is not offered" : nil
        case .ring:
            dirtyRingMaxBytes == 0 ? "KVM_CAP_DIRTY_LOG_RING is not offered" : nil
        }
    }

    /// One line for reports: what this kernel offers.
    public var summary: String {
        "api \(apiVersion), manual protect flags \(manualProtectFlags), dirty ring up to \(dirtyRingMaxEntries) entries"
            + (dirtyRingAcqRel ? " (acq/rel)" : "") + (Self.hostPaging.map { ", \($0)" } ?? "")
    }

    /// How the host's KVM maps guest memory, from its module parameters:
    /// kvm_amd's npt or kvm_intel's ept (two-dimensional paging, or shadow
    /// paging when off) and kvm's tdp_mmu; nil where neither module is
    /// loaded (this machine's kvm_pvm). The kernel series keep the model's
    /// `tdp` layout in their labels (one spte per gfn) either way: a guest
    /// without paging is mapped directly under shadow paging too.
    public static var hostPaging: String? {
        func param(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let tdpMMU = param("/sys/module/kvm/parameters/tdp_mmu").map { ", tdp_mmu=\($0)" } ?? ""
        for (module, name) in [("kvm_amd", "npt"), ("kvm_intel", "ept")] {
            guard let v = param("/sys/module/\(module)/parameters/\(name)") else { continue }
            let on = v == "1" || v == "Y"
            return "\(module) \(name)=\(v): " + (on ? "two-dimensional paging" + tdpMMU : "shadow paging")
        }
        return nil
    }
}
