/// How the test guest runs, which decides how far it reaches.
public enum GuestMode: String, Sendable {
    /// 32-bit protected mode, paging off: guest-virtual is guest-physical,
    /// so the guest reaches the first 4 GiB.
    case flat32
    /// 64-bit long mode on an identity map of 2 MiB pages: any slot below
    /// 240 GiB.
    case long64

    /// The mode a guest whose memory ends at `endGPA` needs.
    public static func needed(endGPA: UInt64) -> GuestMode {
        endGPA <= GuestLayout.flat32Reach ? .flat32 : .long64
    }
}

/// Where things sit in guest-physical memory.
///
///     0x0000_0000  code slot: the write loop at +0x1000, long mode's page
///                  tables at +0x10000, the list of addresses to write at +1 MiB
///     0x4000_0000  flat32: the measured slot (slot 0), then the VM's other
///                  memory (slot 1)
///     0x1_0000_0000  long64: the same
public enum GuestLayout {
    public static let measuredSlot: UInt32 = 0
    public static let otherSlot: UInt32 = 1
    public static let codeSlot: UInt32 = 2

    static let codeOffset = 0x1000
    static let pageTablesOffset = 0x10000
    static let listOffset = 0x10_0000
    /// One page-directory page per GiB fits between the tables and the list.
    static let maxIdentityGiB = (listOffset - pageTablesOffset) / 4096 - 2
    static let flat32Reach: UInt64 = 1 << 32
    static let pageSize: UInt64 = 4096

    /// Where the measured slot begins: on a 1 GiB boundary in either mode,
    /// so that a slot backed by 1 GiB pages can be mapped by 1 GiB leaves
    /// (the guest-physical and host-virtual addresses of a huge page must
    /// share their alignment; at 256 MiB, as it was, pages_1g stayed 0).
    static func slotGPA(_ mode: GuestMode) -> UInt64 {
        mode == .flat32 ? 0x4000_0000 : 0x1_0000_0000
    }

    /// Bytes of one list entry: a 32- or 64-bit guest-physical address.
    static func entryBytes(_ mode: GuestMode) -> Int { mode == .flat32 ? 4 : 8 }

    /// The code slot: the program, the tables and a list long enough for
    /// every page of the VM, rounded up to 2 MiB.
    static func codeSlotBytes(_ mode: GuestMode, listEntries: Int) -> Int {
        let raw = listOffset + listEntries * entryBytes(mode)
        return (raw + (2 << 20) - 1) & ~((2 << 20) - 1)
    }
}

/// kvm-unit-tests' vmexit test in miniature: `cpuid` in a loop, each one a
/// VM exit KVM handles in the kernel, and the same loop without it, to
/// subtract:
///
///     loop:  xor eax, eax ; cpuid ; dec esi ; jnz loop ; hlt       esi = count
///     empty: dec esi ; jnz empty ; hlt
enum ExitLoop {
    /// Where the two loops sit in the code slot, past the write loop.
    static let cpuidOffset = GuestLayout.codeOffset + 0x400
    static let emptyOffset = GuestLayout.codeOffset + 0x480

    static func cpuid(_ mode: GuestMode) -> [UInt8] {
        let body: [UInt8] = [0x31, 0xC0, 0x0F, 0xA2] + decESI(mode)     // xor eax, eax ; cpuid ; dec esi
        return body + [0x75, UInt8(bitPattern: Int8(-(body.count + 2))), 0xF4]
    }

    static func empty(_ mode: GuestMode) -> [UInt8] {
        let body = decESI(mode)
        return body + [0x75, UInt8(bitPattern: Int8(-(body.count + 2))), 0xF4]
    }

    static func decESI(_ mode: GuestMode) -> [UInt8] { mode == .flat32 ? [0x4E] : [0xFF, 0xCE] }
}

/// The guest's only program: write one byte to each address of a list, then
/// halt. Unrolled eight times, since each guest instruction may cost a trip
/// through KVM's emulator:
///
///     test ecx, ecx ; jz rem            ecx = count / 8, edx = count % 8, rsi = list
///     block: 8 × (lods ; mov byte [eax/rax], al) ; dec ecx ; jnz block
///     rem:   test edx, edx ; jz done
///     r1:    lods ; mov byte [eax/rax], al ; dec edx ; jnz r1
///     done:  hlt
///
/// A store, not a read-modify-write (`add byte [eax], 1`, as this loop
/// was): the first touch of a page must be a write fault, as
/// dirty_log_perf_test's guest makes it. A read first makes the host map
/// its shared zero page, and the write after it breaks that copy-on-write
/// one 4 KiB page at a time: a THP-backed guest never got a huge leaf
/// (pages_2m 0 in the kernel lab).
enum WriteLoop {
    static let unroll = 8

    static func code(_ mode: GuestMode) -> [UInt8] {
        let lods: [UInt8] = mode == .flat32 ? [0xAD] : [0x48, 0xAD]      // lodsd / lodsq
        let storeByte: [UInt8] = [0x88, 0x00]                             // mov byte [eax/rax], al
        let decECX: [UInt8] = mode == .flat32 ? [0x49] : [0xFF, 0xC9]     // dec ecx
        let decEDX: [UInt8] = mode == .flat32 ? [0x4A] : [0xFF, 0xCA]     // dec edx
        let one = lods + storeByte
        let block = Array(repeating: one, count: unroll).flatMap { $0 } + decECX
        let remainder = one + decEDX

        var c: [UInt8] = []
        c += [0x85, 0xC9]                                          // test ecx, ecx
        c += [0x74, UInt8(block.count + 2)]                        // jz rem (skip block + its jnz)
        c += block
        c += [0x75, UInt8(bitPattern: Int8(-(block.count + 2)))]   // jnz block
        c += [0x85, 0xD2]                                          // rem: test edx, edx
        c += [0x74, UInt8(remainder.count + 2)]                    // jz done
        c += remainder
        c += [0x75, UInt8(bitPattern: Int8(-(remainder.count + 2)))] // jnz r1
        c += [0xF4]                                                // done: hlt
        return c
    }
}
