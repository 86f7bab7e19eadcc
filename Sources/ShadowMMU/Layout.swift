import DirtyLogCore

/// How the guest's memory is translated, and so how many sptes map each gfn.
public enum Paging: Hashable, Sendable, CustomStringConvertible {
    /// Two-dimensional paging (EPT/NPT): one direct shadow-page tree indexed
    /// by gfn, so one spte per gfn.
    case tdp
    /// Shadow paging: every guest page table is shadowed. `mappings` guest
    /// address spaces each map all of guest memory, so each gfn has that many
    /// sptes, in different shadow pages. Address space 0 maps gfns in order
    /// (a kernel's direct map); the others map them in a seeded random order
    /// (process page tables).
    case shadow(mappings: Int)

    /// How reports name it.
    public var mode: PagingMode {
        switch self {
        case .tdp: .tdp
        case .shadow: .shadow
        }
    }

    /// Sptes mapping each gfn once populated.
    public var sptesPerGFN: Int {
        switch self {
        case .tdp: 1
        case .shadow(let k): k
        }
    }

    public var description: String {
        switch self {
        case .tdp: "tdp"
        case .shadow(let k): "shadow(\(k) mappings)"
        }
    }
}

/// The VM a scenario measures: slot 0, the measured one, at gfn 0; the rest
/// of the VM's memory (if any) in slot 1 right after it, as
/// dirty-log-perf's `-n` and `-m` split it.
public struct VMLayout: Hashable, Sendable {
    public static let measuredSlotID = 0
    public static let otherSlotID = 1
    /// The paging levels of the model's shadow-page trees (4-level: root is level 4).
    public static let rootLevel = 4

    public var paging: Paging
    public var slotPages: Int
    public var vmPages: Int
    /// Seeds the order in which shadow paging's extra address spaces map gfns.
    public var seed: UInt64
    /// What backs guest memory: the largest leaf populating installs where
    /// a slot covers a whole aligned region (under shadow paging, in
    /// address space 0, the guest's own map of its memory; the others map
    /// 4 KiB pages in a random order, which no huge page can cover).
    public var backing: Backing

    public init(paging: Paging, slotPages: Int, vmPages: Int? = nil, seed: UInt64 = 1, backing: Backing = .page4K) {
        self.paging = paging
        self.slotPages = slotPages
        self.vmPages = vmPages ?? slotPages
        self.seed = seed
        self.backing = backing
    }

    /// Shadow pages one address space needs to map `vmPages` pages from gfn 0
    /// with 4 KiB leaves: leaf tables, then each upper level, then the root.
    public static func shadowPagesPerAddressSpace(pages: Int) -> Int {
        var total = 0
        var n = pages
        for _ in 1..<rootLevel {
            n = (n + SPTE.perPage - 1) / SPTE.perPage
            total += n
        }
        return total + 1
    }

    /// Whether `strategy` can run on this layout: the tdp ones walk the
    /// two-dimensional paging structure, which shadow paging has not.
    public func runs(_ strategy: Strategy) -> Bool { !strategy.needsTDP || paging == .tdp }

    /// n_used_mmu_pages once every page is mapped.
    public var expectedShadowPages: Int {
        paging.sptesPerGFN * Self.shadowPagesPerAddressSpace(pages: vmPages)
    }

    /// Bytes the populated model occupies in its arena, plus the transient
    /// mapping-order permutation, with `vcpus` dirty rings of `ringEntries`
    /// and PML buffers: what must fit before anything is allocated.
    public func estimatedBytes(vcpus: Int = 1, ringEntries: Int = 4096) -> Int {
        let k = paging.sptesPerGFN
        let pages = expectedShadowPages
        let tables = pages * 4096 * (paging == .tdp ? 1 : 2)
        let columns = pages * 40
        let rmaps = vmPages * 8 + 2 * (vmPages / 512 + 2) * 8
        let descs = k > 1 ? vmPages * ((k + PteList.entriesPerDesc - 1) / PteList.entriesPerDesc) * 40 : 0
        let bitmaps = 2 * DirtyBitmap.words(pages: vmPages) * 8
        let permutation = k > 1 ? vmPages * 4 : 0
        let ownerIndex = pages * 64
        let perVCPU = ringEntries * MemoryLayout<DirtyGFN>.stride + VCPULogBuffers.pmlEntries * 8 + 8192
        return tables + columns + rmaps + descs + bitmaps + permutation + ownerIndex + vcpus * perVCPU
    }
}
