import DirtyLogCore
import Foundation

/// How closely a threshold sweep samples the dirty counts.
public struct SweepDensity: Hashable, Sendable {
    /// Octaves between the coarse points (1: every power of two; 2: every power of four).
    public var octavesPerCoarseStep: Int
    /// Points per octave from a quarter to four times n_used_mmu_pages.
    public var densePointsPerOctave: Int

    /// Bisections of the bracket around the rmap/slot-walk crossover.
    public var refinements: Int

    public init(octavesPerCoarseStep: Int, densePointsPerOctave: Int, refinements: Int = 4) {
        self.octavesPerCoarseStep = octavesPerCoarseStep
        self.densePointsPerOctave = densePointsPerOctave
        self.refinements = refinements
    }

    /// Slots up to 1 GiB in the default run: every power of two, two points
    /// an octave around n_used_mmu_pages (the crossover's bisection adds
    /// points where it lies).
    public static let full = SweepDensity(octavesPerCoarseStep: 1, densePointsPerOctave: 2)
    /// Larger slots in the default run, where every point costs more and
    /// the walks cost the same at every count: coarse points every four
    /// octaves, one an octave around n_used_mmu_pages, three bisections of
    /// the crossover's bracket (to half an octave).
    public static let large = SweepDensity(octavesPerCoarseStep: 4, densePointsPerOctave: 1, refinements: 3)
    /// --quick.
    public static let quick = SweepDensity(octavesPerCoarseStep: 2, densePointsPerOctave: 2, refinements: 2)
}

/// The dirty-page counts a scenario measures.
public enum SweepPlan {
    /// Log-spaced from 1 to the slot: the coarse powers of 2 (or of 4), the
    /// slot itself, a denser grid from a quarter to four times
    /// n_used_mmu_pages, and the seed's switch point (n_used - 1 and n_used)
    /// itself: denser where the seed's rule decides.
    public static func thresholdSweep(slotPages: Int, nUsedMMUPages: Int, density: SweepDensity = .full) -> [Int] {
        // The seed's switch pair, then the coarse points and the dense band,
        // each left out within an eighth of an octave of a point already in.
        var counts: [Int] = [nUsedMMUPages - 1, nUsedMMUPages]
        func add(_ c: Int) {
            guard c >= 1, c <= slotPages, !counts.contains(where: { abs(log2(Double($0) / Double(c))) < 0.125 }) else { return }
            counts.append(c)
        }
        add(slotPages)
        var d = 1
        while d < slotPages { add(d); d <<= density.octavesPerCoarseStep }
        let lo = Double(nUsedMMUPages) / 4, hi = Double(nUsedMMUPages) * 4
        var x = lo
        while x <= hi * 1.0001 {
            add(Int(x.rounded()))
            x *= pow2(1 / Double(density.densePointsPerOctave))
        }
        return Set(counts.filter { $0 >= 1 && $0 <= slotPages }).sorted()
    }

    /// dirty-log-perf's counts: 1, 2, 4, ... up to the slot (or every
    /// `octaves`-th power of two), and the slot itself.
    public static func powersOfTwo(slotPages: Int, octaves: Int = 1) -> [Int] {
        var counts: [Int] = []
        var d = 1
        while d < slotPages { counts.append(d); d <<= octaves }
        counts.append(slotPages)
        return counts
    }

    /// The concurrent scenario's counts: a few pages (the rmap branch's
    /// end: sixteen), n_used_mmu_pages (where the seed's rule switches) and
    /// eight times that or a sixteenth of the slot, whichever is fewer
    /// (slot-walk's end).
    public static func guestCounts(slotPages: Int, nUsedMMUPages: Int) -> [Int] {
        Array(Set([16, nUsedMMUPages, min(slotPages / 16, 8 * nUsedMMUPages)].map { min(max(1, $0), slotPages) })).sorted()
    }

    /// A count to add between two measured counts that bracket a crossover,
    /// or nil when they are already within a quarter octave (or adjacent).
    public static func refinement(between lo: Int, and hi: Int) -> Int? {
        guard hi > lo + 1, Double(hi) / Double(lo) > pow2(0.25) else { return nil }
        let mid = Int((Double(lo) * Double(hi)).squareRoot().rounded())
        return mid > lo && mid < hi ? mid : nil
    }

    static func pow2(_ e: Double) -> Double { exp2(e) }
}

/// Which dirty counts a series measures.
public enum CountPlan: Sendable, Hashable {
    /// `SweepPlan.thresholdSweep`, then refined around the crossover.
    case thresholdSweep(SweepDensity)
    /// 1, 2, 4, ... up to the slot (dirty-log-perf).
    case powersOfTwo
    /// Exactly these.
    case explicit([Int])
    /// Pre-copy live migration: rounds of shrinking dirty sets (see `MigrationPlan`).
    case migration
    /// The concurrent scenario's: both ends of the threshold sweep and its
    /// middle (`SweepPlan.guestCounts`).
    case guestSweep

    /// Octaves between the coarse counts of a sweep (the kernel's counts follow them).
    public var coarseOctaves: Int {
        if case .thresholdSweep(let density) = self { return density.octavesPerCoarseStep }
        return 1
    }

    /// Whether the plan sweeps from 1 to the slot (rather than listing counts).
    public var isSweep: Bool {
        switch self {
        case .thresholdSweep, .powersOfTwo: true
        default: false
        }
    }

    public func counts(slotPages: Int, nUsedMMUPages: Int) -> [Int] {
        switch self {
        case .thresholdSweep(let density): SweepPlan.thresholdSweep(slotPages: slotPages, nUsedMMUPages: nUsedMMUPages, density: density)
        case .powersOfTwo: SweepPlan.powersOfTwo(slotPages: slotPages)
        case .explicit(let c): Array(Set(c)).sorted()
        case .migration: []
        case .guestSweep: SweepPlan.guestCounts(slotPages: slotPages, nUsedMMUPages: nUsedMMUPages)
        }
    }
}

/// Pre-copy live migration's dirty rounds: the first copies every page,
/// then each round dirties half as many as the one before, down to the
/// guest's working set (a sixteenth of the slot), drawn hot-set.
public struct MigrationPlan: Sendable {
    public let counts: [Int]

    public init(slotPages: Int, rounds: Int) {
        let floor = max(1, slotPages / 16)
        counts = (0..<max(1, rounds)).map { max(floor, slotPages >> $0) }
    }
}
