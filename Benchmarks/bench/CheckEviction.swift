import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import ShadowMMU

/// `bench check-eviction`: the cheap eviction against the full one.
struct CheckEviction: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-eviction",
        abstract: "Check that the footprint eviction leaves harvests at least as cold as a full 2×LLC read.",
        discussion: """
        A run evicts before each timed harvest by flushing (clflushopt) exactly the \
        lines the harvest will touch, however many, and the executable's code. This \
        measures that eviction against a read of twice the last-level cache on sample \
        points: per series, dirty count and strategy, the harvest after each eviction, \
        interleaved, and the ratio of their medians (footprint over full). Beyond 10% \
        with a Mann-Whitney p-value below 0.01, a sample is "warmer" after the flushes \
        (they missed lines it touches, or the read evicted its page walks' page-table \
        lines, which no flush reaches: exit 1) or "colder" (the read left part of its \
        data cached, as a read of a last-level cache shared with other tenants \
        does). Writes eviction-check.csv to a \
        new folder under --output. Takes the run's options --slot-pages (default \
        1GiB), --paging, --mappings, --pattern (default even,random), --dirty \
        (default 1,16,256,4096,65536 and the slot), --strategy, --reps (default 11), \
        --seed, --output and --quiet. --full-read makes the full read larger, to see \
        how much of a harvest's data a larger read still leaves cached (see \
        results/README.md).
        """
    )

    /// The run's options: slots, paging modes, counts, strategies, repetitions, seed, output.
    @ParentCommand var bench: Bench

    @Option(name: .customLong("full-read"), help: ArgumentHelp(
        "What the full read reads, as a size or page count, from 2×LLC to 4GiB: a larger one shows whether 2×LLC leaves part of a scattered harvest's data cached. (default: 2×LLC, at least 64MiB)",
        valueName: "size"))
    var fullRead: PageCount?

    /// The run's options this check takes; any other is refused, not ignored.
    static let accepted: Set = ["--slot-pages", "--paging", "--mappings", "--pattern", "--dirty", "--strategy", "--reps", "--seed", "--output", "--quiet"]

    func run() throws {
        try bench.refuseOptions(except: Self.accepted, in: "check-eviction")
        let m = bench.measurement
        let slots = try (bench.slotPages?.values ?? [PageCount(1 << 18)]).map { try Check.pages($0, "--slot-pages", SweepLimits.slotPages) }
        let reps = try Check.int(m.reps ?? 11, "--reps", 3...1000)
        let counts = try bench.dirty.map { try $0.values.map { try Check.int($0, "--dirty", 1...slots.max()!, unit: "dirty pages") } }
        let k = try bench.mappings.map { try Check.int($0, "--mappings", SweepLimits.mappings) } ?? SweepDefaults.mappings
        let layouts = slots.flatMap { s in (bench.paging?.values ?? SweepDefaults.pagings).map { VMLayout(paging: $0.paging(mappings: k), slotPages: s) } }
        let least = CacheGeometry.fullEvictionBytes
        let fullBytes = try fullRead.map { try Check.pages($0, "--full-read", least / 4096...(1 << 20)) * 4096 } ?? least
        var check = EvictionCheck(layouts: layouts, patterns: bench.pattern?.values ?? SweepDefaults.patterns,
                                  counts: counts ?? ([1, 16, 256, 4096, 65536] + slots).sorted(),
                                  strategies: m.strategies, reps: reps, seed: m.seed)
        check.fullReadBytes = fullBytes
        let folder = try RunFolder.create(under: m.output)
        let result = try check.run(progress: Progress(quiet: m.quiet))
        try bench.finishCheck(in: folder, table: result.table, file: "eviction-check.csv", summary: result.summary, violations: result.violations)
        if !result.warmer.isEmpty { throw ExitCode(1) }
    }
}
