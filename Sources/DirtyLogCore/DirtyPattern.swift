/// Which pages of the slot a round of guest writes dirties. The names and
/// what they mean; BenchMeasure draws the sets.
public enum DirtyPattern: String, CaseIterable, Sendable, Hashable, Comparable {
    /// dirty-log-perf's: `count` pages evenly spaced, stride slotPages / count.
    case even
    /// `count` distinct pages drawn uniformly, seeded.
    case random
    /// Runs of consecutive pages (`clusterPages` long, aligned to their
    /// length) at random places: a guest filling buffers.
    case clustered
    /// A Zipf-like skew over a working set: the set is 64-page blocks at
    /// random places, at least a sixteenth of the slot; its pages ranked
    /// at random; page of rank r dirtied with probability proportional to
    /// 1 / (r + 1)^skew, so the hottest are dirty at every count.
    case hotSet = "hot-set"
    /// One page per 512-page leaf table, at a random offset in it: every
    /// dirty page in a table, rmap line and spte line of its own. At most
    /// one per table.
    case onePerTable = "one-per-table"

    public var summary: String {
        switch self {
        case .even: "evenly spaced pages, stride slot_pages / dirty_pages (dirty-log-perf)"
        case .random: "distinct pages drawn uniformly at random"
        case .clustered: "runs of consecutive pages (--cluster-pages) at random places"
        case .hotSet: "a Zipf-like skew (--zipf-skew) over a working set of scattered 64-page blocks"
        case .onePerTable: "one page per 512-page leaf table: the worst locality"
        }
    }

    /// Pages a leaf table maps (PT64_ENT_PER_PAGE).
    public static let pagesPerLeafTable = 512

    /// The most pages the pattern can dirty in a slot.
    public func maxCount(slotPages: Int) -> Int {
        self == .onePerTable ? max(1, slotPages / Self.pagesPerLeafTable) : slotPages
    }

    public static func < (a: DirtyPattern, b: DirtyPattern) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
