import BenchAnalysis
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
