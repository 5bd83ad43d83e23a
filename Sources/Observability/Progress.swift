#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// What a progress count counts: a plural noun, or bytes (shown in KiB, MiB, …).
public struct ProgressUnit: Sendable, Equatable {
    public var name: String
    public var isBytes: Bool

    public init(_ name: String, isBytes: Bool = false) {
        self.name = name
        self.isBytes = isBytes
    }

    public static let documents = ProgressUnit("docs")
    public static let records = ProgressUnit("records")
    public static let events = ProgressUnit("events")
    public static let bytes = ProgressUnit("bytes", isBytes: true)
}

/// Renders progress of long work as text: on a terminal a bar redrawn in place (at most
/// 4 times a second), otherwise a plain line every 10 seconds, for logs that stay readable.
/// The caller writes the lines (to stderr: stdout may carry a result). Thread-safe, so
/// parallel workers can report into one meter.
public final class ProgressMeter: @unchecked Sendable {
    public let label: String
    public let unit: ProgressUnit
    public let tty: Bool
    /// Seconds between lines.
    public let interval: Double
    /// The terminal's width, to keep a redrawn line from wrapping.
    public var columns: Int

    private let clock: @Sendable () -> Double
    private let lock = NSLock()
    private var started: Double
    private var lastLine: Double
    private var lastDone: Int64 = 0
    private var lastSample: Double
    /// Work done across resets: a count that goes down starts a new phase (the next namespace, the next backup).
    private var work: Int64 = 0
    private var sampledWork: Int64 = 0
    private var rate: Double?

    public init(label: String, unit: ProgressUnit, tty: Bool, interval: Double? = nil, columns: Int? = nil,
                clock: @escaping @Sendable () -> Double = ProgressMeter.monotonicSeconds) {
        self.label = label
        self.unit = unit
        self.tty = tty
        self.interval = interval ?? (tty ? 0.25 : 10)
        self.columns = columns ?? (tty ? ProgressMeter.terminalColumns() : 0)
        self.clock = clock
        started = clock()
        lastLine = started  // nothing for work that finishes within the first interval
        lastSample = started
    }

    /// The line to show now, or nil when the last one is recent enough. `total` nil: unknown.
    public func update(done: Int64, total: Int64?, detail: String? = nil) -> String? {
        lock.lock()
        defer { lock.unlock() }
        let now = clock()
        work += done >= lastDone ? done - lastDone : done
        lastDone = done
        guard now - lastLine >= interval else { return nil }
        lastLine = now
        sample(now)
        return render(done: done, total: total, detail: detail)
    }

    /// Smoothed rate over about the last 10 seconds, so the ETA follows the current speed
    /// without jumping with every batch.
    private func sample(_ now: Double) {
        let dt = now - lastSample
        guard dt > 0 else { return }
        let instant = Double(work - sampledWork) / dt
        if let r = rate {
            let alpha = 1 - exp(-dt / 10)
            rate = r + alpha * (instant - r)
        } else {
            rate = Double(work) / max(now - started, 0.001)
        }
        lastSample = now
        sampledWork = work
    }

    func render(done: Int64, total: Int64?, detail: String?) -> String {
        let rateText = rate.map { formatRate($0) }
        var fraction: Double?
        var eta: String?
        if let total, total > 0 {
            fraction = min(1, max(0, Double(done) / Double(total)))
            if let rate, rate > 0 { eta = Self.formatDuration(Double(max(0, total - done)) / rate) }
        }
        let count = total.map { $0 > 0 ? "\(formatCount(done))/\(formatCount($0))" : formatCount(done) } ?? formatCount(done)
        let counted = unit.isBytes ? count : "\(count) \(unit.name)"
        if tty {
            var tail: [String] = []
            if let fraction { tail.append(String(format: "%3.0f%%", fraction * 100)) }
            tail.append(counted)
            if let rateText { tail.append(rateText) }
            if let eta { tail.append("ETA " + eta) }
            if let detail, !detail.isEmpty { tail.append(detail) }
            var parts = [label]
            if let fraction {
                // 20 cells, fewer on a narrow terminal (before the line itself is cut).
                let rest = ([label] + tail).joined(separator: "  ").count + 4
                let width = columns > 1 ? max(5, min(20, columns - 1 - rest)) : 20
                let filled = Int((fraction * Double(width)).rounded(.down))
                parts.append("[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]")
            }
            let line = (parts + tail).joined(separator: "  ")
            return columns > 1 && line.count >= columns ? String(line.prefix(columns - 1)) : line
        }
        var line = "\(label): \(counted)"
        if let fraction { line += String(format: " (%.0f%%)", fraction * 100) }
        if let rateText { line += ", " + rateText }
        if let eta { line += ", ETA " + eta }
        if let detail, !detail.isEmpty { line += " [\(detail)]" }
        return line
    }

    func formatCount(_ n: Int64) -> String {
        unit.isBytes ? Self.formatBytes(Double(n)) : String(n)
    }

    func formatRate(_ r: Double) -> String {
        unit.isBytes ? Self.formatBytes(r) + "/s" : Self.formatShort(r) + " \(unit.name)/s"
    }

    /// 950, 8.1k, 12k, 3.4M: a rate needs two or three figures, not six.
    public static func formatShort(_ v: Double) -> String {
        let units = ["", "k", "M", "G", "T"]
        var x = v
        var i = 0
        while abs(x) >= 1000 && i < units.count - 1 { x /= 1000; i += 1 }
        if i == 0 { return String(format: x < 10 && x != x.rounded() ? "%.1f" : "%.0f", x) }
        return String(format: x < 100 ? "%.1f%@" : "%.0f%@", x, units[i])
    }

    public static func formatBytes(_ v: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var x = v
        var i = 0
        while x >= 1024 && i < units.count - 1 { x /= 1024; i += 1 }
        return i == 0 ? String(format: "%.0f B", x) : String(format: "%.1f %@", x, units[i])
    }

    /// 45s, 3m05s, 2h07m.
    public static func formatDuration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded(.up))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m" + String(format: "%02ds", s % 60) }
        if s < 100 * 3600 { return "\(s / 3600)h" + String(format: "%02dm", (s % 3600) / 60) }
        return "\(s / 86400)d"
    }

    @Sendable public static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    static func terminalColumns() -> Int {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }
}
