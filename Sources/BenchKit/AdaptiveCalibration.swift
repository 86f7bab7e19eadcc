import CAtomics
import Foundation
import ShadowMMU

/// The adaptive rule's constants for one series, with how well they fit.
public struct AdaptiveFit: Sendable {
    public var model: CostModel
    /// Per candidate and kind: the root-mean-square relative error of the
    /// constants' predictions for the sets they were measured on, percent.
    public var errorPct: [Strategy: [DirtySetKind: Double]]
    /// Dirty sets timed, and the seconds the measuring took.
    public var sets: Int
    public var seconds: Double
}

/// Measures the adaptive rule's constants on a series' own VM before its
/// sweep. After one untimed harvest by each candidate, each is timed with
/// cold caches (median of seven; of three when one harvest takes over
/// 5 ms or the set is the whole slot) on dirty sets that span ρ, the dirty
/// pages per 512-page span, for each kind:
///
/// - both kinds: one page (the fixed cost);
/// - regular: a run of consecutive pages (ρ = 512); pages evenly spaced
///   3, 13, 61, 251 and 1021 apart (ρ = 171, 39, 8.4, 2, 1; odd strides,
///   since a power-of-two stride aliases in the caches' sets, an exception
///   the rule should not learn as the rule); runs of 16 pages at random
///   places; every page of the slot;
/// - scattered: pages at random at densities 1/2, 1/16, 1/128 and 1/1024
///   (ρ = 256, 32, 4, about 1), and 64 pages over the whole slot;
///
/// each at most `maxPages` pages, in a prefix of the slot when the density
/// would give more. A set's per-page cost is its time less the fixed cost,
/// over its pages; the costs at ρ = 1, 2, 4, ..., 512 are read between the
/// sets' ρ in log scale (and held past the ends). A look at the bitmap is
/// timed the same way, on the sparsest set (where it reads all its
/// windows).
struct AdaptiveCalibration {
    let vm: VirtualMachine
    let flusher: CacheFlusher?
    let seed: UInt64
    let sptesPerGFN: Int

    /// The most pages a calibration set dirties (the whole slot aside).
    static let maxPages = 1 << 15
    /// Odd strides of the regular sets.
    static let strides = [3, 13, 61, 251, 1021]
    /// Densities (one page in this many) of the scattered sets.
    static let sparsities = [2, 16, 128, 1024]

