import ShadowMMU

/// What identifies one measured series: one row of crossover.csv, one plot.
public struct SeriesKey: Hashable, Sendable, Comparable {
    public var scenario: String
    public var paging: String
    public var sptesPerGFN: Int
    public var slotPages: Int
    public var vmPages: Int
    public var pattern: String

    public init(scenario: String, paging: String, sptesPerGFN: Int, slotPages: Int, vmPages: Int, pattern: String) {
        self.scenario = scenario
        self.paging = paging
        self.sptesPerGFN = sptesPerGFN
        self.slotPages = slotPages
        self.vmPages = vmPages
        self.pattern = pattern
    }

    /// "threshold 1GiB tdp even" for people.
    public var label: String {
        var s = "\(scenario) \(Bytes.pages(slotPages)) \(paging)"
        if sptesPerGFN > 1 { s += "×\(sptesPerGFN)" }
        if vmPages != slotPages { s += " in \(Bytes.pages(vmPages)) VM" }
        return s + " \(pattern)"
    }

    /// A file-name-safe form of the label.
    public var slug: String {
        label.map { $0.isLetter || $0.isNumber ? $0 : "-" }.reduce(into: "") { s, c in
            if !(c == "-" && s.last == "-") { s.append(c) }
        }.trimmingSuffix("-")
    }

    public static func < (a: SeriesKey, b: SeriesKey) -> Bool {
        (a.scenario, a.slotPages, a.vmPages, a.paging, a.sptesPerGFN, a.pattern)
            < (b.scenario, b.slotPages, b.vmPages, b.paging, b.sptesPerGFN, b.pattern)
    }
}

extension String {
    func trimmingSuffix(_ c: Character) -> String {
        var s = self
        while s.last == c { s.removeLast() }
        return s
    }
}

/// One strategy at one point of one series: a row of points.csv.
public struct PointRow: Sendable {
    public var series: SeriesKey
    /// "model" or "kvm"
    public var backend: String
    public var nUsedMMUPages: Int
    public var dirtyPages: Int
    public var strategy: String
    /// What the seed's rule picks at this point.
    public var seedChoice: String
    /// For a rule (seed): what it chose at the last repetition.
    public var chose: String
    /// Timed repetitions, nanoseconds, warm-up excluded, in run order.
    public var samples: [Double]
    /// The model's counters; nil for the kernel, which does not report them.
    public var counters: ProtectCounters?
    /// Bytes allocated by this thread inside the timed regions, summed.
    public var allocatedBytesInTimedRegion: UInt64
    public var verified: Bool
    /// The first violations found, empty when verified.
    public var violations: String
    public var cache: String
    /// What only kernel rows have.
    public var kernel: KernelExtras? = nil
    public var phases: PhaseExtras? = nil
    /// Harvest rounds each repetition's time adds up (the migration
    /// scenario); 1 for a sweep point.
    public var rounds = 1

    public var summary: SampleSummary { SampleSummary(samples) }
    /// The whole protection work of each repetition's round: the timed
    /// harvest plus, for rings, the harvests full rings forced while the
    /// guest wrote. What plots and "best" compare.
    public var roundSummary: SampleSummary {
        guard let during = phases?.ringNsDuringWrites, during.count == samples.count else { return summary }
        return SampleSummary(zip(samples, during).map { $0 + $1 })
    }
    public var dirtyPerUsed: Double { Double(dirtyPages) / Double(max(1, nUsedMMUPages)) }
}

/// Two-phase harvests and dirty rings: what one median does not show.
public struct PhaseExtras: Sendable {
    /// Get-then-clear protocols (kvm-get+clear, clear-chunked): each
    /// phase's time, per repetition.
    public var getNs: [Double] = []
    public var clearNs: [Double] = []
    /// Rings: full-ring stops during the guest's writes, summed over
    /// repetitions, and the harvests that answered them (with untimed chunk
    /// harvests on the kernel), with their time per repetition.
    public var ringFullExits = 0
    public var ringHarvestsDuringWrites = 0
    public var ringNsDuringWrites: [Double] = []

    public init() {}
}

/// The parts of a kernel row the model has no counterpart for.
public struct KernelExtras: Sendable {
    /// `flat32` or `long64`: how the test guest ran.
    public var guestMode: String
    /// VM statistic pages_4k after the point: 4 KiB sptes the kernel holds.
    public var sptes4k: UInt64 = 0
    /// vCPU statistic insn_emulation over the point's guest writes, per write.
    public var emulatedInstructionsPerWrite: Double = 0

    public init(guestMode: String) { self.guestMode = guestMode }
}

/// A strategy, series or point that did not run, and why: a row of skipped.csv.
public struct SkipNote: Sendable {
    public var series: String
    public var backend: String
    public var strategy: String
    public var dirtyPages: String
    public var reason: String

    public init(series: String, backend: String, strategy: String = "", dirtyPages: String = "", reason: String) {
        self.series = series
        self.backend = backend
        self.strategy = strategy
        self.dirtyPages = dirtyPages
        self.reason = reason
    }
}

/// Human-readable sizes.
public enum Bytes {
    /// "1GiB", "512MiB", "16KiB" for a page count (4 KiB pages), exact when it can be.
    public static func pages(_ n: Int) -> String { format(n * 4096) }

    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var u = 0
        while u < units.count - 1, bytes >= 1 << (10 * (u + 1)) { u += 1 }
        let scale = 1 << (10 * u)
        if bytes % scale == 0 { return "\(bytes / scale)\(units[u])" }
        return String(format: "%.1f", Double(bytes) / Double(scale)) + units[u]
    }
}

import Foundation
