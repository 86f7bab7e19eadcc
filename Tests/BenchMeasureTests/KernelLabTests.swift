import BenchAnalysis
@testable import BenchMeasure
import DirtyLogCore
import Foundation
import Testing

/// The kernel lab's report on counts the lab recorded: Linux 6.1's KVM
/// under QEMU (scripts/kernel-lab, 2026-12-07), a 64 MiB THP-backed guest,
/// its lifecycle-kvm.csv rows as written (pages_* include the code slot's
/// 4 KiB leaves, code_slot_pages_4k). The model must count what that
/// kernel counted, phase by phase.
@Suite struct KernelLabTests {
    static let header = "series,slot_pages,backing,mode,phase,iteration,ns,pages_4k,pages_2m,pages_1g,code_slot_pages_4k,emulated,clock,"
        + "remote_tlb_flush,remote_tlb_flush_requests,mmu_shadow_zapped,mmu_cache_miss,mmu_pte_write,mmu_pde_zapped,mmu_flooded,"
        + "mmu_recycled,mmu_unsync,nx_lpage_splits,max_mmu_rmap_size"

    /// tdp boot (the TDP MMU), manual protect with initially-set: the
    /// first CLEAR splits (cb00a70b), the disable zaps 32 tables, a flush each.
    static let tdpGetClear = """
    populate,,1,16,32,0,16,0,emulated,0,0,0,0
    enable,,1,16,32,0,16,0,emulated,0,0,0,0
    dirty,1,1,17,32,0,17,0,emulated,0,0,0,0
    get,1,1,17,32,0,17,0,emulated,0,0,0,0
    clear,1,1,16401,0,0,17,0,emulated,0,1,0,0
    dirty,2,1,16401,0,0,17,0,emulated,0,1,0,0
    get,2,1,16401,0,0,17,0,emulated,0,1,0,0
    clear,2,1,16401,0,0,17,0,emulated,0,2,0,0
    dirty,3,1,16401,0,0,17,0,emulated,0,2,0,0
    get,3,1,16401,0,0,17,0,emulated,0,2,0,0
    clear,3,1,16401,0,0,17,0,emulated,0,3,0,0
    disable,,1,17,0,0,17,0,emulated,0,35,0,0
    refault,,1,17,32,0,17,0,emulated,0,35,0,0
    """

    /// shadow boot (npt=0: the shadow MMU maps the guest directly), no
    /// manual protect: enable write-protects the 2 MiB leaves whole, the
    /// first pass drops each (a flush each) and maps 4 KiB.
    static let shadowGet = """
    populate,,1,16,32,0,16,0,emulated,0,0,0,5
    enable,,1,16,32,0,16,0,emulated,0,1,0,5
    dirty,1,1,16401,0,0,17,0,emulated,0,33,0,37
    get,1,1,16401,0,0,17,0,emulated,0,34,0,37
    dirty,2,1,16401,0,0,17,0,emulated,0,34,0,37
    get,2,1,16401,0,0,17,0,emulated,0,35,0,37
    dirty,3,1,16401,0,0,17,0,emulated,0,35,0,37
    get,3,1,16401,0,0,17,0,emulated,0,36,0,37
    disable,,1,17,0,0,17,0,emulated,0,37,0,37
    refault,,1,17,32,0,17,0,emulated,0,69,0,37
    """

    /// shadow boot, manual protect with initially-set: the first CLEAR
    /// write-protects the 2 MiB leaves whole (no split without the TDP
    /// MMU) and flushes, though no 4 KiB spte was protected.
    static let shadowGetClear = """
    populate,,1,16,32,0,16,0,emulated,0,0,0,5
    enable,,1,16,32,0,16,0,emulated,0,0,0,5
    dirty,1,1,17,32,0,17,0,emulated,0,0,0,5
    get,1,1,17,32,0,17,0,emulated,0,0,0,5
    clear,1,1,17,32,0,17,0,emulated,0,1,0,5
    dirty,2,1,16401,0,0,17,0,emulated,0,33,0,37
    get,2,1,16401,0,0,17,0,emulated,0,33,0,37
    clear,2,1,16401,0,0,17,0,emulated,0,34,0,37
    dirty,3,1,16401,0,0,17,0,emulated,0,34,0,37
    get,3,1,16401,0,0,17,0,emulated,0,34,0,37
    clear,3,1,16401,0,0,17,0,emulated,0,35,0,37
    disable,,1,17,0,0,17,0,emulated,0,36,0,37
    refault,,1,17,32,0,17,0,emulated,0,68,0,37
    """

