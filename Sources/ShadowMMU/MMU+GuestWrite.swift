import CAtomics
import DirtyLogCore

/// How a vCPU writes a page: the model's one write path. Every guest write
/// goes through here: the rounds the harvests take (`guestWrites`), the
/// vCPU threads that run through a harvest (`vcpuWrite`, then
/// `vcpuWriteFault`), and the lifecycle's guest (`vcpuAccess`, which maps
/// what is not mapped through `vcpuMapFault`). Populating and the mapping
/// fault install their leaves with `installLeaf`, with the same bits.
///
/// The steps, as the kernel takes them:
///
/// 1. The spte the guest's translation reaches: through the vCPU's TLB, a
///    walk of the guest's tree, or (the rounds) the rmap entry of the
///    address space the write goes through.
/// 2. A writable spte takes the write. With PML (a dirty-bit slot) the
///    hardware sets the dirty bit and logs the frame, no fault.
/// 3. A write-protected one faults: c7ba5b48's fast path first where the
///    era has it (`MMU.fastPathAllowed`), else under mmu_lock (the TDP
///    MMU's read side, the whole lock before it), `fixWriteFaultLocked`.
/// 4. The page marked dirty: `markPageDirty`, while the slot logs.
///
/// What differs by era is read from `KernelEra+Model.swift`.
extension MMU {
    /// mark_page_dirty_in_slot(): with a dirty ring, push (slot, offset) to
    /// the vCPU's ring; otherwise test-and-set the page's bit in the current
    /// bitmap. nr_dirty_pages counts the pages logged since the last
    /// harvest; with a bitmap, so does the count of dirty lines (512-page
    /// spans) the adaptive rule decides by.
    @inline(__always) @discardableResult
    public func markPageDirty(slot s: SlotView, gfn: GFN, vcpu: Int = 0) -> DirtyMark {
        let rel = s.offset(of: gfn)
        if vm.pointee.dirtyRing {
            s.state.pointee.nrDirtyPages &+= 1
            return DirtyMark(newlyLogged: true, ringFull: dirtyRingPush(vcpu: vcpu, slot: s, offset: rel))
        }
        let index = rel.word
        let bit = rel.bit
        let old = ca_fetch_or64(s.dirtyBitmap + index, bit)
        guard old & bit == 0 else { return DirtyMark(newlyLogged: false, ringFull: false) }
        // The word's first page since the harvest: one more dirty line
        // unless the word's neighbours (in the L1 with it) have pages.
        // Only the first page of a word pays for this.
        let newLine = old == 0 && s.lineIsClean(around: index)
        if vm.pointee.concurrent {
            SlotState.addAtomically(s.state, pages: 1, lines: newLine ? 1 : 0)
        } else {
            s.state.pointee.nrDirtyPages &+= 1
            if newLine { s.state.pointee.nrDirtyLines &+= 1 }
        }
        return DirtyMark(newlyLogged: true, ringFull: false)
    }

    /// mark_page_dirty_in_slot(), which logs only while the slot logs
    /// (memslot->dirty_bitmap is set).
    @inline(__always)
    func markIfLogging(slot s: SlotView, gfn: GFN, vcpu: Int) -> DirtyMark {
        guard s.state.pointee.dirtyLogging else { return DirtyMark(newlyLogged: false, ringFull: false) }
        return markPageDirty(slot: s, gfn: gfn, vcpu: vcpu)
    }

    /// The spte made writable as the era's fault handler makes it
    /// (`KernelEra.faultWritableBits`): by cmpxchg from `spte` when other
    /// threads change sptes under the same lock side (`shared`), false when
    /// one did first; else a plain store.
    @inline(__always)
    func makeWritableOnFault(_ sptep: UnsafeMutablePointer<UInt64>, _ spte: UInt64, shared: Bool) -> Bool {
        let made = spte | vm.pointee.era.faultWritableBits
        if shared { return ca_cmpxchg64(sptep, spte, made) != 0 }
        ca_write_once64(sptep, made)
        return true
    }

