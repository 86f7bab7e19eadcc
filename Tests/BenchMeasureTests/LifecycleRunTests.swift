import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU
import TestSupport
import Testing
@testable import BenchMeasure

/// The lifecycle through the series runner: every phase verified, the
/// leaves per level each policy implies, the seed's rule beside its
/// branches on the same state, the planted bug caught.
@Suite(.serialized, .timeLimit(.minutes(3))) struct LifecycleRunTests {
    /// 16 MiB a vCPU: eight 2 MiB regions.
    static let pages = 4096
    static let regions = pages / 512

    func run(_ paging: Paging, policies: [EnablePolicy] = EnablePolicy.allCases, vcpus: Int = 1, running: Bool = true,
             random: Bool = false, writePercent: Int = 100, planted: PlantedBug? = nil) throws -> LifecycleOutcome {
        var settings = MeasureSettings()
        settings.exitCostNs = 0
        settings.ipiCostNs = 0
        let spec = LifecycleSpec(paging: paging, pagesPerVCPU: Self.pages / vcpus, vcpus: vcpus, backing: .page2M, iterations: 2,
                                 policies: policies, randomAccess: random, writePercent: writePercent, vcpusRunDuringDisable: running)
        let s = LifecycleSeries(spec: spec, settings: settings, progress: Progress(quiet: true))
        #if DEBUG
        s.plantedBug = planted
        #endif
        return try s.run()
    }

    static func failures(_ rows: [LifecycleRow]) -> [String] {
        rows.filter { !$0.verified }.map { "\($0.lifecycleLabel) \($0.phase): \($0.violations)" }
    }

    func first(_ rows: [LifecycleRow], _ policy: EnablePolicy, _ phase: LifecyclePhase, iteration: Int? = nil,
               disable: DisablePolicy? = nil) -> LifecycleRow? {
        rows.first { $0.policy == policy && $0.phase == phase && $0.alternative == nil
            && (iteration == nil || $0.iteration == iteration) && (disable == nil || $0.disable == disable) }
    }

    @Test(arguments: [Paging.tdp, .shadow(mappings: 2)])
    func everyPhaseOfEveryPolicyIsVerified(paging: Paging) throws {
        try watchdog {
            let out = try run(paging)
            #expect(!out.rows.isEmpty)
            #expect(out.rows.allSatisfy { $0.verified }, "\(Self.failures(out.rows))")
            let ran = Set(out.rows.map(\.policy))
            #expect(ran == (paging == .tdp ? Set(EnablePolicy.allCases) : [.drop, .wrprot]))
            #expect(out.skipped.count == (paging == .tdp ? 0 : 2), "eager splitting is the TDP MMU's")
            // Each policy under each kernel that ran it: the TDP MMU's under 6.1 and 6.13.
            let kernels = Set(out.rows.map { "\($0.policy.rawValue) \($0.kernel.rawValue)" })
            #expect(kernels == (paging == .tdp ? ["drop 3.3", "wrprot 6.1", "wrprot 6.13", "eager-split 6.1", "eager-split 6.13",
                                                 "split-on-clear 6.1", "split-on-clear 6.13"] : ["drop 3.3", "wrprot 4.2-5.11"]))
            for l in Set(out.rows.map(\.lifecycleLabel)) {
                let rows = out.rows.filter { $0.lifecycleLabel == l && $0.alternative == nil }, phases = rows.map(\.phase)
                #expect(phases.filter { $0 == .dirty }.count == 2 && phases.filter { $0 == .get }.count == 2, "\(l): two iterations")
                #expect(phases.first == .populate && phases.contains(.enable) && phases.contains(.disable) && phases.last == .refault)
                #expect(Set(rows.compactMap(\.disable)).isSubset(of: rows[0].kernel.disablePolicies()), "\(l): its kernel's disables alone")
            }
        }
    }

    /// The leaves each policy leaves, phase by phase, as dirty_log_page_splitting_test counts them.
    @Test func leavesPerLevelFollowThePolicy() throws {
        try watchdog {
            let rows = try run(.tdp).rows
            let populate = try #require(first(rows, .eagerSplit, .populate))
            #expect(populate.pages2M == Self.regions && populate.pages4K == 0 && populate.tablesAllocated == 2)
            let eager = try #require(first(rows, .eagerSplit, .enable))
            #expect(eager.pages4K == Self.pages && eager.pages2M == 0 && eager.tablesAllocated == Self.regions)
            let wrprot = try #require(first(rows, .wrprot, .enable))
            #expect(wrprot.pages2M == Self.regions && wrprot.pages4K == 0, "large leaves kept, read-only")
            let drop = try #require(first(rows, .drop, .enable))
            #expect(drop.pages2M == 0 && drop.pages4K == 0 && drop.nUsedMMUPages == 3, "dropped: nothing mapped, three tables")
            let soc = try #require(first(rows, .splitOnClear, .enable))
            #expect(soc.pages2M == Self.regions && soc.lockHolds == 0, "initially set: enable does nothing")
            // The first round: drop and wrprot map every page by a fault; eager-split's faults only fix.
            let d1 = try #require(first(rows, .drop, .dirty, iteration: 1))
            #expect(d1.mappingFaults == Self.pages && d1.tablesAllocated == Self.regions && d1.nUsedMMUPages == 3 + Self.regions)
            let w1 = try #require(first(rows, .wrprot, .dirty, iteration: 1))
            #expect(w1.mappingFaults == Self.pages && w1.splitFaults == Self.regions)
            let e1 = try #require(first(rows, .eagerSplit, .dirty, iteration: 1))
            #expect(e1.mappingFaults == 0 && e1.faults == Self.pages && e1.fastFaults == Self.pages)
            let s1 = try #require(first(rows, .splitOnClear, .dirty, iteration: 1))
            #expect(s1.faults == 0, "the huge leaves are writable until the first clear")
            let c1 = try #require(first(rows, .splitOnClear, .clear, iteration: 1))
            #expect(c1.pages4K == Self.pages && c1.tablesAllocated == Self.regions, "the clear split every region")
            // Disabling: the TDP MMU's zaps free the tables, recover maps huge at once, 3.3 keeps its tables.
            for d in [DisablePolicy.zap, .zapBatched, .recover] {
                let r = try #require(first(rows, .eagerSplit, .disable, disable: d))
                #expect(r.tablesFreed == Self.regions && r.splitRegions == 0, "\(d)")
                #expect(r.tlbFlushes >= (d == .zap ? Self.regions : 1), "\(d): flushes")
                let f = try #require(first(rows, .eagerSplit, .refault, disable: d))
                #expect(f.hugeRegions == Self.regions && f.pages4K == 0)
            }
            let w33 = try #require(first(rows, .drop, .refault, disable: .wrprotWalk))
            #expect(w33.hugeRegions == Self.regions && w33.nUsedMMUPages == 3 + Self.regions, "3.3: unlinked tables stay")
        }
    }

    @Test func theSeedRuleIsTimedBesideItsBranchesOnTheSameState() throws {
        try watchdog {
            let rows = try run(.tdp, policies: [.drop]).rows
            for k in 1...2 {
                let gets = rows.filter { $0.phase == .get && $0.iteration == k }
                #expect(gets.count == 3 && Set(gets.compactMap(\.alternative)) == [.rmap, .slotWalk])
                #expect(Set(gets.map(\.nrDirtyPages)) == [Self.pages], "the same pages dirty for each")
                let own = try #require(gets.first { $0.alternative == nil })
                #expect(own.seedChoice == .slotWalk, "\(Self.pages) dirty pages against \(own.nUsedMMUPages) shadow pages")
            }
        }
    }

    @Test func randomPartialWritesAndSeveralVCPUsStayVerified() throws {
        try watchdog {
            let out = try run(.tdp, policies: [.wrprot, .eagerSplit], vcpus: 2, running: false, random: true, writePercent: 60)
            #expect(out.rows.allSatisfy { $0.verified }, "\(Self.failures(out.rows))")
            let d1 = try #require(first(out.rows, .wrprot, .dirty, iteration: 1))
            #expect(d1.faults > 0 && d1.faults < Self.pages, "random pages with replacement, some only read")
        }
    }

    #if DEBUG
    /// A large leaf left writable after enable: each policy's enable row
    /// unverified, by the invariant and by the policy's leaf counts.
    @Test func aLargeLeafLeftWritableIsCaught() throws {
        try watchdog {
            let rows = try run(.tdp, policies: [.drop, .wrprot, .eagerSplit], planted: .largeLeafWritable).rows
            for p in [EnablePolicy.drop, .wrprot, .eagerSplit] {
                let e = try #require(first(rows, p, .enable))
                #expect(!e.verified, "\(p): \(e.violations)")
                #expect(e.violations.contains { $0.contains("writable 2 MiB leaf") }, "\(p): \(e.violations)")
            }
        }
    }
    #endif
}
