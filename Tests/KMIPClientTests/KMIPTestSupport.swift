import Foundation
import KMIPClient
import Logging
import TestSupport
import XCTest

/// The PyKMIP servers and PKI of ops/kmip.sh: from CIPHERTAIL_TEST_KMIP_DIR and
/// CIPHERTAIL_TEST_KMIP_PORTS (set by ops/test.sh), else started here, as TestEnv does
/// for mongod.
enum KMIPTestEnv {
    static var pki: String { KMIPTestServers.pki }
    static var ports: [Int] { KMIPTestServers.ports }

    static let python: String = {
        let r = TestEnv.shell("\(TestEnv.root)/ops/pyenv.sh")
        precondition(r.status == 0, "no Python environment: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    static func file(_ name: String) -> String { "\(pki)/\(name)" }

    static var caFile: String { file("ca.pem") }

    /// Options for the given servers with the good client certificate and the test CA.
    static func options(_ serverName: String, certificate: String = "client.pem", password: String? = nil,
                        ca: String? = "ca.pem", retries: Int = 0, timeoutMS: Int = 5000) -> KMIPOptions {
        KMIPOptions(serverName: serverName, serverCAFile: ca.map(file), clientCertificateFile: file(certificate),
                    clientCertificatePassword: password, connectRetries: retries, connectTimeoutMS: timeoutMS)
    }

    static func server(_ i: Int) -> String { "127.0.0.1:\(ports[i])" }

    static func freePort() -> Int { KMIPTestServers.freePort() }
}

/// A misbehaving server from Tests/interop/kmip_test_server.py, stopped in `stop()` (and
/// gone by itself when the test process exits).
final class ScriptedServer {
    let pid: pid_t
    let port: Int
    let host: String

    init(_ mode: String, host: String = "127.0.0.1") throws {
        self.host = host
        let base = NSTemporaryDirectory() + "ct-kmip-\(UUID().uuidString.prefix(8))"
        let script = "\(TestEnv.root)/Tests/interop/kmip_test_server.py"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, base + ".log", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let args = [KMIPTestEnv.python, script, mode, host, KMIPTestEnv.pki, base + ".port"]
        let argv = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, KMIPTestEnv.python, &actions, nil, argv, environ)
        guard rc == 0 else { throw NSError(domain: "ScriptedServer", code: Int(rc)) }
        self.pid = pid
        var port = 0
        for _ in 0..<3000 {
            if let s = try? String(contentsOfFile: base + ".port", encoding: .utf8), let p = Int(s) { port = p; break }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { break }
            usleep(10_000)
        }
        unlink(base + ".port")
        guard port > 0 else {
            let log = (try? String(contentsOfFile: base + ".log", encoding: .utf8)) ?? ""
            kill(pid, SIGKILL)
            throw NSError(domain: "ScriptedServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(mode) server did not start: \(log)"])
        }
        unlink(base + ".log")
        self.port = port
    }

    var address: String { "\(host):\(port)" }

    func stop() {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }
}

/// Log lines kept for assertions.
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [(level: Logger.Level, message: String)] = []

    var logger: Logger {
        var l = Logger(label: "ciphertail.kmip.tests") { _ in Handler(capture: self) }
        l.logLevel = .debug
        return l
    }

    var entries: [(level: Logger.Level, message: String)] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    func count(_ level: Logger.Level) -> Int { entries.filter { $0.level == level }.count }

    fileprivate func append(_ level: Logger.Level, _ message: String) {
        lock.lock()
        lines.append((level, message))
        lock.unlock()
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let meta = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            capture.append(event.level, ([event.message.description] + meta).joined(separator: " "))
        }
    }
}

