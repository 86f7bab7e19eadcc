import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import ShadowMMU
import Testing
@testable import bench

/// The command line parsed in process: typed values, their bounds, the
/// default plan.
@Suite struct OptionTests {
    /// The one-line usage error a plan of `args` fails with, or nil.
    func usageMessage(_ args: [String], memory: Int = 1 << 40) -> String? {
        do {
            let command = try Bench.parseAsRoot(args)
            if let run = command as? Bench { _ = try run.plan(memoryAvailable: memory) }
            if let perf = command as? DirtyLogPerf { _ = try perf.plan(memoryAvailable: memory) }
        } catch let e as BenchError {
            if case .usage(let m) = e { return m }
        } catch {
            return Bench.oneLine(Bench.fullMessage(for: error))
        }
        return nil
    }

    @Test func pageCountsAcceptCountsAndBinarySizes() {
        #expect(PageCount(argument: "262144")?.pages == 262_144)
        #expect(PageCount(argument: "1GiB")?.pages == 262_144)
        #expect(PageCount(argument: "16G")?.pages == 4_194_304)
        #expect(PageCount(argument: "64mib")?.pages == 16384)
        #expect(PageCount(argument: "4KiB")?.pages == 1)
        for bad in ["abc", "1.5GiB", "6KiB", "", "99999999999999999999"] { #expect(PageCount(argument: bad) == nil, "\(bad)") }
        #expect(CommaList<PageCount>(argument: "1GiB,16GiB")?.values.map(\.pages) == [262_144, 4_194_304])
        #expect(CommaList<PageCount>(argument: "1GiB,,2GiB") == nil)
    }

    @Test(arguments: [
        (["--slot-pages", "0"], "--slot-pages: 0 pages is out of range; accepted: 1 to 268435456 pages"),
        (["--slot-pages", "2TiB"], "--slot-pages: 536870912 pages is out of range"),
        (["--slot-pages", "lots"], "The value 'lots' is invalid for '--slot-pages <sizes>'"),
        (["--reps", "0"], "--reps: 0 is out of range; accepted: 1 to 1000"),
        (["--reps", "many"], "The value 'many' is invalid for '--reps <n>'"),
        (["--strategy", "rmap,fast"], "The value 'rmap,fast' is invalid for '--strategy <names>'. Please provide one of the following: slot-walk, rmap, rmap-fixed, seed,"),
        (["--fault-path", "lockless"], "The value 'lockless' is invalid for '--fault-path <paths>'"),
        (["--vcpu-threads", "0", "--scenario", "concurrent"], "--vcpu-threads: 0 is out of range; accepted: 1 to 16"),
        (["--guest-wss", "2GiB", "--scenario", "concurrent"], "--guest-wss: 524288 pages is out of range; accepted: 1 to 262144 pages"),
        (["--fault-path", "fast", "--scenario", "threshold"], "--fault-path: applies to --scenario concurrent only"),
        (["--pattern", "zipf"], "The value 'zipf' is invalid for '--pattern <patterns>'"),
        (["--paging", "ept"], "The value 'ept' is invalid for '--paging <modes>'. Please provide one of 'tdp' and 'shadow'"),
        (["--slot-pages", "1GiB", "--dirty", "1,262145"], "--dirty: 262145 is out of range; accepted: 1 to 262144 dirty pages (at most the slot's 262144 pages)"),
        (["--slot-pages", "1GiB", "--vm-pages", "512MiB"], "--vm-pages: 131072 pages is smaller than the slot"),
        (["--mappings", "17"], "--mappings: 17 is out of range; accepted: 1 to 16"),
        (["--cache", "lukewarm"], "The value 'lukewarm' is invalid for '--cache <mode>'. Please provide one of 'cold', 'full' or 'warm'"),
        (["--ring-entries", "1000"], "--ring-entries: 1000 is not a power of two"),
        (["--clear-chunk-pages", "100"], "--clear-chunk-pages: 100 pages is not a multiple of 64"),
        (["--kvm-budget", "0"], "--kvm-budget: 0 is out of range; accepted: 1 to 86400 seconds"),
        (["--zipf-skew", "5"], "--zipf-skew: 5.0 is out of range; accepted: 0 to 4"),
        (["--output", ""], "--output: empty path; give a directory"),
        (["dirty-log-perf", "-n", "1024", "-m", "512"], "-m: 512 pages is out of range; accepted: 1024 to 268435456 pages"),
    ])
    func badValuesNameTheOptionAndWhatItAccepts(args: [String], expected: String) {
        let m = usageMessage(args)
        #expect(m?.hasPrefix(expected) == true, "\(m ?? "no error")")
        #expect(m?.contains("\n") == false)
    }

    @Test func aConfigurationLargerThanMemoryIsRefused() {
        let m = usageMessage(["--slot-pages", "1TiB", "--paging", "shadow", "--mappings", "4"], memory: 24 << 30)
        #expect(m?.hasPrefix("--slot-pages: a 1TiB VM under shadow(4 mappings) needs about") == true, "\(m ?? "")")
        #expect(m?.hasSuffix("this machine has 24GiB available") == true)
    }

    @Test func theDefaultRunIsTheCuratedSet() throws {
        let plan = try Bench.parse([]).plan(memoryAvailable: 1 << 40)
        #expect(plan.modelSeries.map(\.key.label) == [
            "threshold 1GiB tdp even", "threshold 1GiB tdp random",
            "threshold 1GiB shadow×2 even", "threshold 1GiB shadow×2 random",
            "threshold 16GiB tdp even", "threshold 16GiB shadow×2 even",
            "migration 1GiB tdp hot-set", "migration 1GiB shadow×2 hot-set",
            "concurrent 1GiB tdp even locked faults", "concurrent 1GiB tdp even fast faults",
            "concurrent 1GiB shadow×2 even locked faults",
            "concurrent 16GiB tdp even locked faults", "concurrent 16GiB tdp even fast faults",
            "concurrent 16GiB shadow×2 even locked faults",
        ], "no fast-fault series under shadow paging: its sptes are indirect")
        #expect(plan.modelSeries.filter(\.measuresPollution).map(\.key.label) == [
            "concurrent 1GiB tdp even locked faults", "concurrent 1GiB shadow×2 even locked faults",
            "concurrent 16GiB tdp even locked faults", "concurrent 16GiB shadow×2 even locked faults",
        ], "the pollution once per layout")
        #expect(plan.notes.contains { $0.contains("no fast-fault series under shadow paging") })
        #expect(plan.measuresHostExits)
        #expect(plan.kernelSeries.map(\.key.label) == ["threshold 1GiB tdp even", "threshold 1GiB tdp random", "threshold 16GiB tdp even"])
        #expect(plan.settings.repetitions == .standard)
        #expect(plan.settings.cache == .cold)
        #expect(plan.modelSeries.allSatisfy { $0.strategies == ($0.scenario == .concurrent ? Strategy.concurrentDefaults : Strategy.sweepDefaults) })
        #expect(plan.modelSeries.allSatisfy { $0.scenario != .concurrent || $0.counts == .guestSweep })
        #expect(plan.settings.guestThreads == 1)
    }

    @Test func typedValuesReachThePlan() throws {
        let plan = try Bench.parse(["--slot-pages", "64MiB", "--paging", "shadow", "--mappings", "3", "--pattern", "clustered",
                                    "--strategy", "rmap,slot-walk", "--reps", "7", "--warmup", "0", "--cache", "warm",
                                    "--seed", "9", "--cluster-pages", "32", "--backend", "model"]).plan(memoryAvailable: 1 << 40)
        #expect(plan.modelSeries.count == 1 && plan.kernelSeries.isEmpty)
        let s = plan.modelSeries[0]
        #expect(s.layout == VMLayout(paging: .shadow(mappings: 3), slotPages: 16384, seed: 9))
        #expect(s.pattern == .clustered && s.strategies == [.rmap, .slotWalk])
        #expect(plan.settings.repetitions == .fixed(7, warmup: 0))
        #expect(plan.settings.cache == .warm && plan.settings.seed == 9 && plan.settings.patterns.clusterPages == 32)
    }

    @Test func quickIsSmall() throws {
        let plan = try Bench.parse(["--quick"]).plan(memoryAvailable: 1 << 40)
        #expect(plan.modelSeries.allSatisfy { $0.layout.slotPages == 16384 && $0.pattern == .even })
        #expect(plan.modelSeries.map(\.layout.paging) == [.tdp, .shadow(mappings: 2)])
        #expect(plan.settings.repetitions == .quick)
    }

    @Test func dirtyLogPerfIsKvmUnitTestsExperiment() throws {
        let command = try Bench.parseAsRoot(["dirty-log-perf", "-n", "4096", "-m", "8192", "--reps", "3"])
        let plan = try #require(command as? DirtyLogPerf).plan(memoryAvailable: 1 << 40)
        #expect(plan.modelSeries.map(\.key.label) == ["dirty-log-perf 16MiB tdp in 32MiB VM even"])
        #expect(plan.modelSeries[0].counts == .powersOfTwo)
        #expect(plan.kernelSeries.first?.counts == SweepPlan.powersOfTwo(slotPages: 4096))
        #expect(plan.settings.repetitions == .fixed(3))
    }
}
