import CLinuxKVM
import DirtyLogCore
import Foundation
import Glibc
import SystemPackage

/// The guest's program: the write loop, and the exit probe.
extension KVMGuest {
    func writeProgram() {
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
}
