import ArgumentParser
import BenchKit
import ShadowMMU
import Foundation

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark how KVM write-protects a slot when it hands out the dirty log.",
        discussion: """
        A struct-of-arrays model of the x86 KVM shadow MMU (shadow pages from jemalloc, \
        rmaps of pte_list_desc chains, double-buffered dirty bitmaps, vCPU dirty rings) \
        is populated like kvm-unit-tests' dirty-log-perf: every page written once, dirty \
        logging enabled. Then, for each dirty-page count, the guest writes that many \
        pages and one harvest of the dirty log is timed per strategy, interleaved, \
        caches cold:

          slot-walk      every shadow page of the VM (kvm_mmu_slot_remove_write_access)
          rmap           per dirty page: walk its rmaps (the seed's new branch)
          seed           the seed's rule: rmap if nr_dirty_pages < n_used_mmu_pages
          masked         per dirty word: xchg it, protect its pages by rmap
                         (kvm_mmu_write_protect_pt_masked)
          rmap-walk      every rmap of the slot, yielding mmu_lock (slot_handle_level)
          tdp-walk       the slot's range of the direct tree (TDP MMU)
          tdp-masked     per dirty word, through the tree
                         (tdp_mmu_clear_dirty_pt_masked)
          dbit-clear     D-bit logging: clear dirty bits instead of write bits
          clear-chunked  manual protect: get, then KVM_CLEAR_DIRTY_LOG in chunks
          ring           per-vCPU dirty rings and KVM_RESET_DIRTY_RINGS
          adaptive       per harvest, the cheapest of the above by a cost model
                         calibrated on the series' own VM

        Every measured harvest is checked against the model's invariant (no \
        writable spte of a clean gfn, nothing logged lost). Results go to a new \
        folder under --output: points.csv, samples.csv, crossover.csv, skipped.csv, \
        an SVG plot per series, report.md and meta.json (results/README.md \
        describes every file and column).

        With no options: a 1 GiB slot under two-dimensional paging (tdp: one spte per \
        gfn) and shadow paging (shadow: each gfn mapped by --mappings sptes in \
        different shadow pages), with evenly spaced and random dirty pages; a 16 GiB \
        slot under both with evenly spaced pages; ten pre-copy migration rounds on \
        the 1 GiB slots; 11 repetitions per point. Lists are comma-separated; sizes \
        are page counts or sizes such as 262144, 64MiB, 1GiB.

        Examples:
          bench --quick                                   a small sweep, seconds
          bench --slot-pages 1GiB --paging tdp --pattern even
          bench --slot-pages 1GiB --vm-pages 8GiB          a 1 GiB slot in an 8 GiB VM
          bench --slot-pages 4GiB --dirty 1,512,65536 --strategy rmap,slot-walk
          bench --preset dirty-log-perf                   model and kernel together
          bench compare results/A results/B --check adaptive

        Where /dev/kvm opens, the same series also run on the real kernel (backend \
        kvm): kvm-get (KVM_GET_DIRTY_LOG), kvm-get+clear (manual protect: \
        KVM_GET_DIRTY_LOG then KVM_CLEAR_DIRTY_LOG) and kvm-ring (the dirty ring and \
        KVM_RESET_DIRTY_RINGS), with a tiny guest writing the same pages.
        """,
        version: "dirty-log-bench 0.1",
        subcommands: [Compare.self]
    )

    /// Parses and runs, reporting any error on one line of stderr: bad input
    /// exits 64 (EX_USAGE), an unwritable output 73, a failure while running 70.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as BenchError {
            FileHandle.standardError.write(Data("bench: error: \(error)\n".utf8))
            Foundation.exit(error.exitStatus)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("bench: error: \(message)\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }

    @Flag(help: "A small sweep (a 64 MiB slot, tdp and shadow, even pages, 5 repetitions), for a first try and for CI.")
    var quick = false

    @Option(name: .customLong("slot-pages"), help: ArgumentHelp(
        "Measured slot sizes, as page counts or sizes. (default: \(RunOptions.Defaults.slotPages); --quick: \(RunOptions.Defaults.quickSlotPages))",
        valueName: "sizes"))
    var slotPages: String?

    @Option(name: .customLong("vm-pages"), help: ArgumentHelp(
        "Total guest memory; what the slot leaves goes to a second slot whose shadow pages count in n_used_mmu_pages (dirty-log-perf's -m). (default: the slot size)",
        valueName: "size"))
    var vmPages: String?

    @Option(help: ArgumentHelp("Paging modes: tdp, shadow. (default: \(RunOptions.Defaults.paging))", valueName: "modes"))
    var paging: String?

    @Option(help: ArgumentHelp("Under shadow paging, the sptes mapping each gfn (guest address spaces), 1 to 16. (default: \(RunOptions.Defaults.mappings))", valueName: "k"))
    var mappings: String?

    @Option(help: ArgumentHelp("Dirty patterns: even, random, clustered, hot-set, one-per-table. (default: \(RunOptions.Defaults.pattern))", valueName: "patterns"))
    var pattern: String?

    @Option(help: ArgumentHelp("Strategies: \(Strategy.allCases.map(\.rawValue).joined(separator: ", ")). (default: all)", valueName: "names"))
    var strategy: String?

    @Option(help: ArgumentHelp("threshold (sweep dirty counts, one harvest per point), migration (rounds of pre-copy: hot-set writes, harvest; timed as a total). (default: both on 1 GiB in the default run, else threshold)", valueName: "names"))
    var scenario: String?

    @Option(help: ArgumentHelp("Dirty-page counts to measure instead of the threshold sweep.", valueName: "counts"))
    var dirty: String?

    @Option(help: ArgumentHelp("Timed repetitions per point and strategy, 1 to 1000. (default: \(RunOptions.Defaults.reps); --quick: \(RunOptions.Defaults.quickReps))", valueName: "n"))
    var reps: String?

    @Option(name: .customLong("min-time"), help: ArgumentHelp("More repetitions, past --reps, until each strategy's timed repetitions at a point add up to this (up to ten times --reps): 0.5, 0.5s, 50ms. (default: 0)", valueName: "time"))
    var minTime: String?

    @Option(help: ArgumentHelp("Untimed repetitions before them, 0 to 100. (default: \(RunOptions.Defaults.warmup))", valueName: "n"))
    var warmup: String?

    @Option(help: ArgumentHelp("cold: evict the caches before each timed protection; warm: do not. (default: cold)", valueName: "mode"))
    var cache: String?

    @Option(help: ArgumentHelp("Seed of random patterns, shadow layouts and strategy order. (default: \(RunOptions.Defaults.seed))", valueName: "n"))
    var seed: String?

    @Option(help: ArgumentHelp("Where run folders go.", valueName: "dir"))
    var output = "results"

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @Option(help: ArgumentHelp("vCPUs writing; each has a dirty ring and a PML buffer, 1 to 64. (default: 2)", valueName: "n"))
    var vcpus: String?

    @Option(name: .customLong("ring-entries"), help: ArgumentHelp("Entries of each vCPU's dirty ring for ring, a power of two from 128. (default: 65536)", valueName: "n"))
    var ringEntries: String?

    @Option(name: .customLong("yield-every"), help: ArgumentHelp("rmap-walk and tdp-walk release and retake mmu_lock every this many gfns. (default: 4096)", valueName: "gfns"))
    var yieldEvery: String?

    @Option(name: .customLong("clear-chunk-pages"), help: ArgumentHelp("clear-chunked's KVM_CLEAR_DIRTY_LOG size, a multiple of 64 pages. (default: 262144, QEMU's 1 GiB)", valueName: "size"))
    var clearChunkPages: String?

    @Option(name: .customLong("cluster-pages"), help: ArgumentHelp("clustered: pages per run. (default: 16)", valueName: "n"))
    var clusterPages: String?

    @Option(name: .customLong("zipf-skew"), help: ArgumentHelp("hot-set: the Zipf exponent, 0 to 4. (default: 1)", valueName: "s"))
    var zipfSkew: String?

    @Option(help: ArgumentHelp("migration: harvest rounds, 1 to 64. (default: 10)", valueName: "n"))
    var rounds: String?

    @Option(help: ArgumentHelp("model, kvm or both: kvm runs the same series on the real kernel through /dev/kvm. (default: both, the kernel when /dev/kvm opens)", valueName: "name"))
    var backend: String?

    @Option(name: .customLong("kvm-reps"), help: ArgumentHelp("Timed repetitions per kernel point and strategy, 1 to 1000. (default: \(RunOptions.Defaults.kvmReps))", valueName: "n"))
    var kvmReps: String?

    @Option(name: .customLong("kvm-budget"), help: ArgumentHelp("Seconds one kernel series may take; the points that would exceed it are skipped and listed in skipped.csv. (default: \(RunOptions.Defaults.kvmBudgetSeconds))", valueName: "seconds"))
    var kvmBudget: String?

    @Option(help: ArgumentHelp("dirty-log-perf: kvm-unit-tests' experiment (--slot-pages as its -n, default 262144; --vm-pages as its -m), 1, 2, 4, ... dirty pages evenly spaced, on the model and the kernel side by side.", valueName: "name"))
    var preset: String?

    func run() throws {
        var o = RunOptions()
        o.quick = quick
        o.slotPages = slotPages
        o.vmPages = vmPages
        o.paging = paging
        o.mappings = mappings
        o.pattern = pattern
        o.strategy = strategy
        o.dirty = dirty
        o.reps = reps
        o.warmup = warmup
        o.cache = cache
        o.seed = seed
        o.output = output
        o.quiet = quiet
        o.backend = backend
        o.kvmReps = kvmReps
        o.kvmBudget = kvmBudget
        o.preset = preset
        o.minTime = minTime
        o.scenario = scenario
        o.vcpus = vcpus
        o.ringEntries = ringEntries
        o.yieldEvery = yieldEvery
        o.clearChunkPages = clearChunkPages
        o.clusterPages = clusterPages
        o.zipfSkew = zipfSkew
        o.rounds = rounds
        let plan = try o.plan()
        let outcome = try BenchRun(plan: plan).run()
        if let p = preset {
            print(Reports.sideBySide(outcome.rows, scenario: p))
            print("")
        }
        let tables = [Reports.summary(outcome.crossover), Reports.successorSummary(outcome.crossover),
                      Reports.kernelSummary(outcome.crossover)].filter { !$0.isEmpty }
        if !tables.isEmpty { print(tables.joined(separator: "\n\n")) }
        for n in outcome.notes { print("\n" + n) }
        print("")
        let bad = outcome.rows.filter { !$0.verified }.count
        print("points:    \(outcome.directory)/points.csv (\(outcome.rows.count) rows, " + (bad == 0 ? "all verified)" : "\(bad) NOT verified)"))
        print("crossover: \(outcome.directory)/crossover.csv")
        if !outcome.skipped.isEmpty {
            print("skipped:   \(outcome.directory)/skipped.csv (\(outcome.skipped.count) entries)")
        }
        print(String(format: "wall time: %.1f s", outcome.seconds))
        if bad > 0 { throw ExitCode(1) }
    }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two runs point by point: the change in median and whether it is significant.",
        discussion: """
        For every point and strategy both runs measured, the change in median from the \
        first run to the second, and a two-sided Mann-Whitney U test on their timed \
        repetitions (samples.csv), corrected for the number of comparisons \
        (Benjamini-Hochberg at --fdr). Each repetition is first divided by the \
        geometric mean of the point's strategies in the same repetition, so a machine \
        that got slower overall does not read as a regression of every strategy. Prints, per \
        series and strategy, the median and range of that change over its points and how \
        many points changed significantly, then the significant changes; writes every \
        comparison to a CSV. Exits 1 when a strategy named by --check (any, by default) \
        got significantly slower by more than --max-regression percent: for CI.

        Example: bench compare results/20261125-101500 results/20261125-103000 --check rmap --max-regression 10
        """
    )

    @Argument(help: "The baseline run folder.")
    var runA: String

    @Argument(help: "The run folder to compare with it.")
    var runB: String

    @Option(help: ArgumentHelp("Strategies whose regressions fail the comparison. (default: all)", valueName: "names"))
    var check: String?

    @Option(name: .customLong("max-regression"), help: ArgumentHelp("Percent slowdown, significant, that fails the comparison, 0 to 1000. (default: 30; between two quick runs minutes apart this machine showed relative shifts up to 28%)", valueName: "percent"))
    var maxRegression: String?

    @Option(help: ArgumentHelp("False-discovery rate for significance, 0.0001 to 0.5. (default: 0.05)", valueName: "q"))
    var fdr: String?

    @Option(help: ArgumentHelp("Where the CSV goes. (default: <run-b>/compare-<run-a name>.csv)", valueName: "file"))
    var csv: String?

    func run() throws {
        let limit = try Double(Parse.int(maxRegression ?? "30", option: "--max-regression", range: 0...1000))
        let q = try fdr.map { text -> Double in
            guard let v = Double(text), v >= 0.0001, v <= 0.5 else {
                throw BenchError.usage("--fdr: '\(text)' is out of range; accepted: 0.0001 to 0.5")
            }
            return v
        } ?? 0.05
        let names = Set(try check.map { try Parse.list($0, option: "--check") { $0 } } ?? [])
        let comparison = try RunComparison.load(runA, runB, q: q)
        guard !comparison.rows.isEmpty else {
            throw BenchError.usage("run-b: \(runB) shares no point with \(runA); compare runs of the same sweep")
        }
        let unknown = names.subtracting(comparison.rows.map(\.strategy))
        guard unknown.isEmpty else {
            throw BenchError.usage("--check: \(unknown.sorted().joined(separator: ", ")) measured in neither run; accepted: "
                + Set(comparison.rows.map(\.strategy)).sorted().joined(separator: ", "))
        }
        let file = csv ?? (runB as NSString).appendingPathComponent("compare-" + (runA as NSString).lastPathComponent + ".csv")
        try AtomicFile.write(comparison.table.text, to: file)
        print(comparison.summary())
        print("\ncsv: \(file)")
        let bad = comparison.regressions(strategies: names, limitPct: limit)
        if !bad.isEmpty {
            print("\nREGRESSION: \(bad.count) point(s) of \(names.isEmpty ? "any strategy" : names.sorted().joined(separator: ", ")) significantly slower by more than \(Int(limit))%")
            throw ExitCode(1)
        }
    }
}
