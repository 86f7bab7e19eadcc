import BenchAnalysis
import CAtomics
import DirtyLogCore
import ShadowMMU

/// The cache pollution a harvest leaves in the guest's working set, where
/// it exists (pollution.csv). A pair: the guest writes its pages; the
/// working set is read (warm), the harvest runs, the working set is read
/// again, timed; and the same with the CPU spinning as long as a harvest
/// takes in place of the harvest. The excess is the re-read after the
/// harvest less the one after the idle interval. The re-reads run on the
/// harvesting CPU (`same`: a vCPU scheduled after the migration thread,
/// whose level-1 and level-2 working set the harvest's walk may evict) or
/// on a vCPU thread's (`other`: only the shared last-level cache between
/// them).
///
/// The pairs run in blocks of four, so that neither order favours a side:
/// the strategies' order alternates every pair, the halves' order (harvest
/// first, idle first) every two. Each pair of slot-walk has one of rmap
/// beside it, in the same block, for their difference. Blocks go on until
/// slot-walk's excess over rmap is known within `targetNs` at 95%, or the
/// working set's share of the budget is spent.
///
/// The vCPU threads are idle meanwhile: a harvest here flushes without
/// waiting for anyone. Each harvest must hand out the pages written and
/// leave them protected.
struct PollutionProbe {
    /// Pairs in a block: both orders of the strategies, both orders of the halves.
    static let block = 4
    /// The fewest pairs: a 95% interval of the median (order statistics)
    /// needs 6; three blocks.
    static let minimumPairs = 12
    /// The most: a bound on the memory of the samples, never reached in
    /// the default run's budget.
    static let maximumPairs = 4000
    /// The precision the difference is resolved to: its 95% interval within
    /// ±3 µs of its median.
    static let targetNs = 3_000.0
    /// What one working set on one CPU may take, ns: at 1 MiB and a 1 GiB
    /// slot, several hundred pairs (the most the default run needed to
    /// reach the target there: 392, in 0.65 s).
    static let budgetNs: UInt64 = 800_000_000

    let vm: VirtualMachine
    let mmu: MMU
    let guests: GuestThreads
    private var sink: UInt64 = 0

    init(vm: VirtualMachine, mmu: MMU, guests: GuestThreads) {
        self.vm = vm
        self.mmu = mmu
        self.guests = guests
    }

    mutating func measure(series: SeriesKey, strategies: [Strategy], round: GuestRound, workingSets: [Int],
                          cpus: [GuestCPU]) throws -> [PollutionRow] {
        var rows: [PollutionRow] = []
        for wss in workingSets {
            let set = WorkingSet(bytes: wss)
            let buffer = set.base, words = set.lines * 8
            for cpu in cpus {
                if Termination.requested != nil { return rows }
                rows += try measure(series: series, strategies: strategies, round: round, buffer: buffer, words: words, cpu: cpu)
            }
        }
        return rows
    }

    private mutating func measure(series: SeriesKey, strategies: [Strategy], round: GuestRound, buffer: UnsafeMutablePointer<UInt64>,
                                  words: Int, cpu: GuestCPU) throws -> [PollutionRow] {
        let slot = mmu.slot(id: VMLayout.measuredSlotID)
        let lines = words / 8
        var perLine: [Double] = []
        for _ in 0..<3 {
            let cold: Double, warm: Double
            if cpu == .same {
                let (c, w) = ReadCost.measure(buffer, words: words, sink: &sink)
                (cold, warm) = (Double(c), Double(w))
            } else {
                (cold, warm) = try guests.calibrateRead(buffer, words: words)
            }
            perLine.append(max(0, cold - warm) / Double(max(1, lines)))
        }
        var pairs = [PollutionPairs](repeating: PollutionPairs(), count: strategies.count)
        let walk = strategies.firstIndex(of: .slotWalk), rmap = strategies.firstIndex(of: .rmap)
        var stop = PollutionStop.target
        let began = MonotonicClock.now()
        var pair = 0
        while true {
            let strategyOrder = pair % 2 == 0 ? Array(strategies.indices) : strategies.indices.reversed()
            let harvestFirst = (pair / 2) % 2 == 0
            for si in strategyOrder {
                try onePair(strategies[si], harvestFirst: harvestFirst, slot: slot, round: round, buffer: buffer, words: words,
                            cpu: cpu, into: &pairs[si])
            }
            pair += 1
            guard pair % Self.block == 0, pair >= Self.minimumPairs else { continue }
            if Termination.requested != nil { stop = .interrupted; break }
            if let walk, let rmap {
                if let d = MedianInterval(pairs[walk].over(pairs[rmap])), d.halfWidth <= Self.targetNs { break }
            } else {
                break
            }
            if pair >= Self.maximumPairs { stop = .maximumPairs; break }
            if MonotonicClock.now() &- began > Self.budgetNs { stop = .budget; break }
        }
        return Self.rows(series: series, strategies: strategies, pairs: pairs, stop: stop, workingSetBytes: words * 8, cpu: cpu,
                         dirtyPages: round.count, nsPerLine: Statistics.median(perLine))
    }

