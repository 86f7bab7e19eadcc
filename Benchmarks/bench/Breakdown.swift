import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import ShadowMMU

/// `bench breakdown`: the model's per-page cost against a minimal implementation.
struct Breakdown: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "rmap's and slot-walk's cost per page, step by step, against a minimal C implementation.",
        discussion: """
        Times, on one model VM with the given number of pages dirty (default: every \
        page of the slot), the model's rmap and slot-walk harvests beside a plain C \
        implementation of the seed's two branches (kvm_mmu_rmap_write_protect() per \
        dirty page; kvm_mmu_slot_remove_write_access()) working on the same bitmap, \
        rmaps and sptes, run to each of its steps in turn: the difference between \
        consecutive steps is what that step of the kernel function costs, and the \
        model over the whole C function is what the model does beyond it. Warm and \
        cold (evicted as the sweep evicts), every variant interleaved, repetition \
        by repetition, through the sweep's timed path; every harvest checked. \
        Writes breakdown.csv to a new folder under --output. Takes the run's options \
        --slot-pages (default 1GiB), --paging (default tdp), --mappings, --dirty (one \
        count, default the slot), --reps (default 21), --seed, --output and --quiet.
        """
    )

    @ParentCommand var bench: Bench

    static let accepted: Set = ["--slot-pages", "--paging", "--mappings", "--dirty", "--reps", "--seed", "--output", "--quiet"]

    func run() throws {
        try bench.refuseOptions(except: Self.accepted, in: "breakdown")
        let m = bench.measurement
        let slots = try (bench.slotPages?.values ?? [PageCount(1 << 18)]).map { try Check.pages($0, "--slot-pages", SweepLimits.slotPages) }
        guard slots.count == 1 else { throw BenchError.usage("--slot-pages: breakdown takes one slot size") }
        let pagings = bench.paging?.values ?? [.tdp]
        guard pagings.count == 1 else { throw BenchError.usage("--paging: breakdown takes one paging mode") }
        let k = try bench.mappings.map { try Check.int($0, "--mappings", SweepLimits.mappings) } ?? SweepDefaults.mappings
        let counts = try bench.dirty.map { try $0.values.map { try Check.int($0, "--dirty", 1...slots[0], unit: "dirty pages") } } ?? [slots[0]]
        guard counts.count == 1 else { throw BenchError.usage("--dirty: breakdown takes one dirty count") }
        let reps = try Check.int(m.reps ?? 21, "--reps", 3...1000)
        let breakdown = CostBreakdown(layout: VMLayout(paging: pagings[0].paging(mappings: k), slotPages: slots[0]),
                                      dirtyPages: counts[0], reps: reps, seed: m.seed)
        let folder = try RunFolder.create(under: m.output)
        let result = try breakdown.run(progress: Progress(quiet: m.quiet))
        try bench.finishCheck(in: folder, table: result.table, file: "breakdown.csv", summary: result.summary, violations: result.violations,
                              messages: result.messages)
    }
}
