#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif
import Foundation
import Logging

/// How log lines look. `auto` keeps a terminal readable and gives a collector (journald,
/// a container runtime, a log shipper: stderr is not a terminal) one JSON object per line.
public enum LogFormat: String, CaseIterable, Sendable {
    case auto, text, json

    /// `text` or `json`: `auto` becomes text when stderr is a terminal, json otherwise.
    public func resolved(stderrIsTTY: Bool = isatty(STDERR_FILENO) == 1) -> LogFormat {
        self == .auto ? (stderrIsTTY ? .text : .json) : self
    }
}

/// Where log lines go. One lock per sink, and each line goes out in one write(2), so lines
/// from several threads (or processes sharing the stream) never interleave.
public final class LogSink: @unchecked Sendable {
    public static let standardError = LogSink(fileDescriptor: STDERR_FILENO)

    private let lock = NSLock()
    private let output: ([UInt8]) -> Void
    /// A status line (a progress bar) is on the terminal without its newline.
    private var statusShown = false
    private static let eraseLine = Array("\r\u{1B}[2K".utf8)

    public init(fileDescriptor fd: Int32) {
        output = { bytes in
            bytes.withUnsafeBytes { buf in
                var offset = 0
                while offset < buf.count {
                    let n = systemWrite(fd, buf.baseAddress! + offset, buf.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return }  // nowhere to report a failing log stream
                    offset += n
                }
            }
        }
    }

    /// A sink that hands each line (with its newline) to `lines`; for tests.
    public init(_ lines: @escaping @Sendable ([UInt8]) -> Void) {
        output = lines
    }

    /// Writes one line. A status line on the terminal is erased first, in the same write,
    /// so a log line never lands at the end of a progress bar.
    public func write(_ line: [UInt8]) {
        lock.lock()
        defer { lock.unlock() }
        if statusShown {
            statusShown = false
            output(Self.eraseLine + line)
        } else {
            output(line)
        }
    }

    /// Draws `text` over the current terminal line, without a newline: the next status
    /// line replaces it, and the next log line erases it.
    public func drawStatus(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        statusShown = true
        output(Self.eraseLine + Array(text.utf8))
    }

    /// Erases a status line still on the terminal.
    public func clearStatus() {
        lock.lock()
        defer { lock.unlock() }
        guard statusShown else { return }
        statusShown = false
        output(Self.eraseLine)
    }
}

/// A swift-log handler writing one JSON object per line:
/// `{"ts":"2025-05-01T12:00:00.123Z","level":"info","label":"ciphertail.tail","message":"…","metadata":{"k":"v"},"source":"Capture"}`.
/// Nested metadata is flattened (`a.b` keys; arrays as their text), so every value is a string.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    private let sink: LogSink

    public init(label: String, sink: LogSink = .standardError, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.sink = sink
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        if let error = event.error { merged["error"] = "\(error)" }
        var flat: [(String, String)] = []
        Self.flatten(merged, prefix: "", into: &flat)
        flat.sort { $0.0 < $1.0 }

        var out: [UInt8] = []
        out.reserveCapacity(160 + event.message.description.utf8.count)
        out += Array("{\"ts\":\"".utf8)
        out += Array(Self.timestamp().utf8)
        out += Array("\",\"level\":".utf8)
        JSONText.append(event.level.rawValue, to: &out)
        out += Array(",\"label\":".utf8)
        JSONText.append(label, to: &out)
        out += Array(",\"message\":".utf8)
        JSONText.append(event.message.description, to: &out)
        out += Array(",\"metadata\":{".utf8)
        for (i, (k, v)) in flat.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONText.append(k, to: &out)
            out.append(UInt8(ascii: ":"))
            JSONText.append(v, to: &out)
        }
        out += Array("},\"source\":".utf8)
        JSONText.append(event.source, to: &out)
        out += Array("}\n".utf8)
        sink.write(out)
    }

    static func flatten(_ metadata: Logger.Metadata, prefix: String, into out: inout [(String, String)]) {
        for (k, v) in metadata {
            let key = prefix.isEmpty ? k : prefix + "." + k
            switch v {
            case .dictionary(let d): flatten(d, prefix: key, into: &out)
            default: out.append((key, text(v)))
            }
        }
    }

    /// A value as text without Swift's quoting of strings inside arrays: `[a, b]`.
    static func text(_ v: Logger.Metadata.Value) -> String {
        switch v {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let a): return "[" + a.map(text).joined(separator: ", ") + "]"
        case .dictionary: return v.description
        }
    }

    /// ISO 8601, UTC, milliseconds: `2025-05-01T12:00:00.123Z`.
    static func timestamp(_ now: timespec = { var t = timespec(); clock_gettime(CLOCK_REALTIME, &t); return t }()) -> String {
        var secs = now.tv_sec
        var tm = tm()
        gmtime_r(&secs, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }
}

/// JSON string escaping (RFC 8259): quotes, backslashes and control characters, so a
/// message with newlines stays on its one line.
enum JSONText {
    static func append(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20, 0x7F:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8)
                out += [hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Makes the log handler for a format: the CLI's loggers and `run`'s use this one entry.
public enum LogOutput {
    public static func makeHandler(label: String, format: LogFormat, level: Logger.Level,
                                   sink: LogSink = .standardError) -> any LogHandler {
        var handler: any LogHandler
        switch format.resolved() {
        case .json: handler = JSONLogHandler(label: label, sink: sink)
        default: handler = StreamLogHandler(label: label, stream: SinkStream(sink: sink))
        }
        handler.logLevel = level
        return handler
    }
}

/// swift-log's text format over a sink: StreamLogHandler writes each line in one call.
struct SinkStream: TextOutputStream, Sendable {
    let sink: LogSink
    mutating func write(_ string: String) { sink.write(Array(string.utf8)) }
}
