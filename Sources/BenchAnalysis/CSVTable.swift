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

    /// Parses text this type wrote, or the same with CRLF line ends (for
    /// `bench compare` and the tests).
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
            case "\n", "\r\n":  // CRLF is one Character: files from Python's csv, spreadsheets
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
