import Foundation

/// A CSV table built in memory and written whole: RFC 4180 quoting (fields
/// with a comma, quote or newline are quoted, quotes doubled), LF line ends.
public struct CSVTable {
    public let columns: [String]
    public private(set) var rows: [[String]] = []

    public init(columns: [String]) { self.columns = columns }

    public mutating func append(_ row: [String]) {
        precondition(row.count == columns.count, "row has \(row.count) fields for \(columns.count) columns")
        rows.append(row)
    }

    public var text: String {
        var out = columns.map(Self.quote).joined(separator: ",") + "\n"
        for r in rows { out += r.map(Self.quote).joined(separator: ",") + "\n" }
        return out
    }

    static func quote(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Parses text this type wrote (for `bench compare` and the tests).
    public static func parse(_ text: String) -> CSVTable? {
        var records: [[String]] = []
        var field = ""
        var record: [String] = []
        var quoted = false
        var it = text.makeIterator()
        var pending: Character? = nil
        while let c = pending ?? it.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let n = it.next() {
                        if n == "\"" { field.append("\"") } else { quoted = false; pending = n }
                    } else { quoted = false }
                } else { field.append(c) }
                continue
            }
            switch c {
            case "\"": quoted = true
            case ",": record.append(field); field = ""
            case "\n":
                record.append(field); field = ""
                records.append(record); record = []
            case "\r": break
            default: field.append(c)
            }
        }
        if !field.isEmpty || !record.isEmpty { record.append(field); records.append(record) }
        guard let header = records.first else { return nil }
        var t = CSVTable(columns: header)
        for r in records.dropFirst() {
            guard r.count == header.count else { return nil }
            t.rows.append(r)
        }
        return t
    }

    /// The rows as dictionaries keyed by column name.
    public var records: [[String: String]] {
        rows.map { Dictionary(uniqueKeysWithValues: zip(columns, $0)) }
    }
}

/// Writes files so that a reader never sees half of one: the bytes go to a
/// hidden temporary file in the same directory, which is then renamed over
/// the target (rename(2) is atomic within a file system).
public enum AtomicFile {
    public static func write(_ text: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(text.utf8).write(to: tmp)
            if rename(tmp.path, url.path) != 0 {
                let e = errno
                try? FileManager.default.removeItem(at: tmp)
                throw BenchError.output("cannot rename \(tmp.path) to \(path): \(String(cString: strerror(e)))")
            }
        } catch let e as BenchError {
            throw e
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw BenchError.output("cannot write \(path): \(error.localizedDescription)")
        }
    }
}

/// Errors the bench reports on one line and exits on.
public enum BenchError: Error, CustomStringConvertible {
    /// Bad input: exit status 64 (EX_USAGE).
    case usage(String)
    /// The output directory cannot be written: exit status 73 (EX_CANTCREAT).
    case output(String)
    /// Something failed while running: exit status 70 (EX_SOFTWARE).
    case failed(String)
    /// A backend asked for by name cannot be used: exit status 69 (EX_UNAVAILABLE).
    case unavailable(String)

    public var description: String {
        switch self {
        case .usage(let m), .output(let m), .failed(let m), .unavailable(let m): m
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .usage: 64
        case .output: 73
        case .failed: 70
        case .unavailable: 69
        }
    }
}
