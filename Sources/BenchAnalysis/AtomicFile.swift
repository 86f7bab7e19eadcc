import Foundation

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
