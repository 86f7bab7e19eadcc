import BenchAnalysis
import DirtyLogCore
import Foundation
import ShadowMMU

/// The adaptive rule's constants for one series, with how well they fit.
struct AdaptiveFit: Sendable {
    var model: CostModel
    /// Per candidate and kind: the root-mean-square relative error of the
    /// constants' predictions for the sets they were measured on, percent.
    var errorPct: [Strategy: [DirtySetKind: Double]]
    /// Dirty sets timed, and the seconds the measuring took.
    var sets: Int
    var seconds: Double

    /// ρ = 1, 4, 16, 32, 40, 64, 512: the octaves, and where tdp-masked's cliff lies here.
    static let shownSteps = [0, 8, 16, 20, 21, 24, 36]

    /// What report.md shows of it.
    func report(series: SeriesKey) -> AdaptiveFitReport {
        var rows: [AdaptiveFitReport.Row] = []
        for strategy in Strategy.adaptiveCandidates {
            guard let c = model.candidate(strategy) else { continue }
            for kind in DirtySetKind.allCases {
                let k = c[kind]
                rows.append(AdaptiveFitReport.Row(strategy: strategy, kind: kind.rawValue, fixedNs: k.fixed,
                                                  perPageNs: Self.shownSteps.map { k.perPage[$0] }, errorPct: errorPct[strategy]?[kind] ?? 0))
            }
        }
        return AdaptiveFitReport(series: series, sets: sets, seconds: seconds, lookNs: model.lookNs,
                                 shownRho: Self.shownSteps.map(SpanDensity.rho), rows: rows)
    }
}

/// Measures the adaptive rule's constants on a series' own VM before its
/// sweep. After one untimed harvest by each candidate, the candidates are
/// timed with cold caches, interleaved as the sweep times them (median of
/// seven; of three when one harvest takes over 5 ms or the set is larger
/// than `maxPages`), on dirty sets that span ρ, the dirty pages per
/// 512-page span, for each kind:
///
/// - both kinds: one page (the fixed cost);
/// - regular: a run of consecutive pages (ρ = 512); pages evenly spaced
///   about 512/ρ apart for every step of ρ (`SpanDensity`, four an
///   octave: the cost per page has cliffs, where the prefetchers stop
///   following, that only a close sampling sees; a power-of-two stride
///   from 32 on made odd, since it aliases in the caches' sets, an
///   exception the rule should not learn as the rule); every page of the
///   slot;
/// - scattered: half the slot at random (ρ = 256); pages at random at
///   densities 1/3 to 1/256 by half octaves and 1/1024; 64 pages over the
///   whole slot;
///
/// each at most `maxPages` pages, in a prefix of the slot when the density
/// would give more, but the whole slot and its random half. A set's
/// per-page cost is its time less the fixed cost, over its pages; the
/// costs at the steps of ρ are read between the sets' ρ (and held past the
/// ends). The walks, whose fixed cost dwarfs what a page adds but in the
/// largest sets, get one per-page cost per kind, from the sets an octave
/// apart only, and a fixed cost that is the median of every such set's.
/// A look at the bitmap is timed the same way, on the sparsest set (where
/// it reads all its windows).
struct AdaptiveCalibration {
    var backend: ModelBackend
    let seed: UInt64
    let sptesPerGFN: Int
    /// What the checks of the calibration's harvests found, per candidate.
    private(set) var verdicts: [Strategy: Verdict] = [:]

    /// Repetitions of a set that is neither large nor slow: the run's
    /// fewest a point gets (5; `--quick` 3), at most 5.
    let repetitions: Int

    init(backend: ModelBackend, seed: UInt64, sptesPerGFN: Int, repetitions: Int = 5) {
        self.backend = backend
        self.seed = seed
        self.sptesPerGFN = sptesPerGFN
        self.repetitions = repetitions
    }

    var vm: VirtualMachine { backend.vm }

