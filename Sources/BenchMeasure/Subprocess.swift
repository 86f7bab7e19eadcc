import DirtyLogCore
import Foundation
import Glibc

/// A short command's standard output, by posix_spawn and waitpid: no run
/// loop (Foundation's `Process` waits on one, which hangs where its wakeup
/// socket cannot be made, as in the kernel lab's guest), and a deadline
/// after which the command is killed.
enum Subprocess {
    /// The command's standard output, trimmed; nil when it cannot start,
    /// fails, or is still running after `seconds`.
    static func output(_ args: [String], seconds: Double = 10) -> String? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        posix_spawn_file_actions_addclose(&actions, fds[1])
        var pid: pid_t = 0
        let argv = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let spawned = posix_spawnp(&pid, args[0], &actions, nil, argv, environ)
        close(fds[1])
        guard spawned == 0 else {
            close(fds[0])
            return nil
        }
        let deadline = MonotonicClock.now() &+ UInt64(seconds * 1e9)
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timedOut = false
        while true {
            let now = MonotonicClock.now()
            if now >= deadline { timedOut = true; break }
            var p = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min(1000, (deadline - now) / 1_000_000 + 1)))
            if ready < 0 && errno != EINTR { break }
            if ready <= 0 { continue }
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        close(fds[0])
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard !timedOut, status & 0x7f == 0, (status >> 8) & 0xff == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
