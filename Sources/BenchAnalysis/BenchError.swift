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
    /// A file read back is damaged (a row with a field that is not what its
    /// column holds): exit status 65 (EX_DATAERR).
    case data(String)

    public var description: String {
        switch self {
        case .usage(let m), .output(let m), .failed(let m), .unavailable(let m), .data(let m): m
        }
    }

    public var exitStatus: Int32 {
        switch self {
        case .usage: 64
        case .output: 73
        case .failed: 70
        case .unavailable: 69
        case .data: 65
        }
    }
}
