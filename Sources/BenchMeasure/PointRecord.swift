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
    /// Whether each strategy's median has decided something at the point
    /// at any repetition so far: once it has, its cap stays the deciding
    /// one (a cap that fell back would stop a row at more samples than the
    /// cap it names).
    var decided: [Bool]
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
        decided = Array(repeating: false, count: n)
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

    /// Strategy `si`'s whole protection work per repetition: the timed
    /// harvest plus, for rings, the harvests full rings forced while the
    /// guest wrote (what "best" compares everywhere: `PointRow.roundSummary`).
    func roundSamples(_ si: Int) -> [Double] {
        let during = phases[si].ringNsDuringWrites
        guard strategies[si].usesRing, during.count == samples[si].count else { return samples[si] }
        return zip(samples[si], during).map { $0 + $1 }
    }

    /// The strategies a point's best is judged among: the KVM_GET_DIRTY_LOG
    /// family the rules choose from (`Strategy.adaptiveCandidates`), whose
    /// regrets are read from these medians; every strategy when the run
    /// measures none of them. A dirty ring or PML, other protocols, may be
    /// cheaper than all of them and must not cut their repetitions short.
    func judged(other si: Int) -> [Int] {
        let family = samples.indices.filter { $0 != si && strategies[$0].model.map(Strategy.adaptiveCandidates.contains) == true }
        return family.isEmpty ? samples.indices.filter { $0 != si } : family
    }

    /// The best of the strategies `si` is judged against (`judged`) with
    /// at least `atLeast` timed samples, by the median of its whole work
    /// (`roundSamples`): what `si` is separated from, and compared with.
    func best(other si: Int, atLeast: Int) -> (index: Int, median: Double)? {
        judged(other: si).filter { samples[$0].count >= atLeast }.map { ($0, Statistics.median(roundSamples($0))) }.min { $0.1 < $1.1 }
    }

    /// Whether strategy `si`'s median decides something at this point
    /// beyond n_used_mmu_pages (which the caller knows): the point lies
    /// within an octave of the rmap/slot-walk crossover (their medians
    /// within 2x of each other), or `si`'s interval overlaps that of the
    /// best other strategy it is judged against (which of the two is
    /// cheaper is not yet known).
    func decides(_ si: Int, confidence: Double) -> Bool {
        if let r = strategies.firstIndex(of: .model(.rmap)), let w = strategies.firstIndex(of: .model(.slotWalk)),
           !samples[r].isEmpty, !samples[w].isEmpty {
            let ratio = Statistics.median(samples[r]) / Statistics.median(samples[w])
            if ratio >= 0.5 && ratio <= 2 { return true }
        }
        guard samples[si].count > 1, let best = best(other: si, atLeast: 2)?.index else { return false }
        let mine = SampleSummary(roundSamples(si), confidence: confidence), theirs = SampleSummary(roundSamples(best), confidence: confidence)
        guard let a = mine.interval, let b = theirs.interval else { return false }
        return a.low <= b.high && b.low <= a.high
    }

    /// Whether `si` stops after its latest sample, by `policy`: deciding
    /// when the point lies near n_used_mmu_pages (`nearThreshold`) or its
    /// median decides something (`decides`) now or did at an earlier
    /// repetition, so that its cap never falls back below the count the
    /// row will show.
    mutating func judge(_ si: Int, policy: RepetitionPolicy, repetitionNs: Double, nearThreshold: Bool) -> RepetitionStop? {
        if nearThreshold || decides(si, confidence: policy.confidence) { decided[si] = true }
        return policy.stop(after: samples[si], repetitionNs: repetitionNs, deciding: decided[si], bestOther: best(other: si, atLeast: 1)?.median)
    }

    /// Once every strategy has stopped: a separation goes on where it no
    /// longer holds against the medians as they ended, or where the point
    /// turned out to decide (`decides`: rmap and slot-walk within 2x, which
    /// a strategy measured before them in the point's first repetition,
    /// and stopped after one long sample, could not know).
    mutating func reopenSeparations(confidence: Double) {
        for si in strategies.indices {
            guard let stop = stops[si], case .separated = stop else { continue }
            if !bearsOut(stop, si) || decides(si, confidence: confidence) { stops[si] = nil }
        }
    }

    /// Whether `si`'s samples bear out the rule that stopped it, checked
    /// from the samples themselves, apart from the rule's own test: a cap
    /// names the count it stopped at; a separation holds against the best
    /// other median as it stands now; an interval or a range is recomputed.
    func bearsOut(_ stop: RepetitionStop, _ si: Int) -> Bool {
        let s = samples[si]
        switch stop {
        case .maxReps(let n): return s.count == n
        case .fixed: return true
        case .separated(let f):
            guard let best = best(other: si, atLeast: 1)?.median, let least = roundSamples(si).min() else { return false }
            return least > f * best
        case .interval(let confidence, let width):
            let sorted = s.sorted()
            guard let i = Statistics.medianInterval(sorted: sorted, confidence: confidence) else { return false }
            let median = Statistics.quantile(sorted: sorted, 0.5)
            return median <= 0 || (i.high - i.low) <= width * median * (1 + 1e-9)
        case .range(let width):
            guard let lo = s.min(), let hi = s.max() else { return false }
            let median = Statistics.median(s)
            return median <= 0 || hi - lo <= width * median * (1 + 1e-9)
        }
    }

    /// The rows of the point, `extra` merged into every strategy's checks
    /// (the whole invariant after the point's last harvest).
    func rows(series: SeriesKey, nUsed: Int, dirtyPages: Int, cache: CacheMode, extra: Verdict = Verdict(),
              guests: GuestSetting? = nil, confidence: Double) -> [PointRow] {
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
            row.intervalConfidence = confidence
            precondition(bearsOut(row.stop, si), "\(row.stop.name) stopped a row its \(samples[si].count) samples do not bear out")
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
    /// Whether the harvesting thread and every vCPU thread got a CPU of its own.
    var pinned: Bool
}

