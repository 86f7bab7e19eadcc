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

    private let kvm: KVMDevice
    private var vmFD: FileDescriptor?
    private var vcpuFD: FileDescriptor?
    private var memFD: FileDescriptor?
    /// The VM's and the vCPU's descriptors, for ioctls, once built.
    private var vm: Int32 { vmFD!.rawValue }
    private var vcpu: Int32 { vcpuFD!.rawValue }
    private var run: UnsafeMutablePointer<kvm_run>?
    private var runSize = 0
    private var code: UnsafeMutableRawPointer?
    private var codeBytes = 0
    private var guestRange: UnsafeMutableRawPointer?
    private var guestRangeBytes = 0
    private var ring: UnsafeMutablePointer<kvm_dirty_gfn>?
    private var ringBytes = 0
    private var ringFetch = 0
    private var manualProtect = false
    private var listCount = 0
    /// KVM_GET_DIRTY_LOG's destination: one bit per page of the measured slot.
    public private(set) var bitmap: UnsafeMutableBufferPointer<UInt64>
    /// What the last ring harvest collected (offsets in the measured slot), valid
    /// up to `ringHarvested`; entries of other slots are counted in `ringForeign`.
    public private(set) var ringOffsets: UnsafeMutableBufferPointer<UInt64>
    public private(set) var ringHarvested = 0
    public private(set) var ringForeign = 0

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

    private init(device: KVMDevice, slotPages: Int, vmPages: Int?, ringEntries: Int, backing: Backing?) throws {
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

    private func build() throws {
        vmFD = try .returned(by: "KVM_CREATE_VM", ck_ioctl_val(kvm.fd.rawValue, ck_KVM_CREATE_VM(), 0))
        if ringEntries > 0 {
            // The ring must be enabled before any vCPU exists.
            let cap = kvm.dirtyRingAcqRel ? ck_cap_dirty_log_ring_acq_rel() : ck_cap_dirty_log_ring()
            try enableCap(UInt32(cap), UInt64(ringEntries * MemoryLayout<kvm_dirty_gfn>.stride), name: "KVM_ENABLE_CAP(DIRTY_LOG_RING)")
        }

        codeBytes = GuestLayout.codeSlotBytes(mode, listEntries: vmPages)
        code = try map(bytes: codeBytes, fd: -1, name: "mmap(code slot)")
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
    private func populate() throws {
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

    // MARK: - Setup helpers

    private func map(bytes: Int, fd: Int32, name: String) throws -> UnsafeMutableRawPointer {
        let flags = fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE : MAP_SHARED
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, fd, 0)
        guard let p, p != MAP_FAILED else { throw KVMError.systemCall(name: name, errno: .current) }
        return p
    }

    /// The lifecycle's guest memory: anonymous, aligned to the host page
    /// size and advised to be backed by it (THP for 2 MiB), or hugetlbfs
    /// 1 GiB pages, which the host must have reserved.
    private func mapBackedRange(bytes: Int, backing: Backing) throws -> UnsafeMutableRawPointer {
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

    /// The whole anonymous mapping `mapBackedRange` made (its alignment slack included).
    private var guestMapping: UnsafeMutableRawPointer?
    private var guestMappingBytes = 0

    /// A range of host addresses with the memfd mapped over and over it.
    private func reserveGuestRange(bytes: Int) throws -> UnsafeMutableRawPointer {
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

    private func setRegion(slot: UInt32, gpa: UInt64, bytes: Int, host: UnsafeMutableRawPointer, flags: UInt32) throws {
        var r = kvm_userspace_memory_region()
        r.slot = slot
        r.flags = flags
        r.guest_phys_addr = gpa
        r.memory_size = UInt64(bytes)
        r.userspace_addr = UInt64(UInt(bitPattern: host))
        try check("KVM_SET_USER_MEMORY_REGION(slot \(slot))", ck_ioctl_ptr(vm, ck_KVM_SET_USER_MEMORY_REGION(), &r))
    }

    private func enableCap(_ cap: UInt32, _ arg: UInt64, name: String) throws {
        var c = kvm_enable_cap()
        c.cap = cap
        c.args.0 = arg
        try check(name, ck_ioctl_ptr(vm, ck_KVM_ENABLE_CAP(), &c))
    }

    /// KVM_GET_SUPPORTED_CPUID into KVM_SET_CPUID2: long mode needs the LM bit.
    private func setCPUID() throws {
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
    private func setSegments() throws {
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
    private func writeProgram() {
        let program = WriteLoop.code(mode)
        let c = code!
        for (i, b) in program.enumerated() { c.storeBytes(of: b, toByteOffset: GuestLayout.codeOffset + i, as: UInt8.self) }
        guard mode == .long64 else { return }
        let pt = GuestLayout.pageTablesOffset
        let end = GuestLayout.slotGPA(mode) + UInt64(vmPages) * GuestLayout.pageSize
        let gib = Int((end + (1 << 30) - 1) >> 30)
        let present: UInt64 = 0x3, large: UInt64 = 0x80
        c.storeBytes(of: UInt64(pt + 0x1000) | present, toByteOffset: pt, as: UInt64.self)
        for g in 0..<gib {
            let pd = pt + 0x2000 + g * 0x1000
            c.storeBytes(of: UInt64(pd) | present, toByteOffset: pt + 0x1000 + g * 8, as: UInt64.self)
            for j in 0..<512 {
                let gpa = UInt64(g) << 30 | UInt64(j) << 21
                c.storeBytes(of: gpa | present | large, toByteOffset: pd + j * 8, as: UInt64.self)
            }
        }
    }

    /// What one VM exit KVM handles in the kernel costs here, as
    /// kvm-unit-tests' vmexit tests measure it: the guest runs `count`
    /// `cpuid`s in a loop (`ExitLoop`), then the same loop without them;
    /// the difference over `count`, each run timed whole from KVM_RUN to
    /// the HLT. With the vCPU statistics read around the first: exits and
    /// instructions emulated per iteration (an emulating kernel runs every
    /// guest instruction through its emulator, so its figure is that, not
    /// a hardware world switch). Restores nothing: call it on a VM built
    /// for it.
    public func measureExitRoundTrip(count: Int = 20_000) throws -> (ns: Double, exitsPerIteration: Double, emulatedPerIteration: Double) {
        let c = code!
        for (offset, program) in [(ExitLoop.cpuidOffset, ExitLoop.cpuid(mode)), (ExitLoop.emptyOffset, ExitLoop.empty(mode))] {
            for (i, b) in program.enumerated() { c.storeBytes(of: b, toByteOffset: offset + i, as: UInt8.self) }
        }
        func timed(_ offset: Int) throws -> Double {
            var regs = kvm_regs()
            regs.rip = UInt64(offset)
            regs.rflags = 2
            regs.rsi = UInt64(count)
            try check("KVM_SET_REGS", ck_ioctl_ptr(vcpu, ck_KVM_SET_REGS(), &regs))
            let budget = Self.runBudgetNanoseconds(writes: count)
            var deadline = ck_deadline()
            try check("timer_create(KVM_RUN deadline)", ck_deadline_arm(&deadline, budget, 100_000_000))
            defer { ck_deadline_disarm(&deadline) }
            let t0 = MonotonicClock.now()
            _ = try runUntilHalt(giveUpAt: t0 + budget, budget: budget, writesLeft: 0)
            return Double(MonotonicClock.now() - t0)
        }
        let before = try vcpuStats()
        let withExits = try timed(ExitLoop.cpuidOffset)
        let after = try vcpuStats()
        let without = try timed(ExitLoop.emptyOffset)
        func per(_ name: String) -> Double { Double((after[name] ?? 0) &- (before[name] ?? 0)) / Double(count) }
        return (max(0, withExits - without) / Double(count), per("exits"), per("insn_emulation"))
    }

    /// Replaces the write loop with `jmp .`: a guest that never halts, for
    /// tests of the deadline.
    func writeSpinningProgram() {
        code!.storeBytes(of: 0xFE, toByteOffset: GuestLayout.codeOffset + 1, as: UInt8.self)
        code!.storeBytes(of: 0xEB, toByteOffset: GuestLayout.codeOffset, as: UInt8.self)
    }

    // MARK: - Guest writes

    /// Places the guest-physical addresses of `pages` (offsets in the
    /// measured slot) in the guest's list, for `resumeWrites()`. Throws
    /// `.invalidSetup` for a page past the slot, before any ioctl.
    public func loadWriteList(_ pages: UnsafeBufferPointer<SlotOffset>) throws {
        try loadWriteList(pages, allowingWholeVM: false)
    }

    private func loadWriteList(_ pages: UnsafeBufferPointer<SlotOffset>, allowingWholeVM: Bool) throws {
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
    /// the middle of a chunk (stopped by a full ring).
    private var writesDone = 0
    private var chunkPages = 0

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
    private func writeAll() throws {
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

    private enum RunStop { case halted, ringFull }

    private func runUntilHalt(giveUpAt: UInt64, budget: UInt64, writesLeft: Int) throws -> RunStop {
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

    // MARK: - The lifecycle (the caller times each call)

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

    // MARK: - Harvests (the caller times each call)

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

    // MARK: - Statistics

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
