import BenchAnalysis
import DirtyLogCore
import Histogram

/// What a point's repetitions gathered, per strategy, until it becomes rows.
struct PointRecord {
    let strategies: [MeasuredStrategy]
    var samples: [[Double]]
    var counters: [ProtectCounters?]
    var choices: [[Strategy: Int]]
    var allocated: [UInt64]
    var verdicts: [Verdict]
    var phases: [PhaseExtras]
    var stops: [RepetitionStop?]
    /// The concurrent scenario: what the guest paid, per strategy.
    var guest: [GuestRecord]

    init(_ strategies: [MeasuredStrategy]) {
        self.strategies = strategies
        let n = strategies.count
        samples = Array(repeating: [], count: n)
        counters = Array(repeating: nil, count: n)
        choices = Array(repeating: [:], count: n)
        allocated = Array(repeating: 0, count: n)
        verdicts = Array(repeating: Verdict(), count: n)
        phases = Array(repeating: PhaseExtras(), count: n)
        stops = Array(repeating: nil, count: n)
        guest = Array(repeating: GuestRecord(), count: n)
    }

    /// A measurement of strategy `si`; a warm-up one counts for its checks
    /// only. `roundChoices`: a migration total's choices, round by round
    /// (else the measurement's own choice counts).
    mutating func add(_ si: Int, _ m: Measurement, timed: Bool, ringFullExits: Int? = nil, roundChoices: [Strategy: Int]? = nil,
                      guestCost: GuestCost? = nil) {
        verdicts[si].merge(m.verdict)
        counters[si] = m.outcome.counters ?? counters[si]
        if let g = guestCost { guest[si].add(g, timed: timed) }
        guard timed else { return }
        if let rc = roundChoices {
            for (c, n) in rc { choices[si][c, default: 0] += n }
        } else if let c = m.outcome.choice {
            choices[si][c, default: 0] += 1
        }
        samples[si].append(Double(m.ns))
        allocated[si] += m.allocated
        if strategies[si] == .kernel(.getClear) || strategies[si] == .model(.clearChunked) {
            phases[si].getNs.append(Double(m.getNs))
            phases[si].clearNs.append(Double(m.clearNs))
        }
        phases[si].ringFullExits += ringFullExits ?? m.ringStops
        phases[si].ringHarvestsDuringWrites += m.ringStops
        phases[si].ringNsDuringWrites.append(Double(m.ringNs))
    }

    /// The rows of the point, `extra` merged into every strategy's checks
    /// (the whole invariant after the point's last harvest).
    func rows(series: SeriesKey, nUsed: Int, dirtyPages: Int, cache: CacheMode, extra: Verdict = Verdict(),
              guests: GuestSetting? = nil) -> [PointRow] {
        strategies.indices.compactMap { si in
            guard !samples[si].isEmpty else { return nil }
            var row = PointRow(series: series, strategy: strategies[si], nUsedMMUPages: nUsed, dirtyPages: dirtyPages,
                               samples: samples[si], counters: counters[si], cache: cache)
            var v = verdicts[si]
            v.merge(extra)
            row.violationCount = v.count
            row.violations = v.messages
            row.choices = choices[si]
            row.allocatedBytesInTimedRegion = allocated[si]
            row.stop = stops[si] ?? .fixed
            var ph = phases[si]
            if !strategies[si].usesRing { ph.ringNsDuringWrites = []; ph.ringFullExits = 0; ph.ringHarvestsDuringWrites = 0 }
            row.phases = ph.getNs.isEmpty && ph.ringNsDuringWrites.isEmpty ? nil : ph
            if let g = guests { row.guest = guest[si].extras(g) }
            return row
        }
    }
}

/// How the concurrent scenario's guest ran: for the rows' figures.
struct GuestSetting {
    var vcpus: Int
    var workingSetBytes: Int
    var missNsPerLine: Double
    /// Reading the working set from memory and from cache.
    var coldReadNs: Double
    var warmReadNs: Double
}

/// The concurrent scenario's repetitions of one strategy at one point.
struct GuestRecord {
    var holdCounts: [Double] = []
    var holdP50: [Double] = []
    var holdP99: [Double] = []
    var holdMax: [Double] = []
    var holdTotal: [Double] = []
    var windowWrites: [Double] = []
    var windowFaults: [Double] = []
    var lockWaitNs: [Double] = []
    var dirtyMemoryNs: [Double] = []
    var pollutionNs: [Double] = []
    var idleRereadNs: [Double] = []
    /// The window's fault latencies, every timed repetition's (ns).
    var faults = Histogram<UInt64>.nanoseconds()
    /// Over every repetition, warm-up included: a race is a race.
    var raceViolations = 0
    var shadowings = 0
    var shadowFlushes = 0

    mutating func add(_ g: GuestCost, timed: Bool) {
        raceViolations += g.stats.raceViolations
        shadowings += g.stats.shadowings
        shadowFlushes += g.stats.shadowFlushes
        guard timed else { return }
        holdCounts.append(Double(g.holdCount))
        holdP50.append(g.holds.totalCount > 0 ? Double(g.holds.valueAtPercentile(50)) : 0)
        holdP99.append(g.holds.totalCount > 0 ? Double(g.holds.valueAtPercentile(99)) : 0)
        holdMax.append(g.holdMaxNs)
        holdTotal.append(g.holdTotalNs)
        windowWrites.append(Double(g.stats.windowWrites))
        windowFaults.append(Double(g.stats.windowFaults))
        lockWaitNs.append(TickClock.ns(g.stats.windowLockWaitTicks))
        dirtyMemoryNs.append(g.dirtyMemoryNs)
        pollutionNs.append(g.pollutionNs)
        idleRereadNs.append(g.idleRereadNs)
        for ns in g.faultLatenciesNs { faults.record(ns) }
    }

    func extras(_ setting: GuestSetting) -> GuestExtras {
        var e = GuestExtras(vcpus: setting.vcpus)
        func med(_ v: [Double]) -> Double { v.isEmpty ? 0 : Statistics.median(v) }
        e.lockHolds = med(holdCounts)
        e.lockHoldP50Ns = med(holdP50)
        e.lockHoldP99Ns = med(holdP99)
        e.lockHoldMaxNs = med(holdMax)
        e.lockHoldTotalNs = med(holdTotal)
        e.windowWrites = med(windowWrites)
        e.windowFaults = med(windowFaults)
        if faults.totalCount > 0 {
            e.faultP50Ns = Double(faults.valueAtPercentile(50))
            e.faultP99Ns = Double(faults.valueAtPercentile(99))
            e.faultP999Ns = Double(faults.valueAtPercentile(99.9))
            e.faultMaxNs = Double(faults.max)
        }
        e.lockWaitNs = med(lockWaitNs)
        e.dirtyMemoryNs = med(dirtyMemoryNs)
        e.pollutionNs = med(pollutionNs)
        e.pollutionLines = setting.missNsPerLine > 0 ? e.pollutionNs / setting.missNsPerLine : 0
        e.workingSetBytes = setting.workingSetBytes
        e.idleRereadNs = med(idleRereadNs)
        e.coldReadNs = setting.coldReadNs
        e.warmReadNs = setting.warmReadNs
        e.raceViolations = raceViolations
        e.shadowings = shadowings
        e.shadowFlushes = shadowFlushes
        return e
    }
}
