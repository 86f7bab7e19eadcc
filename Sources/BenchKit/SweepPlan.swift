import Foundation

/// The dirty-page counts a scenario measures.
public enum SweepPlan {
    /// Every power of two from 1 to the slot, the slot itself, 4 points per
    /// octave from a quarter to four times n_used_mmu_pages, and the seed's
    /// switch point (n_used - 1 and n_used) itself: log-spaced, denser where
    /// the seed's rule decides.
    public static func thresholdSweep(slotPages: Int, nUsedMMUPages: Int) -> [Int] {
        var counts = Set<Int>()
        var d = 1
        while d < slotPages { counts.insert(d); d *= 2 }
        counts.insert(slotPages)
        let lo = Double(nUsedMMUPages) / 4, hi = Double(nUsedMMUPages) * 4
        var x = lo
        while x <= hi * 1.0001 {
            counts.insert(Int(x.rounded()))
            x *= pow2(0.25)
        }
        counts.insert(nUsedMMUPages - 1)
        counts.insert(nUsedMMUPages)
        return counts.filter { $0 >= 1 && $0 <= slotPages }.sorted()
    }

    /// dirty-log-perf's counts: 1, 2, 4, ... up to the slot.
    public static func powersOfTwo(slotPages: Int) -> [Int] {
        var counts: [Int] = []
        var d = 1
        while d < slotPages { counts.append(d); d *= 2 }
        counts.append(slotPages)
        return counts
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
