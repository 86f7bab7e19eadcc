import CAtomics
import DirtyLogCore
import Foundation
import Testing
@testable import ShadowMMU

/// The pieces vCPU threads run on, one thread at a time: TLBs and the
/// flush requests that empty them, the fault paths, page-table shadowing,
/// and mmu_lock of each era.
@Suite struct ConcurrencyTests {
    /// The round's pages as a vCPU pass writes them, through mapping 0.
    func pass(_ mmu: MMU, _ gfns: [GFN], faultPath: FaultPath = .locked, shadowAt: Int = -1) -> VCPUPassStats {
        let s = mmu.slot(id: VMLayout.measuredSlotID)
        let sptes = gfns.map { mmu.spte(gfn: $0, mapping: 0, slot: s)! }
        return gfns.withUnsafeBufferPointer { g in
            sptes.withUnsafeBufferPointer { p in
                var v = VCPUPass(gfns: g.baseAddress!, sptes: p.baseAddress!, count: g.count, vcpu: 0, faultPath: faultPath)
                v.shadowAt = shadowAt
                return mmu.vcpuPass(v)
            }
        }
    }

    /// A write through a cached writable translation does not fault, even
    /// once the spte is protected; the next flush request, served when the
    /// vCPU enters, drops it and the write faults again.
    @Test(arguments: FaultPath.allCases)
    func translationsStayCachedUntilTheVCPUServesAFlush(faultPath: FaultPath) {
        let vm = VirtualMachine.small(.tdp, slotPages: 4096)
        vm.startGuests(count: 1)
        defer { vm.stopGuests() }
        let gfns = stride(from: 0, to: 4096, by: 64).map { GFN(UInt64($0)) }
        vm.withMMU { mmu in
            let first = pass(mmu, gfns, faultPath: faultPath)
            #expect(first.faults == gfns.count, "every page starts write-protected")
            #expect(faultPath == .locked ? first.fastFaults == 0 : first.fastFaults == gfns.count)
            #expect(pass(mmu, gfns, faultPath: faultPath).faults == 0, "cached now")
            // Protect without a flush: the cached translations still let writes through.
            mmu.forEachLeafSPTE { sptep, _, _, _ in sptep.pointee &= ~SPTE.writable }
            #expect(pass(mmu, gfns, faultPath: faultPath).faults == 0)
            mmu.flushRemoteTLBs()  // the vCPU is outside guest mode: nothing waits
            #expect(pass(mmu, gfns, faultPath: faultPath).faults == gfns.count, "the flush dropped them")
        }
    }

    /// Shadowing a guest page table write-protects its sptes and, by the
    /// era's rule, flushes: at the seed only if it cleared a writable bit,
    /// since 198c74f4 also if an spte was MMU-writable. Writes to it are
    /// then emulated, not let through.
    @Test func shadowingFlushesByItsErasRule() {
        let vm = VirtualMachine.small(.shadow(mappings: 1), slotPages: 4096)
        vm.startGuests(count: 1)
        defer { vm.stopGuests() }
        let gfns: [GFN] = [10, 20, 30]
        vm.withMMU { mmu in
            _ = pass(mmu, gfns)
            // A harvest's protection without its flush yet: writable bits gone, MMU-writable kept.
            for g in gfns { mmu.spte(gfn: g, mapping: 0, slot: vm.measured)!.pointee &= ~SPTE.writable }
            vm.enterEra(.seed)
            #expect(!mmu.shadowGuestTable(20, vcpu: 0), "the seed's shadower saw nothing writable and skipped its flush")
            vm.enterEra(.modern)
            mmu.unshadowGuestTable(vcpu: 0)
            #expect(mmu.shadowGuestTable(10, vcpu: 0), "198c74f4's shadower flushes for the MMU-writable spte")
            #expect(mmu.isShadowedGuestTable(10) && !mmu.isShadowedGuestTable(20))
            let s = mmu.slot(id: VMLayout.measuredSlotID)
            let before = mmu.spte(gfn: 10, mapping: 0, slot: s)!.pointee
            #expect(before & (SPTE.writable | SPTE.mmuWritable) == 0)
            #expect(mmu.vcpuWriteFault(slot: s, gfn: 10, sptep: mmu.spte(gfn: 10, mapping: 0, slot: s)!, vcpu: 0, fast: true) == .emulated)
            #expect(s.dirtyBitmap[0] & (1 << 10) != 0, "an emulated write is logged")
            #expect(!isWritableSPTE(mmu.spte(gfn: 10, mapping: 0, slot: s)!.pointee))
            mmu.unshadowGuestTable(vcpu: 0)
            #expect(mmu.vcpuWriteFault(slot: s, gfn: 10, sptep: mmu.spte(gfn: 10, mapping: 0, slot: s)!, vcpu: 0, fast: true) == .madeWritable,
                    "no longer MMU-writable: the slow path makes it writable")
        }
    }

    /// The ticket lock serves waiters in arrival order: a holder that
    /// releases and asks again queues behind the waiter. So does the queued
    /// (MCS) lock.
    @Test(arguments: [KernelEra.seed, .modern])
    func aWaiterIsServedBeforeTheHolderRetakesTheLock(era: KernelEra) {
        let vm = VirtualMachine.small(.tdp, slotPages: 64)
        vm.enterEra(era)
        let served = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        served.initialize(to: 0)
        defer { served.deallocate() }
        vm.withMMU { mmu in
            mmu.spinLock()
            let before = vm.state.pointee.mmuLock
            let box = UnsafeTransferBox(mmu: mmu, served: served)
            let waiter = Thread {
                box.mmu.spinLock()
                ca_store32(box.served, 1)
                box.mmu.spinUnlock()
            }
            waiter.start()
            // Until the waiter has queued.
            while true {
                let now = vm.state.pointee.mmuLock
                if era == .seed ? now.ticket_next != before.ticket_next : now.mcs_tail != before.mcs_tail { break }
                ca_cpu_relax()
            }
            mmu.spinUnlock()
            mmu.spinLock()
            #expect(ca_load32(served) == 1, "the waiter got the lock first")
            mmu.spinUnlock()
        }
    }

    /// The TDP MMU's rwlock: readers share it, a writer has it alone.
    @Test func readersShareTheTDPMMUsLock() {
        let vm = VirtualMachine.small(.tdp, slotPages: 64)
        vm.enterEra(.tdpMMU)
        vm.withMMU { mmu in
            mmu.readLock()
            mmu.readLock()
            #expect(vm.state.pointee.mmuLock.rw == 2)
            mmu.readUnlock()
            mmu.readUnlock()
            mmu.spinLock()
            #expect(vm.state.pointee.mmuLock.rw == -1)
            mmu.spinUnlock()
            #expect(ca_mmu_is_locked(&vm.state.pointee.mmuLock) == 0)
        }
    }
}

private struct UnsafeTransferBox: @unchecked Sendable {
    let mmu: MMU
    let served: UnsafeMutablePointer<UInt32>
}
