import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

/// A VM on the real kernel built for measuring one dirty log: a code slot,
/// the measured slot (dirty logging on) and optionally the rest of the VM's
/// memory in a second slot, one vCPU running `WriteLoop`.
///
/// Guest memory is not backed page for page: one small memfd is mapped
/// again and again over each slot's range, since the dirty log tracks guest
/// frames, not host pages. Every page of every slot is written once before
/// logging is enabled, as dirty-log-perf does, so that on a host where the
/// guest runs natively every spte exists (see `populate()` for a host where
/// it does not).
///
/// File descriptors, mappings and guest memory are released in `deinit`, and
/// by a failing initializer for whatever it had acquired.
public final class KVMGuest {
    public let mode: GuestMode
    public let slotPages: Int
    public let vmPages: Int
    /// Ring entries when the VM logs through a dirty ring, else 0.
    public let ringEntries: Int

    let kvm: KVMDevice
    var vmFD: FileDescriptor?
    var vcpuFD: FileDescriptor?
    var memFD: FileDescriptor?
    /// The VM's and the vCPU's descriptors, for ioctls, once built.
    var vm: Int32 { vmFD!.rawValue }
    var vcpu: Int32 { vcpuFD!.rawValue }
    var run: UnsafeMutablePointer<kvm_run>?
    var runSize = 0
    var code: UnsafeMutableRawPointer?
    var codeBytes = 0
    var guestRange: UnsafeMutableRawPointer?
    var guestRangeBytes = 0
    var ring: UnsafeMutablePointer<kvm_dirty_gfn>?
    var ringBytes = 0
    var ringFetch = 0
    var manualProtect = false
    var listCount = 0
    /// KVM_GET_DIRTY_LOG's destination: one bit per page of the measured slot.
    public private(set) var bitmap: UnsafeMutableBufferPointer<UInt64>
    /// What the last ring harvest collected (offsets in the measured slot), valid
    /// up to `ringHarvested`; entries of other slots are counted in `ringForeign`.
    public private(set) var ringOffsets: UnsafeMutableBufferPointer<UInt64>
    public internal(set) var ringHarvested = 0
    public internal(set) var ringForeign = 0

    /// Chunk of host memory mapped repeatedly over the guest's slots.
    static let memfdBytes = 8 << 20

    /// The lifecycle's guest: memory of its own backed by `backing` (anonymous
    /// memory with MADV_HUGEPAGE for 2 MiB, hugetlbfs 1 GiB pages for 1 GiB,
    /// MADV_NOHUGEPAGE for 4 KiB), not populated, not logging: the caller
    /// times each phase (`writeEveryPage`, `setDirtyLogging`, ...).
    public let backing: Backing?

    /// The guest memory of a VM of `vmPages` pages whose first `slotPages`
    /// form the measured slot. Throws `.invalidSetup` before any ioctl when
    /// the sizes make no sense, and `.missingCapability` when a ring is asked
    /// for and not offered.
    public convenience init(device: KVMDevice, slotPages: Int, vmPages: Int? = nil, ringEntries: Int = 0) throws {
        try self.init(device: device, slotPages: slotPages, vmPages: vmPages, ringEntries: ringEntries, backing: nil)
    }

    /// The lifecycle's guest of `slotPages` pages backed by `backing`
    /// (see `backing`). Throws `.invalidSetup` before any ioctl for a slot
    /// that is not a whole number of host pages.
    public convenience init(device: KVMDevice, lifecyclePages slotPages: Int, backing: Backing) throws {
        guard slotPages % backing.pages == 0 else {
            throw KVMError.invalidSetup("a slot of \(slotPages) pages is not a whole number of \(backing.label) pages")
        }
        try self.init(device: device, slotPages: slotPages, vmPages: nil, ringEntries: 0, backing: backing)
    }