    func fit() -> AdaptiveFit {
        let t0 = MonotonicClock.now()
        let hasTDP = vm.state.pointee.tdpRoot >= 0
        let candidates = Strategy.adaptiveCandidates.filter { !$0.needsTDP || hasTDP }
        // A VM just built is not yet in its steady state (nothing in the
        // TLBs, pages settling): one untimed harvest per candidate first.
        for strategy in candidates { _ = time(strategy, [0], reps: 1) }

        let sets = Self.sets(pages: vm.slot(VMLayout.measuredSlotID).npages, seed: seed)
        var m = CostModel()
        m.hasTDP = hasTDP
        var errors: [Strategy: [DirtySetKind: Double]] = [:]
        for strategy in candidates {
            let times = sets.map { time(strategy, $0.pages.pages) }
            let fixed = times[0]
            var kinds: [DirtySetKind: PerPageCost] = [:]
            for kind in DirtySetKind.allCases {
                let these = sets.indices.filter { $0 > 0 && sets[$0].kinds.contains(kind) }
                let cost = PerPageCost(fixed: fixed, perPage: Self.curve(these.map { i in
                    (rho: sets[i].rho, perPage: max(0, (times[i] - fixed) / Double(sets[i].pages.count)))
                }))
                kinds[kind] = cost
                let sq = ([0] + these).reduce(0.0) { acc, i in
                    let r = Self.predict(cost, pages: sets[i].pages.count, lines: sets[i].lines) / max(1, times[i]) - 1
                    return acc + r * r
                }
                errors[strategy, default: [:]][kind] = (sq / Double(these.count + 1)).squareRoot() * 100
            }
            m.set(strategy, CandidateCost(regular: kinds[.regular]!, scattered: kinds[.scattered]!))
        }
        let sparsest = sets.filter { $0.pages.count > 1 }.min { $0.pages.count < $1.pages.count } ?? sets[0]
        m.lookNs = timeLook(sparsest.pages)
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

    /// Per-page costs at ρ = 2^k from measurements at other ρ: linear in
    /// log ρ between them, held past the ends; measurements at the same ρ
    /// averaged.
    static func curve(_ points: [(rho: Double, perPage: Double)]) -> [Double] {
        var merged: [(x: Double, y: Double, n: Double)] = []
        for p in points.sorted(by: { $0.rho < $1.rho }) {
            let x = log2(max(1, p.rho))
            if let last = merged.last, abs(last.x - x) < 0.01 {
                merged[merged.count - 1] = (last.x, (last.y * last.n + p.perPage) / (last.n + 1), last.n + 1)
            } else {
                merged.append((x, p.perPage, 1))
            }
        }
        guard let first = merged.first, let last = merged.last else { return [Double](repeating: 0, count: SpanDensity.octaves) }
        return (0..<SpanDensity.octaves).map { k in
            let x = Double(k)
            if x <= first.x { return first.y }
            if x >= last.x { return last.y }
            let j = merged.firstIndex { $0.x >= x }!
            let a = merged[j - 1], b = merged[j]
            return a.y + (b.y - a.y) * (x - a.x) / (b.x - a.x)
        }
    }

    /// A calibration set: its pages, its non-zero 512-page spans, and the
    /// kinds whose constants it informs.
    struct CalibrationSet {
        let pages: DirtySet
        let lines: Int
        let kinds: [DirtySetKind]
        var rho: Double { Double(pages.count) / Double(max(1, lines)) }
    }

    static func sets(pages n: Int, seed: UInt64) -> [CalibrationSet] {
        let words = DirtyBitmap.words(pages: n)
        var rng = SeededGenerator(seed: seed ^ 0xADA)
        func set(_ offsets: [Int], _ kinds: [DirtySetKind]) -> CalibrationSet {
            var bitmap = [UInt64](repeating: 0, count: words)
            for p in offsets { bitmap[p >> 6] |= 1 << UInt64(p & 63) }
            let lines = bitmap.withUnsafeBufferPointer { DirtyBitmap.nonZeroLines($0.baseAddress!, words: words) }
            return CalibrationSet(pages: DirtySet(bitmap: bitmap), lines: lines, kinds: kinds)
        }
        let cap = min(n, maxPages)
        var out = [set([rng.below(n)], [.regular, .scattered])]
        out.append(set(Array(0..<cap), [.regular]))
        for s in strides where n / s >= 4 {
            out.append(set((0..<min(cap, n / s)).map { $0 * s }, [.regular]))
        }
        let runs = min(cap, n / 4) / 16
        if runs >= 4 {
            let starts = DirtyPattern.distinct(runs, of: n / 16, &rng).map { $0 * 16 }
            out.append(set(starts.flatMap { $0..<($0 + 16) }, [.regular]))
        }
        // The whole slot: where the walks are meant to win, too far from
        // the other sets to reach by extrapolation.
        if n > cap { out.append(set(Array(0..<n), [.regular])) }
        for s in sparsities where n / s >= 4 {
            let count = min(cap, n / s)
            out.append(set(DirtyPattern.distinct(count, of: count * s, &rng), [.scattered]))
        }
        if n >= 256 { out.append(set(DirtyPattern.distinct(64, of: n, &rng), [.scattered])) }
        return out
    }

    /// Median of cold harvests of `pages` by `strategy`, the pages written
    /// as the sweep writes them: seven, or three when one takes over 5 ms
    /// or the set is larger than `maxPages`.
    func time(_ strategy: Strategy, _ pages: [UInt32], reps: Int? = nil) -> Double {
        let writes = ModelSeries.guestTranslations(vm: vm, pages: pages, sptesPerGFN: sptesPerGFN, seed: seed)
        var samples: [Double] = []
        var want = reps ?? (pages.count > Self.maxPages ? 3 : 7)
        while samples.count < want {
            vm.beginRound(slotID: VMLayout.measuredSlotID, for: strategy)
            let ns: UInt64 = vm.withMMU { mmu in
                let s = mmu.slot(id: VMLayout.measuredSlotID)
                for i in writes.gfns.indices { mmu.guestWrite(slot: s, gfn: writes.gfns[i], sptep: writes.sptes[i]) }
                flusher?.flush()
                ca_compiler_barrier()
                let t0 = MonotonicClock.now()
                _ = mmu.harvest(slot: s, strategy: strategy)
                let t1 = MonotonicClock.now()
                ca_compiler_barrier()
                return t1 &- t0
            }
            samples.append(Double(ns))
            if reps == nil && samples.count == 1 && ns > 5_000_000 { want = 3 }
        }
        return Statistics.median(samples)
    }

    /// Median of seven cold looks at the set's bitmap.
    func timeLook(_ set: DirtySet) -> Double {
        let words = set.bitmap.count
        var samples: [Double] = []
        var sink = 0.0
        set.bitmap.withUnsafeBufferPointer { b in
            for _ in 0..<7 {
                flusher?.flush()
                ca_compiler_barrier()
                let t0 = MonotonicClock.now()
                let look = MMU.lookAtBitmap(b.baseAddress!, words: words)
                let t1 = MonotonicClock.now()
                ca_compiler_barrier()
                sink += look.regular ? 1 : 0
                samples.append(Double(t1 &- t0))
            }
        }
        return Statistics.median(samples) + (sink < 0 ? 1 : 0)
    }
}