/// Hand-built KMIP 1.2 requests (the codec is another module): just enough TTLV for
/// Query and DiscoverVersions, which every KMIP server answers without any key.
enum TTLV {
    static func item(_ tag: UInt32, _ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        let padding = (8 - value.count % 8) % 8
        return [UInt8(tag >> 16 & 0xFF), UInt8(tag >> 8 & 0xFF), UInt8(tag & 0xFF), type]
            + bigEndian(UInt32(value.count)) + value + [UInt8](repeating: 0, count: padding)
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    static func structure(_ tag: UInt32, _ children: [[UInt8]]) -> [UInt8] { item(tag, 0x01, children.flatMap { $0 }) }
    static func integer(_ tag: UInt32, _ v: Int32) -> [UInt8] { item(tag, 0x02, bigEndian(UInt32(bitPattern: v))) }
    static func enumeration(_ tag: UInt32, _ v: UInt32) -> [UInt8] { item(tag, 0x05, bigEndian(v)) }

    /// RequestMessage { RequestHeader { ProtocolVersion 1.minor, BatchCount 1 },
    /// BatchItem { Operation, RequestPayload } }.
    static func request(operation: UInt32, payload: [[UInt8]], minor: Int32 = 2) -> [UInt8] {
        structure(0x420078, [
            structure(0x420077, [
                structure(0x420069, [integer(0x42006A, 1), integer(0x42006B, minor)]),
                integer(0x42000D, 1),
            ]),
            structure(0x42000F, [
                enumeration(0x42005C, operation),
                structure(0x420079, payload),
            ]),
        ])
    }

    /// Query (0x18) for the operations (1) and the server information (3).
    static let query = request(operation: 0x18, payload: [enumeration(0x420074, 1), enumeration(0x420074, 3)])
    /// DiscoverVersions (0x1E) with no versions: the server lists all it supports.
    static let discoverVersions = request(operation: 0x1E, payload: [])

    /// ResultStatus (0x42007F, Enumeration) Success (0).
    static let success = enumeration(0x42007F, 0)

    /// The protocol versions a DiscoverVersions response lists, in its order.
    static func versions(in response: [UInt8]) -> [String] {
        var out: [String] = []
        let major: [UInt8] = [0x42, 0x00, 0x6A, 0x02, 0, 0, 0, 4]
        let minor: [UInt8] = [0x42, 0x00, 0x6B, 0x02, 0, 0, 0, 4]
        var i = 0
        while i + 32 <= response.count {
            if Array(response[i..<i + 8]) == major, Array(response[i + 16..<i + 24]) == minor {
                let ma = Int(response[i + 11]), mi = Int(response[i + 27])
                out.append("\(ma).\(mi)")
                i += 32
            } else {
                i += 8
            }
        }
        return out
    }
}

extension Array where Element == UInt8 {
    func contains(bytes: [UInt8]) -> Bool {
        guard bytes.count <= count else { return false }
        return (0...(count - bytes.count)).contains { Array(self[$0..<$0 + bytes.count]) == bytes }
    }
}

/// A whole, successful KMIP response: ResponseMessage tag, Structure, length matching.
func XCTAssertKMIPSuccess(_ response: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertGreaterThan(response.count, 8, file: file, line: line)
    guard response.count > 8 else { return }
    XCTAssertEqual(Array(response[0..<4]), [0x42, 0x00, 0x7B, 0x01], "not a ResponseMessage structure", file: file, line: line)
    XCTAssertEqual(Int(TTLVLength(response)), response.count - 8, file: file, line: line)
    XCTAssertTrue(response.contains(bytes: TTLV.success), "no ResultStatus Success in the response", file: file, line: line)
}

private func TTLVLength(_ r: [UInt8]) -> UInt32 {
    UInt32(r[4]) << 24 | UInt32(r[5]) << 16 | UInt32(r[6]) << 8 | UInt32(r[7])
}

/// The errors of each attempt of a failed connect, or the error itself.
func attemptErrors(_ error: Error) -> [KMIPTransportError] {
    guard let e = error as? KMIPTransportError else { return [] }
    if case let .allServersFailed(_, failures) = e { return failures.map(\.error) }
    return [e]
}
