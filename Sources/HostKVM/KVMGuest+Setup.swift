import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

/// Building the VM: mappings, regions, capabilities, CPUID and segments.
extension KVMGuest {
    // Setup helpers

    func map(bytes: Int, fd: Int32, name: String) throws -> UnsafeMutableRawPointer {
        let flags = fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE : MAP_SHARED
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, fd, 0)
        guard let p, p != MAP_FAILED else { throw KVMError.systemCall(name: name, errno: .current) }
        return p
    }

    /// The lifecycle's guest memory: anonymous, aligned to the host page
    /// size and advised to be backed by it (THP for 2 MiB), or hugetlbfs
    /// 1 GiB pages, which the host must have reserved.
    func mapBackedRange(bytes: Int, backing: Backing) throws -> UnsafeMutableRawPointer {
        if backing == .page1G {
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | ck_map_hugetlb_1gb(), -1, 0)
            guard let p, p != MAP_FAILED else {
                throw KVMError.systemCall(name: "mmap(MAP_HUGETLB | MAP_HUGE_1GB): 1 GiB hugetlbfs pages (vm.nr_hugepages of hugepages-1048576kB)",
                                          errno: .current)
            }
            guestMappingBytes = bytes
            guestMapping = p
            return p
        }
        let align = backing.pages * 4096
        let total = bytes + align
        let p = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw KVMError.systemCall(name: "mmap(guest memory)", errno: .current) }
        guestMappingBytes = total
        guestMapping = p
        let aligned = UnsafeMutableRawPointer(bitPattern: (UInt(bitPattern: p) + UInt(align) - 1) & ~(UInt(align) - 1))!
        _ = madvise(aligned, bytes, backing == .page2M ? 14 /* MADV_HUGEPAGE */ : 15 /* MADV_NOHUGEPAGE */)
        return aligned
    }


    /// A range of host addresses with the memfd mapped over and over it.
    func reserveGuestRange(bytes: Int) throws -> UnsafeMutableRawPointer {
        let p = mmap(nil, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw KVMError.systemCall(name: "mmap(guest range)", errno: .current) }
        var off = 0
        while off < bytes {
            let n = min(Self.memfdBytes, bytes - off)
            let q = mmap(p + off, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memFD!.rawValue, 0)
            guard q != MAP_FAILED else {
                let e = Errno.current
                munmap(p, bytes)
                throw KVMError.systemCall(name: "mmap(memfd over guest range)", errno: e)
            }
            off += n
        }
        return p
    }

    func setRegion(slot: UInt32, gpa: UInt64, bytes: Int, host: UnsafeMutableRawPointer, flags: UInt32) throws {
        var r = kvm_userspace_memory_region()
        r.slot = slot
        r.flags = flags
        r.guest_phys_addr = gpa
        r.memory_size = UInt64(bytes)
        r.userspace_addr = UInt64(UInt(bitPattern: host))
        try check("KVM_SET_USER_MEMORY_REGION(slot \(slot))", ck_ioctl_ptr(vm, ck_KVM_SET_USER_MEMORY_REGION(), &r))
    }

    func enableCap(_ cap: UInt32, _ arg: UInt64, name: String) throws {
        var c = kvm_enable_cap()
        c.cap = cap
        c.args.0 = arg
        try check(name, ck_ioctl_ptr(vm, ck_KVM_ENABLE_CAP(), &c))
    }

    /// KVM_GET_SUPPORTED_CPUID into KVM_SET_CPUID2: long mode needs the LM bit.
    func setCPUID() throws {
        let maxEntries = 256
        let bytes = MemoryLayout<kvm_cpuid2>.size + maxEntries * MemoryLayout<kvm_cpuid_entry2>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        raw.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(maxEntries)
        try check("KVM_GET_SUPPORTED_CPUID", ck_ioctl_ptr(kvm.fd.rawValue, ck_KVM_GET_SUPPORTED_CPUID(), raw))
        try check("KVM_SET_CPUID2", ck_ioctl_ptr(vcpu, ck_KVM_SET_CPUID2(), raw))
    }

    /// Flat 32-bit protected mode, or long mode on the identity map.
    func setSegments() throws {
        var s = kvm_sregs()
        try check("KVM_GET_SREGS", ck_ioctl_ptr(vcpu, ck_KVM_GET_SREGS(), &s))
        var codeSeg = kvm_segment()
        codeSeg.base = 0
        codeSeg.limit = 0xFFFF_FFFF
        codeSeg.selector = 0x8
        codeSeg.type = 11
        codeSeg.present = 1
        codeSeg.s = 1
        codeSeg.g = 1
        var dataSeg = codeSeg
        dataSeg.selector = 0x10
        dataSeg.type = 3
        dataSeg.db = 1
        switch mode {
        case .flat32:
            codeSeg.db = 1
            s.cr0 |= 1  // PE
        case .long64:
            codeSeg.l = 1
            s.cr3 = UInt64(GuestLayout.pageTablesOffset)
            s.cr4 = 1 << 5               // PAE
            s.cr0 = 0x8005_0033          // PG | AM | WP | NE | ET | MP | PE
            s.efer = 0x500               // LMA | LME
        }
        s.cs = codeSeg
        s.ds = dataSeg; s.es = dataSeg; s.fs = dataSeg; s.gs = dataSeg; s.ss = dataSeg
        try check("KVM_SET_SREGS", ck_ioctl_ptr(vcpu, ck_KVM_SET_SREGS(), &s))
    }

    /// The write loop, and for long mode the identity map: PML4 → PDPT →
    /// one page directory of 2 MiB pages per GiB up to the VM's end.
}
