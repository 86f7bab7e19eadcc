import CAtomics
import DirtyLogCore
import Testing
@testable import ShadowMMU

/// mmu_lock records holds only when the measuring side chose the
/// instrumented lock: the era's lock alone costs the model nothing more,
/// whatever a thread asks to record.
@Suite struct LockInstrumentationTests {
    /// One hold of each side on this thread, recording asked for; the
    /// holds recorded.
    func holdsRecorded(_ vm: VirtualMachine) -> (exclusive: UInt64, shared: UInt64) {
        let holds = UnsafeMutablePointer<UInt64>.allocate(capacity: 8)
        defer { holds.deallocate() }
        var stats = ca_lock_stats()
        stats.exclusive.holds = holds
        stats.exclusive.cap = 4
        stats.shared.holds = holds + 4
        stats.shared.cap = 4
        withUnsafeMutablePointer(to: &stats) { p in
            ca_lock_stats_set(p)
            vm.withMMU { mmu in
                mmu.lockMMUExclusive()
                mmu.unlockMMUExclusive()
                let loop = mmu.lockForLoop()
                mmu.lockMMUExclusive(loop)
                mmu.unlockMMUExclusive(loop)
                mmu.lockMMUShared()
                mmu.unlockMMUShared()
            }
            ca_lock_stats_set(nil)
        }
        return (stats.exclusive.count, stats.shared.count)
    }

    @Test(arguments: KernelEra.allCases)
    func onlyTheInstrumentedLockRecords(era: KernelEra) {
        let vm = VirtualMachine.small(.tdp)
        vm.enterEra(era)
        let plain = holdsRecorded(vm)
        #expect(plain.exclusive == 0 && plain.shared == 0, "the era's lock recorded holds at \(era.label)")
        vm.instrumentLock(true)
        #expect(vm.lockInstrumented)
        let recorded = holdsRecorded(vm)
        // The shared side is the whole lock but for the rwlock.
        let sharedSide: UInt64 = era.hasTDPMMU ? 1 : 0
        #expect(recorded.exclusive == 3 - sharedSide && recorded.shared == sharedSide, "at \(era.label)")
        // A new era keeps the measuring side's choice.
        vm.enterEra(era == .linux3_3to3_5 ? .linux5_14on : .linux3_3to3_5)
        #expect(vm.lockInstrumented)
        vm.instrumentLock(false)
        #expect(!vm.lockInstrumented && holdsRecorded(vm) == (0, 0))
    }
}
