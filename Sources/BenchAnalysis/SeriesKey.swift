import DirtyLogCore

/// What identifies one measured series: one row of crossover.csv, one plot.
public struct SeriesKey: Hashable, Sendable, Comparable {
    public var scenario: Scenario
    public var paging: PagingMode
    public var sptesPerGFN: Int
    public var slotPages: Int
    public var vmPages: Int
    public var pattern: DirtyPattern
    /// The concurrent scenario: how the vCPUs' write faults are handled.
    public var faultPath: FaultPath?

    public init(scenario: Scenario, paging: PagingMode, sptesPerGFN: Int, slotPages: Int, vmPages: Int, pattern: DirtyPattern,
                faultPath: FaultPath? = nil) {
        self.scenario = scenario
        self.paging = paging
        self.sptesPerGFN = sptesPerGFN
        self.slotPages = slotPages
        self.vmPages = vmPages
        self.pattern = pattern
        self.faultPath = faultPath
    }

    /// "threshold 1GiB tdp even" for people.
    public var label: String {
        var s = "\(scenario.rawValue) \(Bytes.pages(slotPages)) \(paging.rawValue)"
        if sptesPerGFN > 1 { s += "×\(sptesPerGFN)" }
        if vmPages != slotPages { s += " in \(Bytes.pages(vmPages)) VM" }
        s += " \(pattern.rawValue)"
        if let f = faultPath { s += " \(f.rawValue) faults" }
        return s
    }

    /// A file-name-safe form of the label.
    public var slug: String {
        var s = ""
        for c in label.map({ $0.isLetter || $0.isNumber ? $0 : "-" }) where !(c == "-" && s.last == "-") { s.append(c) }
        while s.last == "-" { s.removeLast() }
        return s
    }

    public static func < (a: SeriesKey, b: SeriesKey) -> Bool {
        let x = (a.scenario, a.slotPages, a.vmPages, a.paging, a.sptesPerGFN, a.pattern)
        let y = (b.scenario, b.slotPages, b.vmPages, b.paging, b.sptesPerGFN, b.pattern)
        return x < y || (x == y && (a.faultPath?.rawValue ?? "") < (b.faultPath?.rawValue ?? ""))
    }
}
