import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct ChildRun {
    var exitStatus: Int32  // exit code, or 128 + signal
    var seconds: Double
    var cpuSeconds: Double  // user + system
    /// ru_maxrss from wait4, in bytes.
    var maxRSS: Int64
    /// This process's own peak RSS when it spawned the child: ru_maxrss cannot report less.
    var maxRSSFloor: Int64
    /// The highest VmHWM seen in /proc/PID/status while the child ran (Linux only).
    var sampledPeakRSS: Int64?
    var stdout: Data

    var succeeded: Bool { exitStatus == 0 }
}

/// Runs `argv` with stdin from /dev/null, stdout into `stdoutPath` and stderr shared with
/// ours (so progress shows), and reports its wall time and peak RSS.
///
/// Why not Foundation.Process: it reaps the child on its own thread, so our wait4 would find
/// nothing to wait for and never see the child's rusage. And a caveat that holds for any
/// spawn on Linux: posix_spawn runs the child on our address space until exec (CLONE_VM), and
/// exec carries that address space's high-water RSS into the child's ru_maxrss. The child's
/// ru_maxrss is therefore max(its own peak, our peak at spawn time); the caller keeps its own
/// footprint small before spawning, and `maxRSSFloor` plus the VmHWM sampling tell whether
/// the figure is the child's own.
func runChild(_ argv: [String], stdoutPath: String) throws -> ChildRun {
    try startChild(argv, stdoutPath: stdoutPath).wait()
}

/// A child started by `startChild`: sample it, signal it, wait for it.
final class RunningChild {
    let pid: pid_t
    let argv: [String]
    let stdoutPath: String
    private let floor: Int64
    private let start: UInt64
    private(set) var sampledPeakRSS: Int64?

    fileprivate init(pid: pid_t, argv: [String], stdoutPath: String, floor: Int64, start: UInt64) {
        self.pid = pid
        self.argv = argv
        self.stdoutPath = stdoutPath
        self.floor = floor
        self.start = start
    }

    /// Reads VmHWM while the child is alive (or a zombie); once reaped its pid could be reused.
    func sample() {
        if let hwm = vmHWM(pid: pid) { sampledPeakRSS = max(sampledPeakRSS ?? 0, hwm) }
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Alive and not yet a zombie (Linux: the state in /proc/PID/stat).
    var isRunning: Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }

    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Waits for the child, sampling its RSS every 5 ms (polling rather than blocking, so
    /// /proc/PID can be read while it runs).
    func wait(timeout: Double? = nil) throws -> ChildRun {
        var status: Int32 = 0
        var usage = rusage()
        while true {
            let r = wait4(pid, &status, WNOHANG, &usage)
            if r == pid { break }
            if r < 0 && errno != EINTR { throw BenchError("wait4 on \(argv[0]): \(String(cString: strerror(errno)))") }
            sample()
            if let timeout, seconds > timeout {
                kill(pid, SIGKILL)
                timeoutHit = true
            }
            usleep(5_000)
        }
        let elapsed = seconds
        let signal = status & 0x7F
        let exitStatus = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        let out = FileManager.default.contents(atPath: stdoutPath) ?? Data()
        if timeoutHit { throw BenchError("\(argv.prefix(2).joined(separator: " ")) did not finish within \(Int(timeout ?? 0)) s; killed") }
        return ChildRun(exitStatus: exitStatus, seconds: elapsed, cpuSeconds: cpuSeconds(usage), maxRSS: maxRSSBytes(usage),
                        maxRSSFloor: floor, sampledPeakRSS: sampledPeakRSS, stdout: out)
    }
    private var timeoutHit = false
}

/// Starts `argv` with stdin from /dev/null, stdout into `stdoutPath` and stderr shared with
/// ours (so progress shows). See `runChild` for what its peak RSS means.
func startChild(_ argv: [String], stdoutPath: String) throws -> RunningChild {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)

    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }

    let floor = selfPeakRSS()
    let start = DispatchTime.now().uptimeNanoseconds
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
    guard rc == 0 else { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    return RunningChild(pid: pid, argv: argv, stdoutPath: stdoutPath, floor: floor, start: start)
}

func selfPeakRSS() -> Int64 {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return maxRSSBytes(usage)
}

/// User plus system CPU time of this process so far.
func selfCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return cpuSeconds(usage)
}

private func cpuSeconds(_ usage: rusage) -> Double {
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return s(usage.ru_utime) + s(usage.ru_stime)
}

/// ru_maxrss is in kilobytes on Linux and in bytes on macOS.
private func maxRSSBytes(_ usage: rusage) -> Int64 {
    #if os(macOS)
    return Int64(usage.ru_maxrss)
    #else
    return Int64(usage.ru_maxrss) * 1024
    #endif
}

/// VmHWM (peak resident set of the process's current address space) in bytes.
private func vmHWM(pid: pid_t) -> Int64? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.dropFirst(6).split(whereSeparator: \.isWhitespace).first.flatMap { Int64($0) }
        return kb.map { $0 * 1024 }
    }
    return nil
}

func executablePath(named name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
