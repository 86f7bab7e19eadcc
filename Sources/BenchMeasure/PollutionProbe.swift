import BenchAnalysis
import CAtomics
import DirtyLogCore
import ShadowMMU

/// The cache pollution a harvest leaves in the guest's working set, where
/// it exists (pollution.csv). A pair: the working set is read (warm), the
/// harvest runs, the working set is read again, timed; then read warm
/// again, the CPU spins as long as the harvest took, and it is read again,
/// timed. The excess is the first re-read less the second. The re-reads
/// run on the harvesting CPU (`same`: a vCPU scheduled after the migration
/// thread, whose level-1 and level-2 working set the harvest's walk may
/// evict) or on a vCPU thread's (`other`: only the shared last-level cache
/// between them). The strategies' pairs alternate, so that each pair of
/// slot-walk has one of rmap beside it for their difference.
///
/// The vCPU threads are idle meanwhile: a harvest here flushes without
/// waiting for anyone. Each harvest must hand out the pages written and
/// leave them protected.
struct PollutionProbe {
    /// Pairs per strategy, working set and CPU: a 95% interval of the
    /// median from order statistics (the 2nd and 8th of 9).
    static let pairs = 9

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
        var harvests = [[Double]](repeating: [], count: strategies.count)
        var afterHarvest = harvests, afterIdle = harvests, excess = harvests
        var verdicts = [Verdict](repeating: Verdict(), count: strategies.count)
        for pair in 0..<Self.pairs {
            let order = pair % 2 == 0 ? Array(strategies.indices) : strategies.indices.reversed()
            for si in order {
                let s = strategies[si]
                vm.beginRound(slotID: slot.id, for: s)
                _ = round.gfns.withUnsafeBufferPointer { g in
                    round.sptes.withUnsafeBufferPointer { p in mmu.guestWrites(slot: slot, gfns: g, sptes: p, from: 0, vcpu: 0) }
                }
                _ = try read(buffer, words, on: cpu)
                let t0 = MonotonicClock.now()
                let h = mmu.harvest(slot: slot, strategy: s)
                let harvestNs = MonotonicClock.now() &- t0
                let hot = try read(buffer, words, on: cpu)
                round.expected.pages.withUnsafeBufferPointer { pages in
                    round.expected.bitmap.withUnsafeBufferPointer { expected in
                        verdicts[si].merge(Verdict(vm.checkProtected(slotID: slot.id, written: pages, harvested: h.bitmap,
                                                                     expected: expected.baseAddress!)))
                    }
                }
                _ = try read(buffer, words, on: cpu)
                let t1 = MonotonicClock.now()
                while MonotonicClock.now() &- t1 < harvestNs { ca_cpu_relax() }
                let idle = try read(buffer, words, on: cpu)
                harvests[si].append(Double(harvestNs))
                afterHarvest[si].append(hot)
                afterIdle[si].append(idle)
                excess[si].append(hot - idle)
            }
        }
        let nsPerLine = Statistics.median(perLine)
        var rows = strategies.indices.map { si in
            var r = PollutionRow(series: series, strategy: strategies[si], guestCPU: cpu, workingSetBytes: words * 8,
                                 dirtyPages: round.count, pairs: Self.pairs, harvestNs: Statistics.median(harvests[si]),
                                 rereadAfterHarvestNs: Statistics.median(afterHarvest[si]), rereadAfterIdleNs: Statistics.median(afterIdle[si]),
                                 excess: MedianInterval(excess[si]), nsPerLine: nsPerLine)
            r.violationCount = verdicts[si].count
            r.violations = verdicts[si].messages
            return r
        }
        if let walk = strategies.firstIndex(of: .slotWalk), let rmap = strategies.firstIndex(of: .rmap) {
            rows[walk].overRmap = MedianInterval(zip(excess[walk], excess[rmap]).map { $0 - $1 })
        }
        return rows
    }

    /// A read of the working set, one load per line, on `cpu`; its time in ns.
    private mutating func read(_ buffer: UnsafeMutablePointer<UInt64>, _ words: Int, on cpu: GuestCPU) throws -> Double {
        guard cpu == .same else { return try guests.read(buffer, words: words) }
        let t0 = MonotonicClock.now()
        sink &+= WorkingSet.chase(buffer, lines: words / 8)
        return Double(MonotonicClock.now() &- t0)
    }
}
