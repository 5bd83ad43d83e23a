import Foundation
import Logging
@testable import Observability
import XCTest

/// Collects the lines a sink receives.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var chunks: [[UInt8]] = []
    var lines: [String] { lock.withLock { chunks.map { String(decoding: $0, as: UTF8.self) } } }
    lazy var sink = LogSink { [unowned self] bytes in self.lock.withLock { self.chunks.append(bytes) } }
}

final class LoggingTests: XCTestCase {
    func parse(_ line: String, file: StaticString = #filePath, line l: UInt = #line) throws -> [String: Any] {
        XCTAssertTrue(line.hasSuffix("\n"), "a line ends with its newline", file: file, line: l)
        XCTAssertEqual(line.filter { $0 == "\n" }.count, 1, "one line per event: \(line)", file: file, line: l)
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try XCTUnwrap(object as? [String: Any], file: file, line: l)
    }

    func testJSONLinesCarryEveryField() throws {
        let out = LineCollector()
        var logger = Logger(label: "ciphertail.test") { JSONLogHandler(label: $0, sink: out.sink) }
        logger.logLevel = .info
        logger[metadataKey: "pipeline"] = "orders"
        logger.debug("below the level")
        logger.info("segment sealed", metadata: ["records": "42", "kind": "change"])
        logger.warning("a message with \"quotes\",\na newline, a tab\t, a backslash \\ and é ✓ \u{1}",
                       metadata: ["nested": ["a": "1", "b": ["c": "2"]], "list": ["x", "y"], "pipeline": "override"])

        let lines = out.lines
        XCTAssertEqual(lines.count, 2, "debug is below the level")

        let first = try parse(lines[0])
        XCTAssertEqual(Set(first.keys), ["ts", "level", "label", "message", "metadata", "source"])
        XCTAssertEqual(first["level"] as? String, "info")
        XCTAssertEqual(first["label"] as? String, "ciphertail.test")
        XCTAssertEqual(first["message"] as? String, "segment sealed")
        XCTAssertEqual(first["source"] as? String, "ObservabilityTests")
        XCTAssertEqual(first["metadata"] as? [String: String], ["records": "42", "kind": "change", "pipeline": "orders"])
        let ts = try XCTUnwrap(first["ts"] as? String)
        XCTAssertNotNil(ts.range(of: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#, options: .regularExpression), ts)
        let parsed = try XCTUnwrap(ISO8601DateFormatter.withFractionalSeconds.date(from: ts))
        XCTAssertLessThan(abs(parsed.timeIntervalSinceNow), 3600, "the time is now, in UTC")

        let second = try parse(lines[1])
        XCTAssertEqual(second["level"] as? String, "warning")
        XCTAssertEqual(second["message"] as? String, "a message with \"quotes\",\na newline, a tab\t, a backslash \\ and é ✓ \u{1}")
        XCTAssertEqual(second["metadata"] as? [String: String],
                       ["nested.a": "1", "nested.b.c": "2", "list": "[x, y]", "pipeline": "override"])
    }

    func testTimestampFormat() {
        var t = timespec()
        t.tv_sec = 1_746_057_600 + 3_723  // 2025-05-01 01:02:03 UTC
        t.tv_nsec = 45_999_999
        XCTAssertEqual(JSONLogHandler.timestamp(t), "2025-05-01T01:02:03.045Z")
    }

    /// Lines from many threads through one file descriptor stay whole: one write(2) each, under the sink's lock.
    func testConcurrentLinesStayWhole() throws {
        let path = NSTemporaryDirectory() + "obs-log-\(UUID().uuidString)"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd); unlink(path) }
        let sink = LogSink(fileDescriptor: fd)
        let padding = String(repeating: "x", count: 3000)
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            let logger = Logger(label: "t\(thread)") { JSONLogHandler(label: $0, sink: sink) }
            for i in 0..<100 { logger.info("line \(i) \(padding)", metadata: ["thread": "\(thread)"]) }
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertEqual(lines.count, 800)
        var seen: [String: Set<String>] = [:]
        for l in lines {
            let o = try parse(l + "\n")
            let thread = try XCTUnwrap((o["metadata"] as? [String: String])?["thread"])
            let message = try XCTUnwrap(o["message"] as? String)
            XCTAssertTrue(message.hasSuffix(padding))
            seen[thread, default: []].insert(String(message.split(separator: " ")[1]))
        }
        XCTAssertEqual(seen.count, 8)
        XCTAssertTrue(seen.values.allSatisfy { $0.count == 100 }, "every line of every thread, once")
    }

    func testFormatsResolve() {
        XCTAssertEqual(LogFormat.auto.resolved(stderrIsTTY: true), .text)
        XCTAssertEqual(LogFormat.auto.resolved(stderrIsTTY: false), .json)
        XCTAssertEqual(LogFormat.text.resolved(stderrIsTTY: false), .text)
        XCTAssertEqual(LogFormat.json.resolved(stderrIsTTY: true), .json)
        XCTAssertEqual(LogFormat(rawValue: "json"), .json)
        XCTAssertNil(LogFormat(rawValue: "xml"))
    }

    func testMakeHandlerGivesEachFormat() throws {
        let out = LineCollector()
        var json = Logger(label: "ciphertail.a") { LogOutput.makeHandler(label: $0, format: .json, level: .notice, sink: out.sink) }
        json.info("dropped: below notice")
        json.notice("kept", metadata: ["k": "v"])
        json.logLevel = .notice
        var text = Logger(label: "ciphertail.b") { LogOutput.makeHandler(label: $0, format: .text, level: .warning, sink: out.sink) }
        text.notice("dropped: below warning")
        text.warning("plain \"words\"", metadata: ["k": "v"])
        text.logLevel = .warning

        let lines = out.lines
        XCTAssertEqual(lines.count, 2)
        let o = try parse(lines[0])
        XCTAssertEqual(o["message"] as? String, "kept")
        XCTAssertEqual(o["level"] as? String, "notice")
        // swift-log's text layout: time, level, label, metadata, [source], message.
        XCTAssertTrue(lines[1].hasSuffix(" warning ciphertail.b: k=v [ObservabilityTests] plain \"words\"\n"), lines[1])
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}

final class StatusLineTests: XCTestCase {
    /// A log line written while a progress bar is on the terminal erases the bar first, in the same write.
    func testLogLineErasesTheStatusLine() {
        let out = LineCollector()
        let erase = "\r\u{1B}[2K"
        out.sink.clearStatus()
        out.sink.drawStatus("backup  [##......]  25%")
        out.sink.drawStatus("backup  [####....]  50%")
        out.sink.write(Array("a log line\n".utf8))
        out.sink.write(Array("another\n".utf8))
        out.sink.drawStatus("backup  [########] 100%")
        out.sink.clearStatus()
        out.sink.clearStatus()
        XCTAssertEqual(out.lines, [erase + "backup  [##......]  25%", erase + "backup  [####....]  50%", erase + "a log line\n",
                                   "another\n", erase + "backup  [########] 100%", erase])
    }
}