    /// A lab folder with `lifecycles` (paging, mode, rows) as the lab writes them.
    func labFolder(_ lifecycles: [(paging: String, mode: String, rows: String)]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kernel-lab-\(UUID().uuidString)").path
        for paging in Set(lifecycles.map(\.paging)) {
            let run = dir + "/\(paging)/bench-64MiB/20261207-000000"
            try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
            var text = Self.header + "\n"
            for l in lifecycles where l.paging == paging {
                for row in l.rows.split(separator: "\n") {
                    // series..mode, the phase's fields, then the statistics past the four given.
                    text += "lifecycle 64MiB tdp 2m 1 vCPU (kvm),16384,2m,\(l.mode)," + row + ",0,0,0,0,0,0,0\n"
                }
            }
            try text.write(toFile: run + "/lifecycle-kvm.csv", atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test func theModelCountsWhatLinux61Counted() throws {
        let dir = try labFolder([("tdp", "kvm-get+clear", Self.tdpGetClear), ("shadow", "kvm-get", Self.shadowGet),
                                 ("shadow", "kvm-get+clear", Self.shadowGetClear)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try KernelLab(folder: dir).run(progress: Progress(quiet: true))
        #expect(r.rows.count == 13 + 10 + 13)
        for row in r.rows {
            let at = "\(row.paging) \(row.mode) \(row.phase.rawValue) \(row.iteration ?? 0)"
            #expect(row.leavesAgree, "\(at): kernel \(row.kernelLeaves), model \(row.modelLeaves)")
            #expect(row.kernelFlushes == row.modelFlushes, "\(at): flushes kernel \(row.kernelFlushes ?? -1), model \(row.modelFlushes)")
            #expect(row.explanation.isEmpty, "\(at)")
        }
        #expect(r.hugeMissing.isEmpty)
    }

    @Test func aCountTheModelDoesNotReachIsShownAsADifference() throws {
        let wrong = Self.shadowGet.replacingOccurrences(of: "enable,,1,16,32,0", with: "enable,,1,16,31,0")
        let dir = try labFolder([("shadow", "kvm-get", wrong)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try KernelLab(folder: dir).run(progress: Progress(quiet: true))
        let differing = r.rows.filter { !$0.leavesAgree }
        #expect(differing.map(\.phase) == [.enable])
        #expect(differing.first?.explanation == "not explained")
    }

    @Test func aHugeBackedLifecycleWithoutHugeLeavesFailsTheReport() throws {
        let flat = Self.shadowGet.replacingOccurrences(of: ",32,0,1", with: ",0,0,1")
        let dir = try labFolder([("shadow", "kvm-get", flat)])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try KernelLab(folder: dir).run(progress: Progress(quiet: true)).hugeMissing.count == 1)
    }

    @Test func theSelftestsPhaseLinesAreRead() {
        let p = SelftestPhases.parse("""
        Testing guest mode: PA-bits:ANY, VA-bits:48,  4K pages
        Populate memory time: 0.207976770s
        Enabling dirty logging time: 0.003706740s

        Iteration 1 dirty memory time: 0.014900690s
        Iteration 1 get dirty log time: 0.000196910s
        Iteration 1 clear dirty log time: 0.011707230s
        Disabling dirty logging time: 0.007395180s
        Get dirty log over 3 iterations took 0.000300820s. (Avg 0.000100273s/iteration)
        """)
        #expect(p.populate == 0.207976770 && p.enable == 0.003706740 && p.disable == 0.007395180)
        #expect(p.dirty == [1: 0.014900690] && p.get == [1: 0.000196910] && p.clear == [1: 0.011707230])
        #expect(p.seconds(.refault, iteration: nil) == nil)
    }
}