    init(device: KVMDevice, slotPages: Int, vmPages: Int?, ringEntries: Int, backing: Backing?) throws {
        let vmPages = vmPages ?? slotPages
        self.backing = backing
        guard slotPages > 0 else { throw KVMError.invalidSetup("a slot of \(slotPages) pages: it needs at least one") }
        guard vmPages >= slotPages else {
            throw KVMError.invalidSetup("a VM of \(vmPages) pages cannot hold a slot of \(slotPages)")
        }
        let flatEnd = GuestLayout.slotGPA(.flat32) + UInt64(vmPages) * GuestLayout.pageSize
        let mode = GuestMode.needed(endGPA: flatEnd)
        let end = GuestLayout.slotGPA(mode) + UInt64(vmPages) * GuestLayout.pageSize
        let gib = Int((end + (1 << 30) - 1) >> 30)
        guard mode == .flat32 || gib <= GuestLayout.maxIdentityGiB else {
            throw KVMError.invalidSetup("a VM of \(vmPages) pages ends past the \(GuestLayout.maxIdentityGiB) GiB the guest maps")
        }
        if ringEntries > 0 {
            guard device.dirtyRingMaxBytes > 0 else { throw KVMError.missingCapability("KVM_CAP_DIRTY_LOG_RING") }
            guard ringEntries & (ringEntries - 1) == 0, ringEntries <= device.dirtyRingMaxEntries else {
                throw KVMError.invalidSetup("a dirty ring of \(ringEntries) entries: it must be a power of two up to \(device.dirtyRingMaxEntries)")
            }
        }
        self.kvm = device
        self.mode = mode
        self.slotPages = slotPages
        self.vmPages = vmPages
        self.ringEntries = ringEntries
        let words = (slotPages + 63) / 64
        bitmap = .allocate(capacity: words)
        bitmap.initialize(repeating: 0)
        ringOffsets = .allocate(capacity: max(1, ringEntries))
        ringOffsets.initialize(repeating: 0)
        try build()
    }

    deinit {
        if let r = ring { munmap(r, ringBytes) }
        if let r = run { munmap(r, runSize) }
        try? vcpuFD?.close()
        try? vmFD?.close()
        if let m = guestMapping { munmap(m, guestMappingBytes) } else if let g = guestRange { munmap(g, guestRangeBytes) }
        if let c = code { munmap(c, codeBytes) }
        try? memFD?.close()
        bitmap.deallocate()
        ringOffsets.deallocate()
    }

