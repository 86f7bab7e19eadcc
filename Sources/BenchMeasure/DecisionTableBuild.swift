import DirtyLogCore
import ShadowMMU

/// Building the adaptive rule's decision table (`DecisionTable`, whose
/// layout and reading are the model's) from the calibrated cost model.
extension DecisionTable {
    /// The records for `model` over 1 to `maxPages` dirty pages.
    public static func build(_ model: CostModel, maxPages: Int) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: words)
        for k in 0..<SpanDensity.steps {
            func decision(_ p: Int) -> UInt8 {
                model.rows.withUnsafeBufferPointer {
                    let rows = CostRows(base: $0.baseAddress!)
                    let (r, s) = CostRows.lanes(regular: rows.costs(.regular, pages: p, step: k), scattered: rows.costs(.scattered, pages: p, step: k),
                                                lookNs: Float(model.lookNs))
                    return UInt8(r | s << 4)
                }
            }
            // The choice along a geometric grid of page counts, merged into segments.
            var segs: [(start: Int, choice: UInt8)] = []
            var p = 1
            while p <= max(1, maxPages) {
                let d = decision(p)
                if segs.last?.choice != d { segs.append((p, d)) }
                p = max(p + 1, Int(Double(p) * 1.01))
            }
            // At most `segments`: the narrowest (in octaves) folds into its left neighbour.
            while segs.count > segments {
                var narrowest = 1, least = Double.infinity
                for i in 1..<segs.count {
                    let end = i + 1 < segs.count ? Double(segs[i + 1].start) : Double(max(maxPages, segs[i].start + 1))
                    let w = (end / Double(segs[i].start)).squareRoot()  // monotone in the width in octaves
                    if w < least { least = w; narrowest = i }
                }
                segs.remove(at: narrowest)
                var i = 1
                while i < segs.count { if segs[i].choice == segs[i - 1].choice { segs.remove(at: i) } else { i += 1 } }
            }
            var bounds = [UInt32](repeating: .max, count: 6)
            var choices: UInt64 = 0
            for (i, seg) in segs.enumerated() {
                if i > 0 { bounds[i - 1] = UInt32(min(seg.start, Int(UInt32.max))) }
                choices |= UInt64(seg.choice) << UInt64(8 * i)
            }
            // Unused segments repeat the last choice.
            for i in segs.count..<8 { choices |= UInt64(segs.last!.choice) << UInt64(8 * i) }
            for w in 0..<3 { out[k * wordsPerStep + w] = UInt64(bounds[2 * w]) | UInt64(bounds[2 * w + 1]) << 32 }
            out[k * wordsPerStep + 3] = choices
        }
        return out
    }

    /// The page count below which `table` chooses one lane whatever the
    /// density, without looking, and that lane: every step's first segment
    /// that choice (a step whose first segment differs bounds it by its ρ,
    /// which so few pages cannot reach).
    public static func smallPages(_ table: [UInt64]) -> (pages: Int, lane: Int) {
        let first = Int(table[3] & 0xFF)
        guard first & 15 == first >> 4 else { return (0, 0) }
        var bound = Int(UInt32.max)
        for k in 0..<SpanDensity.steps {
            let c = Int(table[k * wordsPerStep + 3] & 0xFF)
            let end = Int(table[k * wordsPerStep] & 0xFFFF_FFFF)
            bound = min(bound, c == first ? end : Int(SpanDensity.rho(k).rounded(.up)))
        }
        return (bound, first & 15)
    }

}

extension VirtualMachine {
    /// Installs the adaptive rule's decision table, built from `model` for
    /// up to the largest slot's pages (`DecisionTable.build`), where the
    /// harvest's decision reads it; an uncalibrated model removes it (the
    /// rule then takes masked).
    public func install(_ model: CostModel) {
        guard model.calibrated else {
            installDecisionTable(nil)
            return
        }
        let words = DecisionTable.build(model, maxPages: withMMU { $0.memslots.map(\.npages).max() ?? 1 })
        installDecisionTable(words, small: DecisionTable.smallPages(words))
    }
}
