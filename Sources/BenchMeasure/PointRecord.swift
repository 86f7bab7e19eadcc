import BenchAnalysis
import DirtyLogCore

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
    }

    /// A measurement of strategy `si`; a warm-up one counts for its checks
    /// only. `roundChoices`: a migration total's choices, round by round
    /// (else the measurement's own choice counts).
    mutating func add(_ si: Int, _ m: Measurement, timed: Bool, ringFullExits: Int? = nil, roundChoices: [Strategy: Int]? = nil) {
        verdicts[si].merge(m.verdict)
        counters[si] = m.outcome.counters ?? counters[si]
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
    func rows(series: SeriesKey, nUsed: Int, dirtyPages: Int, cache: CacheMode, extra: Verdict = Verdict()) -> [PointRow] {
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
            return row
        }
    }
}