    /// The most pages a calibration set dirties (the whole slot aside).
    static let maxPages = 1 << 15
    /// Slots past this many pages have their walks timed on fewer sets,
    /// and their sets of more pages than this timed once.
    static let largeSlotPages = 1 << 20
    /// Strides of the regular sets, about 512/ρ for each step of ρ below
    /// 512, with whether the step starts an octave.
    static let strides: [(stride: Int, octave: Bool)] = {
        var out: [(stride: Int, octave: Bool)] = []
        for k in (0..<SpanDensity.steps - 1).reversed() {
            var s = Int((512 / SpanDensity.rho(k)).rounded())
            if s >= 32 && s & (s - 1) == 0 { s -= 1 }
            if s > 1 && !out.contains(where: { $0.stride == s }) { out.append((s, k % 4 == 0)) }
        }
        return out
    }()
    /// Densities (one page in this many) of the scattered sets; the first
    /// over the whole slot.
    static let sparsities = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 1024]

    mutating func fit(timer: inout TimedHarvest) throws -> AdaptiveFit {
        let t0 = MonotonicClock.now()
        let hasTDP = vm.hasTDP
        let candidates = Strategy.adaptiveCandidates.filter { !$0.needsTDP || hasTDP }
        var order = SeededGenerator(seed: seed ^ 0xCA11)
        // A VM just built is not yet in its steady state (nothing in the
        // TLBs, pages settling): one untimed harvest per candidate first.
        let words = DirtyBitmap.words(pages: vm.slot(VMLayout.measuredSlotID).npages)
        _ = try times(candidates, DirtySet(bitmap: [1] + [UInt64](repeating: 0, count: words - 1)), reps: 1, order: &order, timer: &timer)

        let npages = vm.slot(VMLayout.measuredSlotID).npages
        let sets = Self.sets(pages: npages, seed: seed)
        // On a large slot a walk takes tens or hundreds of milliseconds and
        // hardly varies with the set: every fourth octave, the whole slot
        // and its random half are enough for it.
        let walkSets = Set(sets.indices.filter { sets[$0].forWalks }.enumerated()
            .filter { npages <= Self.largeSlotPages || $0.offset % 4 == 0 || sets[$0.element].pages.count > Self.maxPages }.map(\.element))
        var measured: [[Strategy: Double]] = []
        for (i, set) in sets.enumerated() {
            measured.append(try times(candidates.filter { walkSets.contains(i) || !Self.walks.contains($0) }, set.pages, order: &order, timer: &timer))
        }
        var m = CostModel()
        m.hasTDP = hasTDP
        var errors: [Strategy: [DirtySetKind: Double]] = [:]
        for strategy in candidates {
            let time = measured.map { $0[strategy] ?? .nan }
            let timed = { (kind: DirtySetKind) in sets.indices.filter { $0 > 0 && sets[$0].kinds.contains(kind) && !time[$0].isNaN } }
            func points(_ kind: DirtySetKind, fixed: Double) -> [(rho: Double, pages: Double, added: Double)] {
                timed(kind).map { (rho: sets[$0].rho, pages: Double(sets[$0].pages.count), added: time[$0] - fixed) }
            }
            var fixed = time[0]
            if Self.walks.contains(strategy) {
                // A walk costs about the same on every set: its fixed cost is
                // the median of what each set says it is, less what its pages
                // add, rather than one set's word (a walk's time here can
                // jump by half between two minutes).
                let perPage = Dictionary(uniqueKeysWithValues: DirtySetKind.allCases.map { ($0, Self.flat(points($0, fixed: fixed))) })
                fixed = Statistics.median([fixed] + DirtySetKind.allCases.flatMap { kind in
                    timed(kind).map { time[$0] - perPage[kind]! * Double(sets[$0].pages.count) }
                })
            }
            var kinds: [DirtySetKind: PerPageCost] = [:]
            for kind in DirtySetKind.allCases {
                let these = timed(kind)
                let cost = Self.walks.contains(strategy)
                    ? PerPageCost(fixed: fixed, perPage: Self.flat(points(kind, fixed: fixed)))
                    : PerPageCost(fixed: fixed, perPage: Self.curve(points(kind, fixed: fixed)))
                kinds[kind] = cost
                let sq = ([0] + these).reduce(0.0) { acc, i in
                    let r = Self.predict(cost, pages: sets[i].pages.count, lines: sets[i].lines) / max(1, time[i]) - 1
                    return acc + r * r
                }
                errors[strategy, default: [:]][kind] = (sq / Double(these.count + 1)).squareRoot() * 100
            }
            m.set(strategy, CandidateCost(regular: kinds[.regular]!, scattered: kinds[.scattered]!))
        }
        let sparsest = sets.filter { $0.pages.count > 1 }.min { $0.pages.count < $1.pages.count } ?? sets[0]
        m.lookNs = timeLook(sparsest.pages, timer: timer)
        m.calibrated = true
        return AdaptiveFit(model: m, errorPct: errors, sets: sets.count,
                           seconds: Double(MonotonicClock.now() - t0) / 1e9)
    }

    /// The prediction for one candidate's constants, as the rule makes it.
    static func predict(_ c: PerPageCost, pages: Int, lines: Int) -> Double {
        var m = CostModel()
        m.set(.masked, CandidateCost(regular: c, scattered: c))
        return m.predict(.masked, pages: pages, lines: lines, .regular)
    }

    /// The candidates that read the whole slot whatever is dirty: what a
    /// dirty page adds to them (writing its spte back) hardly depends on
    /// its neighbours, and is a sliver of their fixed cost except in the
    /// largest sets, so it is one number per kind, fitted through those.
    static let walks: Set<Strategy> = [.slotWalk, .rmapWalk, .tdpWalk]

    /// One per-page cost at every ρ: least squares through the origin of
    /// the time added against pages, which the largest sets decide.
    static func flat(_ points: [(rho: Double, pages: Double, added: Double)]) -> Double {
        let xy = points.reduce(0) { $0 + $1.pages * $1.added }, xx = points.reduce(0) { $0 + $1.pages * $1.pages }
        return xx > 0 ? max(0, xy / xx) : 0
    }

    /// Per-page costs at the steps of ρ from measurements at other ρ: the
    /// time added over the pages (pooled where sets share a ρ), read
    /// between them linearly in the steps and held past the ends.
    static func curve(_ points: [(rho: Double, pages: Double, added: Double)]) -> [Double] {
        var merged: [(x: Double, pages: Double, added: Double)] = []
        for p in points.sorted(by: { $0.rho < $1.rho }) {
            let (k, t) = SpanDensity.position(Float(p.rho))
            let x = Double(k) + Double(t)
            if let last = merged.last, abs(last.x - x) < 0.01 {
                merged[merged.count - 1] = (last.x, last.pages + p.pages, last.added + p.added)
            } else {
                merged.append((x, p.pages, p.added))
            }
        }
        let ys = merged.map { max(0, $0.added / max(1, $0.pages)) }
        guard let first = merged.first, let last = merged.last else { return [Double](repeating: 0, count: SpanDensity.steps) }
        return (0..<SpanDensity.steps).map { k in
            let x = Double(k)
            if x <= first.x { return ys[0] }
            if x >= last.x { return ys[ys.count - 1] }
            let j = merged.firstIndex { $0.x >= x }!
            let a = merged[j - 1].x, b = merged[j].x
            return ys[j - 1] + (ys[j] - ys[j - 1]) * (x - a) / (b - a)
        }
    }

    /// A calibration set: its pages, its non-zero 512-page spans, the
    /// kinds whose constants it informs, and whether the walks are timed
    /// on it too.
    struct CalibrationSet {
        let pages: DirtySet
        let lines: Int
        let kinds: [DirtySetKind]
        let forWalks: Bool
        var rho: Double { Double(pages.count) / Double(max(1, lines)) }
    }

    static func sets(pages n: Int, seed: UInt64) -> [CalibrationSet] {
        let words = DirtyBitmap.words(pages: n)
        var rng = SeededGenerator(seed: seed ^ 0xADA)
        func set(_ offsets: [Int], _ kinds: [DirtySetKind], forWalks: Bool = true) -> CalibrationSet {
            var bitmap = [UInt64](repeating: 0, count: words)
            for p in offsets { bitmap[p >> 6] |= 1 << UInt64(p & 63) }
            let lines = bitmap.withUnsafeBufferPointer { DirtyBitmap.nonZeroLines($0.baseAddress!, words: words) }
            return CalibrationSet(pages: DirtySet(bitmap: bitmap), lines: lines, kinds: kinds, forWalks: forWalks)
        }
        let cap = min(n, n > largeSlotPages ? maxPages / 2 : maxPages)
        var out = [set([rng.below(n)], [.regular, .scattered])]
        out.append(set(Array(0..<cap), [.regular]))
        for (s, octave) in strides where n / s >= 4 {
            out.append(set((0..<min(cap, n / s)).map { $0 * s }, [.regular], forWalks: octave))
        }
        // The whole slot: where the walks are meant to win, too far from
        // the other sets to reach by extrapolation.
        if n > cap { out.append(set(Array(0..<n), [.regular])) }
        // Half the slot at random: where the walks win on scattered sets.
        out.append(set(DirtyPattern.distinct(n / 2, of: n, &rng), [.scattered]))
        for s in sparsities.dropFirst() where n / s >= 4 {
            let count = min(cap, n / s)
            out.append(set(DirtyPattern.distinct(count, of: count * s, &rng), [.scattered], forWalks: s & (s - 1) == 0))
        }
        if n >= 256 { out.append(set(DirtyPattern.distinct(64, of: n, &rng), [.scattered])) }
        return out
    }

    /// Each candidate's median of cold harvests of `pages`, written as the
    /// sweep writes them and measured as it measures them, through
    /// `TimedHarvest` (so checked as the sweep's harvests are): interleaved,
    /// the candidates in a new random order each repetition. `repetitions`
    /// of them (at most three when the set is over 4096 pages or the slot
    /// large, one when the set is larger than the large slot's pages), or
    /// three when a candidate's first harvest took over 5 ms.
    mutating func times(_ candidates: [Strategy], _ set: DirtySet, reps: Int? = nil, order: inout SeededGenerator,
                        timer: inout TimedHarvest) throws -> [Strategy: Double] {
        let round = GuestRound(vm: vm, set: set, sptesPerGFN: sptesPerGFN, seed: seed)
        let npages = vm.slot(VMLayout.measuredSlotID).npages
        let most = reps ?? (set.count > Self.largeSlotPages ? 1 : set.count > 4096 || npages > Self.largeSlotPages ? min(3, repetitions) : repetitions)
        var want = [Int](repeating: most, count: candidates.count)
        var samples = [[Double]](repeating: [], count: candidates.count)
        for _ in 0..<most {
            for c in candidates.indices.shuffled(using: &order) where samples[c].count < want[c] {
                if Termination.requested != nil { throw Termination.Stopped() }
                let m = try timer.measure(&backend, candidates[c], round)
                verdicts[candidates[c], default: Verdict()].merge(m.verdict)
                samples[c].append(Double(m.ns))
                if reps == nil && samples[c].count == 1 && m.ns > 5_000_000 { want[c] = min(want[c], m.ns > 100_000_000 ? 1 : 3) }
            }
        }
        return Dictionary(uniqueKeysWithValues: zip(candidates, samples.map(Statistics.median)))
    }

    /// Median of seven cold looks at the set's bitmap, each timed in the
    /// one timed region.
    func timeLook(_ set: DirtySet, timer: TimedHarvest) -> Double {
        let words = set.bitmap.count
        var samples: [Double] = []
        var regular = 0
        set.bitmap.withUnsafeBufferPointer { b in
            for _ in 0..<7 {
                timer.eviction?.evict(bitmap: UnsafeRawBufferPointer(b))
                let (look, _, ns, _) = TimedRegion.time(timer.allocations) { MMU.lookAtBitmap(b.baseAddress!, words: words) }
                regular += look.regular ? 1 : 0
                samples.append(Double(ns))
            }
        }
        return Statistics.median(samples) + (regular < 0 ? 1 : 0)
    }
}