    /// The locked half of a write fault on a write-protected 4 KiB spte,
    /// the caller holding mmu_lock (`shared`: the TDP MMU's read side):
    /// a tracked guest page table's write is emulated and logged, the spte
    /// left read-only; anything else is made writable and logged. Retries
    /// when a cmpxchg loses to another thread.
    @inline(__always)
    func fixWriteFaultLocked(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int,
                             shared: Bool) -> (fault: VCPUFault, ringFull: Bool) {
        while true {
            let spte = ca_read_once64(sptep)
            if isWritableSPTE(spte) { return (VCPUFault(.alreadyWritable), false) }
            if isTrackedGuestTable(gfn) {
                let mark = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu)
                return (VCPUFault(.emulated, newlyLogged: mark.newlyLogged), mark.ringFull)
            }
            guard makeWritableOnFault(sptep, spte, shared: shared) else { continue }
            let mark = markIfLogging(slot: s, gfn: gfn, vcpu: vcpu)
            return (VCPUFault(.madeWritable, newlyLogged: mark.newlyLogged), mark.ringFull)
        }
    }

    // MARK: The rounds the harvests take

    /// vCPU `vcpu` writes a page through `sptep`, the spte its translation
    /// reached, mmu_lock taken for its fault alone.
    ///
    /// Write-protected slot: a writable spte takes the write; a read-only
    /// one faults (`fixWriteFaultLocked`): the only way a leaf of such a
    /// slot becomes writable.
    ///
    /// Dirty-bit slot (PML): the spte is writable; if its dirty bit is
    /// clear the hardware sets it and appends the frame to the vCPU's PML
    /// buffer, no fault; a full buffer exits to the kernel, which logs its
    /// frames (vmx_flush_pml_buffer()).
    @inline(__always) @discardableResult
    public func guestWrite(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int = 0) -> GuestWrite {
        guestWrite(slot: s, gfn: gfn, sptep: sptep, vcpu: vcpu, lockHeld: false)
    }

    /// The write, with mmu_lock already held by the caller when `lockHeld`.
    @inline(__always)
    func guestWrite(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, vcpu: Int, lockHeld: Bool) -> GuestWrite {
        let spte = ca_read_once64(sptep)
        if s.state.pointee.protection == .dirtyBit {
            if spte & SPTE.dirty != 0 { return .noFault }
            ca_write_once64(sptep, spte | SPTE.dirty)
            let v = vcpus.baseAddress! + vcpu
            v.pointee.pml[v.pointee.pmlCount] = gfn
            v.pointee.pmlCount &+= 1
            if v.pointee.pmlCount == VCPULogBuffers.pmlEntries {
                if !lockHeld { lockMMUExclusive() }
                var j = 0
                while j < VCPULogBuffers.pmlEntries { markPageDirty(slot: s, gfn: v.pointee.pml[j], vcpu: vcpu); j &+= 1 }
                v.pointee.pmlCount = 0
                if !lockHeld { unlockMMUExclusive() }
            }
            return .noFault
        }
        if isWritableSPTE(spte) { return .noFault }
        if !lockHeld { lockMMUExclusive() }
        let full = fixWriteFaultLocked(slot: s, gfn: gfn, sptep: sptep, vcpu: vcpu, shared: false).ringFull
        if !lockHeld { unlockMMUExclusive() }
        return full ? .ringFull : .faulted
    }

    /// The guest's writes of a round, from write `start` on: write `i`
    /// goes to `gfns[i]` through `sptes[i]`, the vCPUs taking them in turn
    /// from `vcpu`. Stops after a write that leaves its vCPU's dirty ring
    /// soft-full (the vCPU must wait for a harvest). Returns where it
    /// stopped, and the vCPU of the next write.
    ///
    /// The round's faults run one after another with nothing else on the
    /// VM, so mmu_lock is taken once for them all rather than per fault:
    /// the state they leave is the same. (Writes that race a harvest go
    /// through `vcpuWrite` and `vcpuWriteFault`, a fault at a time.)
    @inline(never)
    public func guestWrites(slot s: SlotView, gfns: UnsafeBufferPointer<GFN>, sptes: UnsafeBufferPointer<UnsafeMutablePointer<UInt64>>,
                            from start: Int, vcpu: Int) -> (next: Int, vcpu: Int, ringFull: Bool) {
        let n = vcpus.count
        var i = start, v = vcpu
        lockMMUExclusive()
        defer { unlockMMUExclusive() }
        while i < gfns.count {
            let full = guestWrite(slot: s, gfn: gfns[i], sptep: sptes[i], vcpu: v, lockHeld: true) == .ringFull
            i &+= 1
            v = v &+ 1 == n ? 0 : v &+ 1
            if full { return (i, v, true) }
        }
        return (i, v, false)
    }

    /// The spte through which address space `mapping` maps `gfn`: entry
    /// `mapping` of its rmap, since populating added one spte per address
    /// space in address-space order. The rounds resolve their writes this
    /// way instead of walking guest page tables, which the model does not
    /// model for address spaces past the first.
    public func spte(gfn: GFN, mapping: Int, slot s: SlotView) -> UnsafeMutablePointer<UInt64>? {
        var it = RmapIterator(s.rmapHead(gfn: gfn, level: 1).pointee)
        var i = 0
        while let p = it.next() {
            if i == mapping { return p }
            i += 1
        }
        return nil
    }

    // MARK: vCPU threads running through a harvest

    /// The vCPU writes `gfn` through `sptep`, the spte its translation
    /// reaches: through a cached writable translation if its TLB has one,
    /// else by a page walk that caches the translation of a writable spte.
    /// A write-protected spte means a fault (`mustFault`).
    @inline(__always)
    public func vcpuWrite(_ vcpu: Int, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>) -> VCPUWrite {
        let c = context(vcpu)
        let tlb = c.pointee.tlb + VCPUContext.tlbIndex(gfn)
        let tag = gfn.rawValue &+ 1
        if tlb.pointee == tag {
            if ca_load64(&c.pointee.believedProtectedGFN) == tag { return .cachedRace }
            return isWritableSPTE(ca_read_once64(sptep)) ? .cached : .cachedStale
        }
        guard isWritableSPTE(ca_read_once64(sptep)) else { return .mustFault }
        tlb.pointee = tag
        return .walked
    }

    /// A write fault on a write-protected spte of a logging slot, from the
    /// VM exit to the re-entry.
    ///
    /// With `fastPath` and where `fastPathAllowed` (the era, a direct spte),
    /// c7ba5b48's fast_page_fault(): an spte write-protected for dirty
    /// logging only (MMU-writable and host-writable) is made writable by
    /// cmpxchg without mmu_lock, retried up to four times when the spte
    /// changed under it, then the page marked dirty. Otherwise the locked
    /// path (`fixWriteFaultLocked`) under mmu_lock: the TDP MMU's read
    /// side, where the spte is set by cmpxchg since other faults and the
    /// TDP walk hold it too; the whole lock before it.
    ///
    /// The handler is an SRCU read section (`VCPUContext.inSRCU`): the
    /// bitmap it marks was read inside it.
    public func vcpuWriteFault(_ vcpu: Int, slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, fastPath: Bool) -> VCPUFault {
        writeFault(vcpu, slot: s, gfn: gfn, sptep: sptep, fast: fastPath && fastPathAllowed(level: 1, slot: s))
    }

    /// The fault, the fast path tried when `fast`.
    @inline(never)
    func writeFault(_ vcpu: Int, slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, fast: Bool) -> VCPUFault {
        let c = context(vcpu)
        vcpuExitGuest(c)
        ca_store_seq32(&c.pointee.inSRCU, 1)
        let fault = handleWriteFault(vcpu: vcpu, slot: s, gfn: gfn, sptep: sptep, fastPath: fast)
        ca_store32(&c.pointee.inSRCU, 0)
        vcpuEnterGuest(vcpu)
        return fault
    }

    @inline(__always)
    func handleWriteFault(vcpu: Int, slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, fastPath: Bool) -> VCPUFault {
        if fastPath {
            var retries = 0
            var spte = ca_read_once64(sptep)
            while isLocklesslyWritableSPTE(spte) && retries <= 4 {
                if let mark = fastPFFixDirectSPTE(slot: s, gfn: gfn, sptep: sptep, observed: spte, vcpu: vcpu) {
                    return VCPUFault(.fastPath, newlyLogged: mark.newlyLogged)
                }
                spte = ca_read_once64(sptep)
                retries &+= 1
            }
        }
        let shared = tdpMMU
        if shared { lockMMUShared() } else { lockMMUExclusive() }
        defer { if shared { unlockMMUShared() } else { unlockMMUExclusive() } }
        return fixWriteFaultLocked(slot: s, gfn: gfn, sptep: sptep, vcpu: vcpu, shared: shared).fault
    }

    /// fast_pf_fix_direct_spte(): make the spte writable if it still holds
    /// `observed`, the value the fast path read and judged locklessly
    /// writable, by cmpxchg (a thread that write-protected it meanwhile,
    /// MMU-writable bit and all, makes it fail), and mark the page dirty.
    /// Nil when the spte had changed.
    @inline(__always)
    func fastPFFixDirectSPTE(slot s: SlotView, gfn: GFN, sptep: UnsafeMutablePointer<UInt64>, observed: UInt64, vcpu: Int) -> DirtyMark? {
        guard ca_cmpxchg64(sptep, observed, observed | SPTE.writable | SPTE.dirty) != 0 else { return nil }
        return markIfLogging(slot: s, gfn: gfn, vcpu: vcpu)
    }

    // MARK: The lifecycle's guest

    /// The hardware's walk for `gfn`: the entry where it stopped (a present
    /// leaf, or an entry that is not present) and its level.
    @inline(__always)
    func walkGuestTree(_ gfn: GFN) -> (sptep: UnsafeMutablePointer<UInt64>, level: Int, spte: UInt64) {
        var table = guestRootTable
        var level = VMLayout.rootLevel
        while true {
            let e = SPTE.entry(in: table, gfn: gfn, level: level)
            let spte = ca_read_once64(e)
            if !isShadowPresentSPTE(spte) || level == 1 || isLargeSPTE(spte) { return (e, level, spte) }
            table = SPTE.childTable(spte)
            level &-= 1
        }
    }

    /// vCPU `vcpu` reads or writes `gfn` (in guest mode). A present leaf
    /// takes a read, and a write if writable; a write to a read-only leaf
    /// faults into `vcpuWriteFault` (4 KiB, or a large leaf of a slot that
    /// no longer logs); anything else - nothing mapped, or a large leaf a
    /// logging slot must map at 4 KiB - faults into `vcpuMapFault`. An
    /// entry frozen by a zap in flight is walked again.
    @inline(__always)
    public func vcpuAccess(_ vcpu: Int, slot s: SlotView, gfn: GFN, write: Bool, fastPath: Bool) -> VCPUAccess {
        while true {
            let (sptep, level, spte) = walkGuestTree(gfn)
            if isFrozenSPTE(spte) {
                ca_cpu_relax()
                continue
            }
            if isShadowPresentSPTE(spte) {
                if !write || isWritableSPTE(spte) { return VCPUAccess(.none) }
                // fast_page_fault() runs first where the era has it; else
                // the slow path fixes the leaf if it is as large as the slot
                // allows now, or maps the larger leaf over it.
                let fast = fastPath && fastPathAllowed(level: level, slot: s)
                if fast || s.maxMappingLevel(gfn, hostLevel: vm.pointee.hostLevel) == level {
                    let f = writeFault(vcpu, slot: s, gfn: level == 1 ? gfn : Self.regionStart(gfn, level: level), sptep: sptep, fast: fast)
                    var a = VCPUAccess(.fixed(f.kind))
                    a.newlyLogged = f.newlyLogged
                    return a
                }
            }
            return vcpuMapFault(vcpu, slot: s, gfn: gfn)
        }
    }
}
