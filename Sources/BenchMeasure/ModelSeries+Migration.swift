import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

extension ModelSeries {
    /// Pre-copy migration: each repetition runs every round (guest writes a
    /// hot-set round, harvest) for each strategy; a sample is the sum of the
    /// round harvests' times.
    func measureMigration(_ backend: inout ModelBackend, nUsed: Int, out: inout ModelOutcome) throws -> [PointRow] {
        progress.point("\(settings.migrationRounds) migration rounds")
        let plan = MigrationPlan(slotPages: spec.layout.slotPages, rounds: settings.migrationRounds)
        let cap = spec.pattern.maxCount(slotPages: spec.layout.slotPages)
        let rounds = plan.counts.enumerated().map { i, d in
            GuestRound(vm: backend.vm,
                       set: spec.pattern.dirtySet(count: min(d, cap), slotPages: spec.layout.slotPages,
                                                  seed: settings.seed &+ UInt64(i) &* 0x51ED, parameters: settings.patterns),
                       sptesPerGFN: spec.layout.paging.sptesPerGFN, seed: settings.seed)
        }
        let strategies = spec.runnable
        var record = PointRecord(strategies.map { .model($0) })
        let policy = settings.repetitions
        let finished = try interleave(strategies, &record, policy: policy, warmups: strategies.map { _ in policy.warmup },
                                      seed: settings.seed ^ 0x316) { si in
            var total = Measurement()
            var choices: [Strategy: Int] = [:]
            for round in rounds {
                if Termination.requested != nil { return nil }
                let m = try timer.measure(&backend, strategies[si], round)
                total.accumulate(m)
                if let c = m.outcome.choice { choices[c, default: 0] += 1 }
            }
            total.outcome.choice = nil
            return (total, nil, choices)
        }
        guard finished else {
            out.interruptedAt = "\(spec.key.label), migration rounds"
            return []
        }
        let full = Verdict(backend.vm.checkInvariants(slotID: slotID, at: .afterProtection))
        progress.pointDone()
        let total = rounds.reduce(0) { $0 + $1.count }
        return record.rows(series: spec.key, nUsed: nUsed, dirtyPages: total, cache: settings.cache, extra: full, confidence: policy.confidence)
            .map { var row = $0; row.rounds = rounds.count; return row }
    }
}
