import ArgumentParser
import BenchMeasure
import DirtyLogCore
import ShadowMMU

/// A number of 4 KiB pages, given as a count ("262144") or a size with a
/// binary unit ("1GiB", "512M", "64KiB") that is a whole number of pages.
struct PageCount: ExpressibleByArgument, Hashable, Comparable {
    var pages: Int

    init(_ pages: Int) { self.pages = pages }

    init?(argument text: String) {
        if let v = Int(text) {
            pages = v
            return
        }
        let units: [(String, Int)] = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40), ("K", 10), ("M", 20), ("G", 30), ("T", 40)]
        guard let (suffix, shift) = units.first(where: { text.uppercased().hasSuffix($0.0.uppercased()) }),
              let v = Int(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0, v <= (Int.max >> (shift + 1)),
              (v << shift) % 4096 == 0 else { return nil }
        pages = (v << shift) / 4096
    }

    var defaultValueDescription: String { "\(pages)" }

    static func < (a: PageCount, b: PageCount) -> Bool { a.pages < b.pages }
}

/// A comma-separated list of values ("tdp,shadow", "1GiB,16GiB").
struct CommaList<Element: ExpressibleByArgument>: ExpressibleByArgument {
    var values: [Element]

    init(_ values: [Element]) { self.values = values }

    init?(argument text: String) {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else { return nil }
        var out: [Element] = []
        for p in parts {
            guard let v = Element(argument: p) else { return nil }
            out.append(v)
        }
        values = out
    }

    var defaultValueDescription: String { values.map(\.defaultValueDescription).joined(separator: ",") }

    static var allValueStrings: [String] { Element.allValueStrings }
}

/// Which implementations a run measures.
enum BackendChoice: String, CaseIterable, ExpressibleByArgument {
    case model, kvm, both

    var includesModel: Bool { self != .kvm }
    var includesKernel: Bool { self != .model }
}

/// A paging mode as `--paging` names it.
enum PagingChoice: String, CaseIterable, ExpressibleByArgument {
    case tdp, shadow

    func paging(mappings: Int) -> Paging { self == .tdp ? .tdp : .shadow(mappings: mappings) }
}

/// What a run's series measure, as `--scenario` names them.
enum ScenarioChoice: String, CaseIterable, ExpressibleByArgument {
    /// Dirty counts swept around the seed's threshold, one harvest per point.
    case threshold
    /// Rounds of pre-copy migration, timed as a total per strategy.
    case migration
    /// vCPU threads writing through each harvest.
    case concurrent
    /// dirty_log_perf_test's whole lifecycle on a huge-page guest.
    case lifecycle
}

/// How the lifecycle's guest picks the pages of a pass (the test's -a).
enum AccessChoice: String, CaseIterable, ExpressibleByArgument {
    case sequential, random
}

extension Strategy: ExpressibleByArgument {}
extension FaultPath: ExpressibleByArgument {}
extension DirtyPattern: ExpressibleByArgument {}
extension CacheMode: ExpressibleByArgument {}
extension GuestCPU: ExpressibleByArgument {}
extension Backing: ExpressibleByArgument {}
extension EnablePolicy: ExpressibleByArgument {}
extension DisablePolicy: ExpressibleByArgument {}
