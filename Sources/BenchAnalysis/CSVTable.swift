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
    /// `bench compare` and the tests); nil when it is not a table.
    public static func parse(_ text: String) -> CSVTable? { try? parse(text, file: "") }

    /// Parses text this type wrote, or the same with CRLF line ends; a
    /// record whose field count differs from the header's, or a quote left
    /// open, is `BenchError.data` naming `file` and the line it starts on.
    /// `lines[i]` is then the line row `i` starts on.
    public static func parse(_ text: String, file: String) throws -> CSVTable {
        var records: [(line: Int, fields: [String])] = []
        var field = ""
        var record: [String] = []
        var quoted = false
        var line = 1, recordLine = 1
        var it = text.makeIterator()
        var pending: Character? = nil
        while let c = pending ?? it.next() {
            pending = nil
            if c == "\n" || c == "\r\n" { line += 1 }
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
                records.append((recordLine, record)); record = []
                recordLine = line
            case "\r": break
            default: field.append(c)
            }
        }
        if quoted { throw BenchError.data("\(file):\(recordLine): a quoted field is never closed") }
        if !field.isEmpty || !record.isEmpty { record.append(field); records.append((recordLine, record)) }
        guard let header = records.first else { throw BenchError.data("\(file):1: no header") }
        var t = CSVTable(columns: header.fields)
        for r in records.dropFirst() {
            guard r.fields.count == header.fields.count else {
                throw BenchError.data("\(file):\(r.line): \(r.fields.count) fields where the header has \(header.fields.count)")
            }
            t.rows.append(r.fields)
            t.lines.append(r.line)
        }
        return t
    }

    /// The line each row starts on, when parsed.
    public private(set) var lines: [Int] = []

    /// The rows as dictionaries keyed by column name.
    public var records: [[String: String]] {
        rows.map { Dictionary(uniqueKeysWithValues: zip(columns, $0)) }
    }
}