    func build() throws {
        vmFD = try .returned(by: "KVM_CREATE_VM", ck_ioctl_val(kvm.fd.rawValue, ck_KVM_CREATE_VM(), 0))
        if ringEntries > 0 {
            // The ring must be enabled before any vCPU exists.
            let cap = kvm.dirtyRingAcqRel ? ck_cap_dirty_log_ring_acq_rel() : ck_cap_dirty_log_ring()
            try enableCap(UInt32(cap), UInt64(ringEntries * MemoryLayout<kvm_dirty_gfn>.stride), name: "KVM_ENABLE_CAP(DIRTY_LOG_RING)")
        }

        codeBytes = GuestLayout.codeSlotBytes(mode, listEntries: vmPages)
        code = try map(bytes: codeBytes, fd: -1, name: "mmap(code slot)")
        // 4 KiB pages only, whatever the host's THP setting: its leaves are
        // then the pages the guest touched (`codeSlotPagesTouched`), which
        // the kernel lab takes from the VM's pages_4k to count the
        // measured slot's own.
        _ = madvise(code, codeBytes, 15 /* MADV_NOHUGEPAGE */)
        try setRegion(slot: GuestLayout.codeSlot, gpa: 0, bytes: codeBytes, host: code!, flags: 0)

        memFD = try .returned(by: "memfd_create", ck_memfd_create("dirty-log-bench-guest", 1 /* MFD_CLOEXEC */))
        do { try memFD!.resize(to: Int64(Self.memfdBytes)) } catch let e as Errno {
            throw KVMError.systemCall(name: "ftruncate(memfd)", errno: e)
        }
        guestRangeBytes = vmPages * Int(GuestLayout.pageSize)
        if let b = backing {
            guestRange = try mapBackedRange(bytes: guestRangeBytes, backing: b)
        } else {
            guestRange = try reserveGuestRange(bytes: guestRangeBytes)
        }
        let base = GuestLayout.slotGPA(mode)
        try setRegion(slot: GuestLayout.measuredSlot, gpa: base, bytes: slotPages * 4096, host: guestRange!, flags: 0)
        if vmPages > slotPages {
            try setRegion(slot: GuestLayout.otherSlot, gpa: base + UInt64(slotPages) * 4096,
                          bytes: (vmPages - slotPages) * 4096, host: guestRange! + slotPages * 4096, flags: 0)
        }

        vcpuFD = try .returned(by: "KVM_CREATE_VCPU", ck_ioctl_val(vm, ck_KVM_CREATE_VCPU(), 0))
        runSize = kvm.vcpuMmapSize
        run = try map(bytes: runSize, fd: vcpu, name: "mmap(kvm_run)").bindMemory(to: kvm_run.self, capacity: 1)
        if ringEntries > 0 {
            ringBytes = ringEntries * MemoryLayout<kvm_dirty_gfn>.stride
            let offset = ck_dirty_log_page_offset() * Int(sysconf(Int32(_SC_PAGESIZE)))
            let p = mmap(nil, ringBytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, off_t(offset))
            guard let p, p != MAP_FAILED else { throw KVMError.systemCall(name: "mmap(dirty ring)", errno: .current) }
            ring = p.bindMemory(to: kvm_dirty_gfn.self, capacity: ringEntries)
        }
        try setCPUID()
        try setSegments()
        writeProgram()
        guard backing == nil else { return }

        try populate()
        try setRegion(slot: GuestLayout.measuredSlot, gpa: base, bytes: slotPages * 4096, host: guestRange!,
                      flags: ck_mem_log_dirty_pages())
    }

    /// Pages the guest wrote before logging was enabled.
    public private(set) var populatedPages = 0
    /// Whether the kernel runs this guest through its instruction emulator:
    /// writes then reach the dirty log through the emulator, not through
    /// write faults on sptes, so the shadow MMU holds no spte for the slot.
    public private(set) var emulated = false
    /// Guest write cost measured while populating, ns per page.
    public private(set) var writeNanosPerPage = 0.0

    /// The guest writes every page of the VM once, in chunks. When the first
    /// chunk leaves the kernel with no 4 KiB spte (VM statistic `pages_4k`)
    /// the guest is being emulated and writing the rest would create none
    /// either: populating stops there, and `emulated` says so.
    func populate() throws {
        let chunk = min(vmPages, 1 << 16)
        var list = [SlotOffset](repeating: SlotOffset(0), count: chunk)
        var start = 0
        while start < vmPages {
            let n = min(chunk, vmPages - start)
            for i in 0..<n { list[i] = SlotOffset(start + i) }
            try list.withUnsafeBufferPointer { try loadWriteList(UnsafeBufferPointer(rebasing: $0[0..<n]), allowingWholeVM: true) }
            let t0 = MonotonicClock.now()
            try writeAll()
            if start == 0 {
                writeNanosPerPage = Double(MonotonicClock.now() - t0) / Double(n)
                if try vmStats()["pages_4k"] == 0 {
                    emulated = true
                    populatedPages = n
                    return
                }
            }
            start += n
        }
        populatedPages = vmPages
    }

    /// Pages of the code slot the guest has touched: the code's page and
    /// the list's pages up to the longest list loaded (the walker's page
    /// tables too in long mode). Each is one 4 KiB leaf of the kernel's:
    /// the VM's pages_4k less this is the measured slot's.
    public internal(set) var codeSlotPagesTouched = 0
    // Set up and used by the extensions (KVMGuest+*.swift).
    var guestMapping: UnsafeMutableRawPointer?
    var guestMappingBytes = 0
    var writesDone = 0
    var chunkPages = 0
}