/// One side's holds of mmu_lock over the instrumented repetitions.
struct HoldRecord {
    var histogram = Histogram<UInt64>.nanoseconds()
    var count = 0
    var totalNs = 0.0
    var maxNs = 0.0

    mutating func add(_ h: HoldSample) {
        for t in h.kept { histogram.record(UInt64(TickClock.ns(t).rounded())) }
        count += h.count
        totalNs += TickClock.ns(h.totalTicks)
        maxNs = max(maxNs, TickClock.ns(h.maxTicks))
    }

    func fill(_ f: inout LockHoldFigures) {
        f.count = count
        guard count > 0 else { return }
        f.totalNs = totalNs
        f.maxNs = maxNs
        if histogram.totalCount > 0 {
            f.p50Ns = Double(histogram.valueAtPercentile(50))
            f.p99Ns = Double(histogram.valueAtPercentile(99))
        }
    }
}

/// The concurrent scenario's repetitions of one strategy at one point:
/// every count a total over the repetitions it comes from, every
/// percentile pooled over exactly those items.
struct GuestRecord {
    /// The timed repetitions: the vCPUs' faults begun during the harvest.
    var faults = Histogram<UInt64>.nanoseconds()
    var window = GuestRunStats()
    var relogNs: [Double] = []
    /// The instrumented repetitions.
    var instrumentedNs: [Double] = []
    var exclusive = HoldRecord()
    var shared = HoldRecord()
    var lockWaits = Histogram<UInt64>.nanoseconds()
    var lockWaitTotalNs = 0.0
    /// Over every repetition, warm-up included: a race is a race.
    var raceViolations = 0
    var shadowings = 0
    var shadowFlushes = 0

    mutating func add(_ g: GuestCost, timed: Bool) {
        raceViolations += g.raceViolations
        shadowings += g.shadowings
        shadowFlushes += g.shadowFlushes
        guard timed else { return }
        for t in g.plain.faultTicks { faults.record(UInt64(TickClock.ns(t).rounded())) }
        window.add(g.plain.stats)
        if let d = g.relogNs { relogNs.append(d) }
        instrumentedNs.append(g.instrumentedNs)
        exclusive.add(g.exclusiveHolds)
        shared.add(g.sharedHolds)
        for t in g.lockWaitTicks {
            let ns = TickClock.ns(t)
            lockWaits.record(UInt64(ns.rounded()))
            lockWaitTotalNs += ns
        }
    }

    func extras(_ setting: GuestSetting) -> GuestExtras {
        var e = GuestExtras(vcpus: setting.vcpus, pinned: setting.pinned)
        e.faultCount = Int(faults.totalCount)
        if faults.totalCount > 0 {
            e.faultP50Ns = Double(faults.valueAtPercentile(50))
            e.faultP99Ns = Double(faults.valueAtPercentile(99))
            e.faultP999Ns = Double(faults.valueAtPercentile(99.9))
            e.faultMaxNs = Double(faults.max)
        }
        e.fastFaults = window.windowFastFaults
        e.emulatedWrites = window.windowEmulated
        e.shadowingFaults = window.windowShadowingFaults
        e.ipiExits = window.windowIPIExits
        e.windowWrites = window.windowWrites
        e.relogNs = relogNs.isEmpty ? nil : Statistics.median(relogNs)
        e.instrumentedReps = instrumentedNs.count
        e.instrumentedHarvestNs = instrumentedNs.isEmpty ? nil : Statistics.median(instrumentedNs)
        exclusive.fill(&e.exclusiveHolds)
        shared.fill(&e.sharedHolds)
        e.lockWaitFaults = Int(lockWaits.totalCount)
        if lockWaits.totalCount > 0 {
            e.lockWaitTotalNs = lockWaitTotalNs
            e.lockWaitP50Ns = Double(lockWaits.valueAtPercentile(50))
            e.lockWaitP99Ns = Double(lockWaits.valueAtPercentile(99))
            e.lockWaitMaxNs = Double(lockWaits.max)
        }
        e.raceViolations = raceViolations
        e.shadowings = shadowings
        e.shadowFlushes = shadowFlushes
        return e
    }
}
