import Glibc
import SystemPackage

/// What can go wrong with the real kernel, each naming what failed.
public enum KVMError: Error, CustomStringConvertible, Equatable {
    /// /dev/kvm cannot be used at all (absent, no permission, wrong API).
    case unavailable(String)
    /// A capability the strategy needs is not offered.
    case missingCapability(String)
    /// An ioctl (or another system call) failed.
    case systemCall(name: String, errno: Errno)
    /// KVM_RUN came back for a reason other than HLT or a full dirty ring.
    case unexpectedExit(reason: UInt32, detail: String)
    /// The setup was refused before any ioctl.
    case invalidSetup(String)
    /// The guest ran past its deadline without halting.
    case timedOut(String)

    public var description: String {
        switch self {
        case .unavailable(let m): "/dev/kvm unavailable: \(m)"
        case .missingCapability(let m): "missing capability: \(m)"
        case .systemCall(let name, let e): "\(name) failed: \(e) (errno \(e.rawValue))"
        case .unexpectedExit(let r, let d): "KVM_RUN exited with reason \(r) (\(Self.exitName(r))): \(d)"
        case .invalidSetup(let m): m
        case .timedOut(let m): m
        }
    }

    static func exitName(_ r: UInt32) -> String {
        switch r {
        case 0: "KVM_EXIT_UNKNOWN"
        case 1: "KVM_EXIT_EXCEPTION"
        case 2: "KVM_EXIT_IO"
        case 5: "KVM_EXIT_HLT"
        case 6: "KVM_EXIT_MMIO"
        case 8: "KVM_EXIT_SHUTDOWN"
        case 9: "KVM_EXIT_FAIL_ENTRY"
        case 10: "KVM_EXIT_INTR"
        case 17: "KVM_EXIT_INTERNAL_ERROR"
        case 31: "KVM_EXIT_DIRTY_RING_FULL"
        default: "exit \(r)"
        }
    }
}

/// Runs a system call that returns -1 on failure, throwing its name and errno.
@discardableResult
func check(_ name: String, _ result: Int32) throws -> Int32 {
    if result < 0 { throw KVMError.systemCall(name: name, errno: .current) }
    return result
}

extension Errno {
    /// errno, as the last failing call on this thread left it.
    static var current: Errno { Errno(rawValue: Glibc.errno) }
}

extension FileDescriptor {
    /// A descriptor a KVM ioctl returned (KVM_CREATE_VM, KVM_CREATE_VCPU,
    /// KVM_GET_STATS_FD), or the ioctl's failure.
    static func returned(by name: String, _ result: Int32) throws -> FileDescriptor {
        FileDescriptor(rawValue: try check(name, result))
    }
}
