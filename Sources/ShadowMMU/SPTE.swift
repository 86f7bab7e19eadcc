/// The bits of a shadow page-table entry that write protection cares about,
/// at their x86 positions (arch/x86/kvm/mmu/spte.h).
///
/// A leaf spte holds a host frame in bits 12-51; a non-leaf spte holds the
/// address of its child's 512-entry table in the same field, which in the
/// model is the child's jemalloc address (4 KiB aligned, below 2^48).
public enum SPTE {
    /// PT_PRESENT_MASK
    public static let present: UInt64 = 1 << 0
    /// PT_WRITABLE_MASK: what write protection clears.
    public static let writable: UInt64 = 1 << 1
    /// PT_USER_MASK
    public static let user: UInt64 = 1 << 2
    /// PT_ACCESSED_MASK
    public static let accessed: UInt64 = 1 << 5
    /// PT_DIRTY_MASK: set by the hardware on a write; what PML-style
    /// dirty-bit clearing clears instead of the writable bit.
    public static let dirty: UInt64 = 1 << 6
    /// PT_PAGE_SIZE_MASK: a 2 MiB or 1 GiB leaf above level 1.
    public static let pageSize: UInt64 = 1 << 7
    /// SPTE_HOST_WRITEABLE (an ignored bit, 9 where EPT is not in use, as
    /// spte.h's DEFAULT_SPTE_HOST_WRITABLE): the host maps the page
    /// writable. Every leaf the model installs has it: its guest memory is
    /// never read-only on the host.
    public static let hostWritable: UInt64 = 1 << 9
    /// SPTE_MMU_WRITEABLE (bit 10, DEFAULT_SPTE_MMU_WRITABLE; introduced
    /// with the fast page fault, 3.6): the MMU would let the spte be
    /// writable but for dirty logging, so c7ba5b48's fast path may make it
    /// writable again by cmpxchg. Write-protecting a guest page table
    /// clears it too.
    public static let mmuWritable: UInt64 = 1 << 10
    /// PT64_BASE_ADDR_MASK: the frame or child-table address.
    public static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000

    /// REMOVED_SPTE (5.13; FROZEN_SPTE since 6.11): a non-present value
    /// the TDP MMU stores in an entry it is zapping or whose table is
    /// being torn down, so that a fault racing it under the read side of
    /// mmu_lock fails its cmpxchg and retries.
    public static let frozen: UInt64 = 0x5a0

    /// Entries per shadow page (PT64_ENT_PER_PAGE).
    public static let perPage = 512
    /// Bits of gfn each level resolves (PT64_LEVEL_BITS).
    public static let levelBits: UInt64 = 9

    /// A leaf spte mapping host frame `pfn`, readable, not yet writable,
    /// on a page the host maps writable.
    @inline(__always)
    public static func leaf(pfn: UInt64, large: Bool = false) -> UInt64 {
        (pfn << 12) & addressMask | present | user | accessed | hostWritable | (large ? pageSize : 0)
    }

    /// A non-leaf spte pointing at a child table. Non-leaf entries are
    /// always writable: permissions are decided at the leaf.
    @inline(__always)
    public static func nonLeaf(child: UnsafeMutablePointer<UInt64>) -> UInt64 {
        UInt64(UInt(bitPattern: child)) & addressMask | present | writable | user | accessed
    }

    /// The child table a non-leaf spte points at.
    @inline(__always)
    public static func childTable(_ spte: UInt64) -> UnsafeMutablePointer<UInt64> {
        UnsafeMutablePointer(bitPattern: UInt(spte & addressMask))!
    }
}

/// is_shadow_present_pte()
@inline(__always) public func isShadowPresentSPTE(_ spte: UInt64) -> Bool {
    spte & SPTE.present != 0
}

/// is_removed_spte() / is_frozen_spte()
@inline(__always) public func isFrozenSPTE(_ spte: UInt64) -> Bool {
    spte == SPTE.frozen
}

/// is_large_pte()
@inline(__always) public func isLargeSPTE(_ spte: UInt64) -> Bool {
    spte & SPTE.pageSize != 0
}

/// is_last_spte(): a leaf, either at level 1 or a large page above it.
@inline(__always) public func isLastSPTE(_ spte: UInt64, level: Int) -> Bool {
    level == 1 || isLargeSPTE(spte)
}

/// spte_is_locklessly_modifiable() (c7ba5b48): read-only, but both
/// host-writable and MMU-writable: write-protected for dirty logging only,
/// what the fast page fault may make writable without mmu_lock.
@inline(__always) public func isLocklesslyWritableSPTE(_ spte: UInt64) -> Bool {
    spte & (SPTE.hostWritable | SPTE.mmuWritable | SPTE.writable) == SPTE.hostWritable | SPTE.mmuWritable
}

/// is_writable_pte()
@inline(__always) public func isWritableSPTE(_ spte: UInt64) -> Bool {
    spte & SPTE.writable != 0
}

/// Number of 4 KiB pages a leaf at `level` maps (KVM_PAGES_PER_HPAGE).
@inline(__always) public func pagesPerLeaf(level: Int) -> UInt64 {
    1 << (SPTE.levelBits * UInt64(level - 1))
}
