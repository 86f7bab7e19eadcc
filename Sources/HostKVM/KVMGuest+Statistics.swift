import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

extension KVMGuest {
    // Statistics

    /// The VM's binary statistics (KVM_GET_STATS_FD), first value of each.
    public func vmStats() throws -> [String: UInt64] { try Self.stats(of: vmFD!, name: "KVM_GET_STATS_FD(vm)") }

    /// The vCPU's binary statistics.
    public func vcpuStats() throws -> [String: UInt64] { try Self.stats(of: vcpuFD!, name: "KVM_GET_STATS_FD(vcpu)") }

    /// KVM_GET_STATS_FD, then the header, the descriptors and every
    /// statistic's first value, by pread(2) on that descriptor.
    static func stats(of fd: FileDescriptor, name: String) throws -> [String: UInt64] {
        let sfd = try FileDescriptor.returned(by: name, ck_ioctl_val(fd.rawValue, ck_KVM_GET_STATS_FD(), 0))
        defer { try? sfd.close() }
        func read(_ what: String, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
            do {
                guard try sfd.read(fromAbsoluteOffset: offset, into: buffer) == buffer.count else {
                    throw KVMError.systemCall(name: "pread(\(what)): short read", errno: .ioError)
                }
            } catch let e as Errno {
                throw KVMError.systemCall(name: "pread(\(what))", errno: e)
            }
        }
        var header = kvm_stats_header()
        try withUnsafeMutableBytes(of: &header) { try read("stats header", at: 0, into: $0) }
        let descBytes = MemoryLayout<kvm_stats_desc>.size + Int(header.name_size)
        var descs = [UInt8](repeating: 0, count: descBytes * Int(header.num_desc))
        try descs.withUnsafeMutableBytes { try read("stats descriptors", at: Int64(header.desc_offset), into: $0) }
        var out: [String: UInt64] = [:]
        try descs.withUnsafeBytes { raw in
            for i in 0..<Int(header.num_desc) {
                let d = raw.baseAddress! + i * descBytes
                let desc = d.loadUnaligned(as: kvm_stats_desc.self)
                let namePtr = (d + MemoryLayout<kvm_stats_desc>.size).assumingMemoryBound(to: CChar.self)
                let statName = String(cString: namePtr)
                var value: UInt64 = 0
                try withUnsafeMutableBytes(of: &value) { try read("stat \(statName)", at: Int64(header.data_offset) + Int64(desc.offset), into: $0) }
                out[statName] = value
            }
        }
        return out
    }
}
