import BenchAnalysis
import CAtomics
import DirtyLogCore
import ShadowMMU
import Testing
@testable import BenchMeasure

/// `bench check-eviction` as a function: every sample measured after both
/// evictions through the timed path, verified, and written with the size
/// of the full read it was checked against.
@Suite struct EvictionCheckTests {
    @Test func everySampleIsMeasuredAfterBothEvictionsAndVerified() throws {
        var check = EvictionCheck(layouts: [VMLayout(paging: .tdp, slotPages: 4096)], patterns: [.even, .random], counts: [1, 64],
                                  strategies: [.masked, .slotWalk], reps: 3, seed: 7)
        check.fullReadBytes = 96 << 20
        let r = try check.run(progress: Progress(quiet: true))
        #expect(r.samples.count == 2 * 2 * 2, "patterns x counts x strategies")
        #expect(r.samples.allSatisfy { $0.footprint.count == 3 && $0.full.count == 3 && $0.footprintMedian > 0 && $0.fullMedian > 0 })
        #expect(r.violations == 0)
        #expect(r.footprintEvictionNs > 0 && r.fullEvictionNs > 0)
        let bytes = try #require(r.table.columns.firstIndex(of: "full_read_bytes"))
        #expect(r.table.rows.count == 8 && r.table.rows.allSatisfy { $0[bytes] == "\(96 << 20)" })
        #expect(r.summary.contains("for the full read of 96MiB"), "\(r.summary)")
    }
}

/// The eviction in the timed path (`TimedHarvest.measure`): the
/// "harvest" of a probe backend times single loads of a 256 KiB buffer
/// its round just read (the level-2 cache holds it) and its eviction was
/// asked to empty. Through the timed path with the eviction, the loads come
/// from memory; without it, from the cache. Take the eviction out of the
/// timed path and every "cold" harvest runs warm: this fails.
@Suite(.serialized) struct ColdHarvestTests {
    struct ProbeBackend: HarvestBackend {
        typealias Method = Int
        typealias Round = Int
        let buffer: UnsafeMutablePointer<UInt64>
        static let words = 256 << 10 / 8
        var ticks: [UInt64] = []

        mutating func beginRound(_ method: Int, _ round: Int) {}
        mutating func write(_ method: Int, _ round: Int) -> Bool {
            var sum: UInt64 = 0
            for i in stride(from: 0, to: Self.words, by: 8) { sum &+= buffer[i] }
            buffer[1] = sum
            return true
        }
        mutating func harvestFullRing() {}
        func evict(_ method: Int, _ round: Int, with eviction: CacheEviction) {
            eviction.evict(bitmap: UnsafeRawBufferPointer(start: buffer, count: Self.words * 8))
        }
        /// Lines in an order no prefetcher follows.
        static let probes: [Int] = {
            var lines = Array(stride(from: 0, to: words, by: 8))
            var x: UInt64 = 0x9E37_79B9_7F4A_7C15
            for i in stride(from: lines.count - 1, to: 0, by: -1) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                lines.swapAt(i, Int(x % UInt64(i + 1)))
            }
            return Array(lines.prefix(64))
        }()

        mutating func harvest(_ method: Int, phases: inout HarvestPhaseMarks) -> HarvestOutcome {
            ticks = Self.probes.map { ca_load_ticks(buffer + $0) }
            return HarvestOutcome()
        }
        mutating func verify(_ method: Int, _ round: Int, _ outcome: HarvestOutcome) -> Verdict { Verdict() }
    }

    func medianLoadTicks(eviction: CacheEviction?) throws -> UInt64 {
        let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: ProbeBackend.words)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: ProbeBackend.words)
        var backend = ProbeBackend(buffer: buffer)
        var timer = TimedHarvest(eviction: eviction)
        var all: [UInt64] = []
        for _ in 0..<5 {
            _ = try timer.measure(&backend, 0, 0)
            all += backend.ticks
        }
        return all.sorted()[all.count / 2]
    }

    @Test func aColdHarvestFindsItsDataOutOfTheCaches() throws {
        let warm = try medianLoadTicks(eviction: nil)
        let cold = try medianLoadTicks(eviction: CacheEviction(mode: .footprint))
        #expect(cold > 3 * warm, "a load after the eviction took \(cold) ticks, without it \(warm): the caches were not emptied")
    }
}

/// A cold harvest is evicted the same way in every run, however large its
/// footprint: choosing the cheaper of the flushes and a full read from
/// costs measured at a run's start evicted a 16 GiB walk by its footprint in
/// one run and by a full read in the next, as the shared cache moved those
/// costs. Bring that choice back and a 256 MiB footprint (4 Mi lines, far
/// dearer to flush than a full read) is evicted by a read: this fails.
@Suite struct EvictionModeTests {
    @Test func aLargeFootprintIsFlushedNotRead() {
        let bytes = 256 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { buffer.deallocate() }
        let eviction = CacheEviction()
        eviction.evict(bitmap: UnsafeRawBufferPointer(start: buffer, count: bytes))
        eviction.evict(bitmap: UnsafeRawBufferPointer(start: buffer, count: 64))
        #expect(eviction.counts == [.footprint: 2], "\(eviction.counts)")
        let forced = CacheEviction(mode: .full, fullReadBytes: 64 << 20)
        forced.evict(bitmap: UnsafeRawBufferPointer(start: buffer, count: 64))
        #expect(forced.counts == [.full: 1])
    }

    /// The code a harvest runs is flushed with its data: this test's own
    /// code lies in the ranges flushed (the test runner, like `bench`, is
    /// one executable with the modules it tests). Match another file's
    /// mapping, or none, and this fails.
    @Test func theExecutablesOwnCodeIsAmongTheFlushedRanges() {
        let probe: @convention(c) () -> Void = {}
        let address = unsafeBitCast(probe, to: UInt.self)
        #expect(ExecutableText.ranges.contains { address >= $0.start && address < $0.start + UInt($0.bytes) },
                "\(String(address, radix: 16)) outside \(ExecutableText.ranges.map { String($0.start, radix: 16) })")
    }
}

/// `bench breakdown` as a function: the model's rmap and slot-walk beside
/// the minimal C implementation, step by step, warm and cold, each harvest
/// checked. The C functions with all their steps must leave every spte the
/// round wrote read-only before the model's untimed harvest completes the
/// protocol: a minimal implementation that skips the store fails here.
@Suite struct CostBreakdownTests {
    @Test(arguments: [Paging.tdp, Paging.shadow(mappings: 2)])
    func everyVariantIsTimedAndTheCompleteOnesProtectEverySpte(paging: Paging) throws {
        let b = CostBreakdown(layout: VMLayout(paging: paging, slotPages: 4096), dirtyPages: 4096, reps: 3, seed: 5)
        let r = try b.run(progress: Progress(quiet: true))
        #expect(r.violations == 0, "\(r.messages)")
        #expect(r.rows.count == 2 * CostBreakdown.variants.count)
        #expect(r.rows.allSatisfy { $0.samples.count == 3 && $0.median > 0 })
        #expect(r.rmapSptes == 4096 * paging.sptesPerGFN, "every spte of every dirty page visited")
        #expect(r.walkSptes > 0 && r.walkSptes % SPTE.perPage == 0)
        #expect(r.table.rows.count == 2 * (BreakdownVariant.rmapSteps.count + BreakdownVariant.walkSteps.count + 2))
        #expect(r.ratio(.warm, .rmap) > 0 && r.ratio(.cold, .slotWalk) > 0)
    }
}