    /// The rows of one working set on one CPU from its pairs: slot-walk's
    /// over rmap from the difference of their excesses, the k-th pair of
    /// each (they ran in the same block, in the same order of halves).
    static func rows(series: SeriesKey, strategies: [Strategy], pairs: [PollutionPairs], stop: PollutionStop, workingSetBytes: Int,
                     cpu: GuestCPU, dirtyPages: Int, nsPerLine: Double) -> [PollutionRow] {
        var rows = zip(strategies, pairs).map { s, p in
            var r = PollutionRow(series: series, strategy: s, guestCPU: cpu, workingSetBytes: workingSetBytes,
                                 dirtyPages: dirtyPages, pairs: p.excess.count, harvestNs: Statistics.median(p.harvestNs),
                                 rereadAfterHarvestNs: Statistics.median(p.afterHarvest), rereadAfterIdleNs: Statistics.median(p.afterIdle),
                                 excess: MedianInterval(p.excess), nsPerLine: nsPerLine)
            r.violationCount = p.verdict.count
            r.violations = p.verdict.messages
            return r
        }
        if let walk = strategies.firstIndex(of: .slotWalk), let rmap = strategies.firstIndex(of: .rmap) {
            rows[walk].overRmapSamples = pairs[walk].over(pairs[rmap])
            rows[walk].stop = stop
        }
        return rows
    }

    /// One pair of `strategy`: its guest writes, then its two halves in the
    /// order given, each a warm read, the harvest or an idle spin as long
    /// as its harvests take, and the timed re-read.
    private mutating func onePair(_ strategy: Strategy, harvestFirst: Bool, slot: SlotView, round: GuestRound,
                                  buffer: UnsafeMutablePointer<UInt64>, words: Int, cpu: GuestCPU, into p: inout PollutionPairs) throws {
        vm.beginRound(slotID: slot.id, for: strategy)
        _ = round.gfns.withUnsafeBufferPointer { g in
            round.sptes.withUnsafeBufferPointer { s in mmu.guestWrites(slot: slot, gfns: g, sptes: s, from: 0, vcpu: 0) }
        }
        var idleNs: Double?
        if !harvestFirst, let last = p.harvestNs.last {
            idleNs = try idleHalf(UInt64(last), buffer, words, cpu)
        }
        _ = try read(buffer, words, on: cpu)
        let t0 = MonotonicClock.now()
        let h = mmu.harvest(slot: slot, strategy: strategy)
        let harvestNs = MonotonicClock.now() &- t0
        let hot = try read(buffer, words, on: cpu)
        round.expected.pages.withUnsafeBufferPointer { pages in
            round.expected.bitmap.withUnsafeBufferPointer { expected in
                p.verdict.merge(Verdict(vm.checkProtected(slotID: slot.id, written: pages, harvested: h.bitmap,
                                                          expected: expected.baseAddress!)))
            }
        }
        if idleNs == nil { idleNs = try idleHalf(harvestNs, buffer, words, cpu) }
        p.harvestNs.append(Double(harvestNs))
        p.afterHarvest.append(hot)
        p.afterIdle.append(idleNs!)
    }

    /// The idle half of a pair: a warm read, a spin of `ns`, the timed re-read.
    private mutating func idleHalf(_ ns: UInt64, _ buffer: UnsafeMutablePointer<UInt64>, _ words: Int, _ cpu: GuestCPU) throws -> Double {
        _ = try read(buffer, words, on: cpu)
        let t1 = MonotonicClock.now()
        while MonotonicClock.now() &- t1 < ns { ca_cpu_relax() }
        return try read(buffer, words, on: cpu)
    }

    /// A read of the working set, one load per line, on `cpu`; its time in ns.
    private mutating func read(_ buffer: UnsafeMutablePointer<UInt64>, _ words: Int, on cpu: GuestCPU) throws -> Double {
        guard cpu == .same else { return try guests.read(buffer, words: words) }
        let t0 = MonotonicClock.now()
        sink &+= WorkingSet.chase(buffer, lines: words / 8)
        return Double(MonotonicClock.now() &- t0)
    }
}

/// One strategy's pollution pairs, in the order they ran.
struct PollutionPairs {
    var harvestNs: [Double] = []
    var afterHarvest: [Double] = []
    var afterIdle: [Double] = []
    var verdict = Verdict()

    /// Each pair's re-read after the harvest less the one after the idle interval.
    var excess: [Double] { zip(afterHarvest, afterIdle).map { $0 - $1 } }

    /// This strategy's excess less `other`'s, pair by pair.
    func over(_ other: PollutionPairs) -> [Double] { zip(excess, other.excess).map { $0 - $1 } }
}
