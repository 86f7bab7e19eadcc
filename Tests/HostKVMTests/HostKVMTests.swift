import DirtyLogCore
import Glibc
import Testing
@testable import HostKVM

/// Against the real kernel when /dev/kvm can be opened; each test says why
/// it skipped otherwise.
@Suite(.serialized) struct HostKVMTests {
    static let device: KVMDevice? = try? KVMDevice()
    static var skipReason: String {
        do { _ = try KVMDevice(); return "" } catch { return "\(error)" }
    }

    func pagesOf(bitmap: UnsafeMutableBufferPointer<UInt64>, pages: Int) -> [UInt32] {
        (0..<pages).filter { bitmap[$0 >> 6] & (1 << UInt64($0 & 63)) != 0 }.map(UInt32.init)
    }

    /// What one round of writes met: full-ring exits and chunk ends, each
    /// answered by a harvest, and the entries those harvests collected.
    struct Round {
        var ringFullExits = 0
        var chunkHarvests = 0
        var ringEntriesDuringWrites: [UInt64] = []
    }

    /// The guest writes `pages`, the ring harvested whenever it stops.
    func write(_ g: KVMGuest, _ pages: [UInt32]) throws -> Round {
        try pages.map { SlotOffset(rawValue: $0) }.withUnsafeBufferPointer { try g.loadWriteList($0) }
        g.beginWrites()
        var r = Round()
        while true {
            switch try g.resumeWrites() {
            case .done: return r
            case .ringFull:
                r.ringFullExits += 1
                try g.harvestRing()
                try g.checkFullRingHarvest()
            case .chunkEnd:
                r.chunkHarvests += 1
                try g.harvestRing()
            }
            r.ringEntriesDuringWrites += g.ringOffsets[0..<g.ringHarvested]
        }
    }

    @Test(.enabled(if: device != nil, "/dev/kvm cannot be opened: \(skipReason)"))
    func aGuestThatNeverHaltsIsAnErrorNotAHang() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 64)
        g.writeSpinningProgram()
        try [SlotOffset(1)].withUnsafeBufferPointer { try g.loadWriteList($0) }
        g.beginWrites()
        let t0 = MonotonicClock.now()
        #expect {
            try g.resumeWrites(budget: 200_000_000)
        } throws: { error in
            guard case KVMError.timedOut(let m) = error else { return false }
            return m.contains("did not halt within 0.2 s (1 writes to do")
        }
        #expect(MonotonicClock.now() - t0 < 5_000_000_000, "given up soon after the deadline")
    }

    @Test(.enabled(if: device != nil, "/dev/kvm cannot be opened: \(skipReason)"))
    func getDirtyLogReturnsExactlyTheWrittenPages() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 4096)
        #expect(g.mode == .flat32)
        let pages: [UInt32] = [0, 1, 63, 64, 1000, 4095]
        _ = try write(g, pages)
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096) == pages)
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096).isEmpty, "a second harvest with no writes returns nothing")
    }

    @Test(.enabled(if: device.map { $0.unsupported(.getClear) == nil } ?? false, "no manual dirty-log protect here: \(skipReason)"))
    func getAndClearReturnsThePagesAndClearsThem() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 4096)
        try g.setManualProtect(true)
        let pages: [UInt32] = [7, 8, 9, 2048]
        _ = try write(g, pages)
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096) == pages)
        try g.clearDirtyLog()
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096).isEmpty, "cleared pages stay clear until written again")
        _ = try write(g, [9])
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096) == [9])
        try g.clearDirtyLog()
        try g.setManualProtect(false)
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 4096).isEmpty, "back in automatic mode, nothing is pending")
    }

    @Test(.enabled(if: device.map { $0.unsupported(.ring) == nil } ?? false, "no dirty ring here: \(skipReason)"))
    func theRingHandsOutEachWrittenPageOnce() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 4096, ringEntries: 4096)
        let pages: [UInt32] = [3, 4, 5, 4000]
        let round = try write(g, pages)
        #expect(round.ringFullExits == 0)
        try g.harvestRing()
        #expect(Array(g.ringOffsets[0..<g.ringHarvested]).sorted() == pages.map(UInt64.init))
        #expect(g.ringForeign == 0)
        try g.harvestRing()
        #expect(g.ringHarvested == 0, "a second harvest with no writes returns nothing")
    }

    @Test(.enabled(if: device.map { $0.unsupported(.ring) == nil } ?? false, "no dirty ring here: \(skipReason)"))
    func aRoundLargerThanTheRingIsHarvestedBetweenChunks() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 8192, ringEntries: 1024)
        let pages = (0..<UInt32(3000)).map { $0 * 2 }
        let round = try write(g, pages)
        #expect(round.chunkHarvests == 5, "3000 pages in chunks of 512")
        try g.harvestRing()
        #expect(g.ringHarvested == 3000 - 5 * 512, "the last chunk is left for the timed harvest")
        let all = (round.ringEntriesDuringWrites + g.ringOffsets[0..<g.ringHarvested]).sorted()
        #expect(all == pages.map(UInt64.init), "every page exactly once across the harvests")
    }

    @Test(.enabled(if: device != nil, "/dev/kvm cannot be opened: \(skipReason)"))
    func aSlotAbove4GiBRunsTheGuestInLongMode() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 1 << 20, vmPages: (1 << 20) + 4096)
        #expect(g.mode == .long64)
        let pages: [UInt32] = [0, 99_999, (1 << 20) - 1]
        _ = try write(g, pages)
        try g.getDirtyLog()
        #expect(pagesOf(bitmap: g.bitmap, pages: 1 << 20) == pages)
    }

    @Test(.enabled(if: device != nil, "/dev/kvm cannot be opened: \(skipReason)"))
    func badSetupsAreRefusedBeforeAnyIoctl() throws {
        #expect(throws: KVMError.invalidSetup("a slot of 0 pages: it needs at least one")) {
            _ = try KVMGuest(device: Self.device!, slotPages: 0)
        }
        #expect(throws: KVMError.self) { _ = try KVMGuest(device: Self.device!, slotPages: 100, vmPages: 50) }
        #expect(throws: KVMError.self) { _ = try KVMGuest(device: Self.device!, slotPages: 100, ringEntries: 1000) }
        let g = try KVMGuest(device: Self.device!, slotPages: 64)
        #expect(throws: KVMError.invalidSetup("page 64 is past the slot's 64 pages")) {
            try [SlotOffset(1), SlotOffset(64)].withUnsafeBufferPointer { try g.loadWriteList($0) }
        }
    }

    @Test(.enabled(if: device != nil, "/dev/kvm cannot be opened: \(skipReason)"))
    func statisticsAreReadable() throws {
        let g = try KVMGuest(device: Self.device!, slotPages: 256)
        let vm = try g.vmStats()
        #expect(vm["pages_4k"] != nil)
        let vcpu = try g.vcpuStats()
        #expect(vcpu["exits"] != nil)
    }
}
