import DirtyLogCore
import HostKVM

/// The real kernel as `TimedHarvest` drives it: a VM for the bitmap
/// strategies (manual protect switched on for kvm-get+clear, off for
/// kvm-get, round by round) and one whose vCPU logs to a dirty ring.
struct KernelBackend: HarvestBackend {
    let bitmapVM: KVMGuest?
    let ringVM: KVMGuest?
    /// The VM of the round under way.
    private var vm: KVMGuest
    /// Ring entries handed out during the writes (full rings, chunks),
    /// and how many of those harvests answered KVM_EXIT_DIRTY_RING_FULL.
    private(set) var ringEntriesDuringWrites: [UInt64] = []
    private(set) var ringFullExits = 0
    private var lastStop = KVMGuest.WriteStop.done

    init(bitmapVM: KVMGuest?, ringVM: KVMGuest?) {
        precondition(bitmapVM != nil || ringVM != nil)
        self.bitmapVM = bitmapVM
        self.ringVM = ringVM
        vm = (bitmapVM ?? ringVM)!
    }

    /// The VM that logs to a bitmap, or the ring one when there is none.
    var anyVM: KVMGuest { (bitmapVM ?? ringVM)! }

    mutating func beginRound(_ s: KernelStrategy, _ round: DirtySet) throws {
        vm = s.usesRing ? ringVM! : bitmapVM!
        if !s.usesRing { try vm.setManualProtect(s == .getClear) }
        vm.beginWrites()
        ringEntriesDuringWrites = []
        ringFullExits = 0
    }

    mutating func write(_ s: KernelStrategy, _ round: DirtySet) throws -> Bool {
        lastStop = try vm.resumeWrites()
        if lastStop == .ringFull { ringFullExits += 1 }
        return lastStop == .done
    }

    mutating func harvestFullRing() throws {
        try vm.harvestRing()
        if lastStop == .ringFull { try vm.checkFullRingHarvest() }
        ringEntriesDuringWrites += UnsafeBufferPointer(rebasing: vm.ringOffsets[0..<vm.ringHarvested])
    }

    func evict(_ s: KernelStrategy, _ round: DirtySet, with eviction: CacheEviction) {
        eviction.evictAll()
    }

    mutating func harvest(_ s: KernelStrategy, phases: inout HarvestPhaseMarks) throws -> HarvestOutcome {
        switch s {
        case .get:
            try vm.getDirtyLog()
        case .getClear:
            try vm.getDirtyLog()
            phases.firstPhaseEnded()
            try vm.clearDirtyLog()
        case .ring:
            try vm.harvestRing()
        }
        return HarvestOutcome()
    }

    /// The pages the kernel handed out must be exactly the pages written:
    /// for a ring, each once, none of another slot or past the slot.
    func verify(_ s: KernelStrategy, _ expected: DirtySet, _ outcome: HarvestOutcome) -> Verdict {
        var verdict = Verdict()
        if s.usesRing {
            var seen = [UInt64](repeating: 0, count: expected.bitmap.count)
            var duplicates: [UInt64] = [], outside: [UInt64] = []
            let final = UnsafeBufferPointer(rebasing: vm.ringOffsets[0..<vm.ringHarvested])
            for off in ringEntriesDuringWrites + Array(final) {
                guard off < UInt64(vm.slotPages) else { outside.append(off); continue }
                let (w, b) = (Int(off >> 6), off & 63)
                if seen[w] & (1 << b) != 0 { duplicates.append(off) }
                seen[w] |= 1 << b
            }
            verdict.merge(Self.compare(seen, expected.bitmap))
            if !duplicates.isEmpty { verdict.fail("ring entries repeated: \(duplicates.prefix(4))") }
            if !outside.isEmpty { verdict.fail("ring entries past the slot: \(outside.prefix(4))") }
            if vm.ringForeign > 0 { verdict.fail("\(vm.ringForeign) ring entries of other slots") }
            return verdict
        }
        return Self.compare(Array(vm.bitmap), expected.bitmap)
    }

    static func compare(_ got: [UInt64], _ want: [UInt64]) -> Verdict {
        var v = Verdict()
        for w in got.indices where got[w] != want[w] {
            let missing = want[w] & ~got[w], extra = got[w] & ~want[w]
            if missing != 0 { v.fail("kernel lacks written page \(w << 6 | missing.trailingZeroBitCount)") }
            if extra != 0 { v.fail("kernel reports unwritten page \(w << 6 | extra.trailingZeroBitCount)") }
        }
        return v
    }
}
