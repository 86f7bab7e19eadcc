import ArgumentParser
import BenchAnalysis
import BenchMeasure
import DirtyLogCore
import Foundation
import ShadowMMU

/// kvm-unit-tests' api/dirty-log-perf: a slot of `-n` pages in a VM of `-m`,
/// 1, 2, 4, ... dirty pages evenly spaced, on the model and the kernel side
/// by side.
struct DirtyLogPerf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dirty-log-perf",
        abstract: "kvm-unit-tests' dirty-log-perf on the model and the kernel, side by side.",
        discussion: """
        The experiment of the seed's author (kvm-unit-tests api/dirty-log-perf.cc): a \
        slot of -n pages (default 262144, 1 GiB) in a VM of -m pages, every page \
        written once, dirty logging on; then for 1, 2, 4, ... up to the slot, that \
        many pages evenly spaced are written and one GET_DIRTY_LOG is timed. Under \
        two-dimensional paging on the model, and on the kernel where /dev/kvm opens; \
        prints the medians side by side. Takes the run's measurement options (--reps, \
        --cache, --seed, --output, --backend, --strategy, ...: see bench --help); the \
        sweep's own (--slot-pages, --paging, --pattern, ...) do not apply.
        """
    )

    /// The run's options, the measurement ones shared with it.
    @ParentCommand var bench: Bench
    var measurement: MeasurementOptions { bench.measurement }

    @Option(name: .customShort("n"), help: ArgumentHelp("The slot, as a page count or a size (dirty-log-perf's -n).", valueName: "size"))
    var slotPages = PageCount(1 << 18)

    @Option(name: .customShort("m"), help: ArgumentHelp("All guest memory, the rest in a second slot (dirty-log-perf's -m). (default: the slot)", valueName: "size"))
    var vmPages: PageCount?

    func run() throws {
        try RunCommand.execute(try plan(memoryAvailable: SystemMemory.availableBytes), sideBySide: .dirtyLogPerf)
    }

    func plan(memoryAvailable: Int) throws -> RunPlan {
        if let sweep = bench.sweepOptionsGiven.first {
            throw BenchError.usage("\(sweep): does not apply to dirty-log-perf, whose slot is -n and -m and pattern even")
        }
        let slot = try Check.pages(slotPages, "-n", SweepLimits.slotPages)
        let vm = try vmPages.map { try Check.pages($0, "-m", slot...SweepLimits.slotPages.upperBound) } ?? slot
        let layout = VMLayout(paging: .tdp, slotPages: slot, vmPages: vm)
        let series = [ModelSeriesSpec(scenario: .dirtyLogPerf, layout: layout, pattern: .even, counts: .powersOfTwo, strategies: measurement.strategies)]
        return try Planner.plan(measurement, quick: false, series: series, counts: .powersOfTwo, memoryAvailable: memoryAvailable)
    }
}
