import Foundation
import KMIPClient
import Logging
import XCTest

/// The transport against real PyKMIP 0.11 servers (ops/kmip.sh) and against servers that
/// misbehave on purpose (Tests/interop/kmip_test_server.py). No timing is asserted.
final class KMIPTransportTests: XCTestCase {
    private var scripted: [ScriptedServer] = []

    override func tearDown() {
        scripted.forEach { $0.stop() }
        scripted = []
        super.tearDown()
    }

    private func start(_ mode: String, host: String = "127.0.0.1") throws -> ScriptedServer {
        let s = try ScriptedServer(mode, host: host)
        scripted.append(s)
        return s
    }

    /// The error of `body`, which must throw.
    private func failure<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> Error? {
        do {
            _ = try body()
            XCTFail("expected an error", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Round trips

    func testQueryAndDiscoverVersionsWithClientPEM() throws {
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(0)))
        let query = try t.roundTrip(TTLV.query, idempotent: true)
        XCTAssertKMIPSuccess(query)
        XCTAssertTrue(query.contains(bytes: Array("PyKMIP".utf8)), "Query's server information names PyKMIP")
        // The same connection carries the next request.
        let versions = try t.roundTrip(TTLV.discoverVersions, idempotent: true)
        XCTAssertKMIPSuccess(versions)
        XCTAssertTrue(TTLV.versions(in: versions).contains("1.2"), "\(TTLV.versions(in: versions))")
        XCTAssertEqual(t.connectedServer, KMIPServer(host: "127.0.0.1", port: KMIPTestEnv.ports[0]))
    }

    func testHostNameIsVerifiedBySNIAndName() throws {
        // The certificate's DNS name instead of its IP address.
        let t = try KMIPTransport(options: KMIPTestEnv.options("localhost:\(KMIPTestEnv.ports[1])"))
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.discoverVersions, idempotent: true))
    }

    func testEncryptedKeyWithPasswordFromFile() throws {
        let password = try KMIPOptions.password(fromFile: KMIPTestEnv.file("client-password.txt"))
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(0), certificate: "client-encrypted.pem",
                                                               password: password))
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: true))
    }

    func testConcurrentRequestsShareTheTransport() throws {
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(1)))
        let lock = NSLock()
        var errors: [Error] = []
        var ok = 0
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<5 {
                do {
                    let r = try t.roundTrip(TTLV.discoverVersions, idempotent: true)
                    lock.lock(); if r.contains(bytes: TTLV.success) { ok += 1 }; lock.unlock()
                } catch {
                    lock.lock(); errors.append(error); lock.unlock()
                }
            }
        }
        XCTAssertTrue(errors.isEmpty, "\(errors)")
        XCTAssertEqual(ok, 40)
    }

    // MARK: Local files and passwords, before any network

    func testWrongPasswordFailsBeforeConnecting() throws {
        // Nothing listens there: the error must come from the key, not the network.
        let nowhere = "127.0.0.1:\(KMIPTestEnv.freePort())"
        let wrong = "not-the-password"
        let e = failure { try KMIPTransport(options: KMIPTestEnv.options(nowhere, certificate: "client-encrypted.pem", password: wrong)) }
        XCTAssertEqual(e as? KMIPTransportError, .wrongKeyPassword(path: KMIPTestEnv.file("client-encrypted.pem")))
        XCTAssertFalse("\(e!)".contains(wrong))
        XCTAssertTrue("\(e!)".contains("client-encrypted.pem"), "\(e!)")

        let none = failure { try KMIPTransport(options: KMIPTestEnv.options(nowhere, certificate: "client-encrypted.pem")) }
        XCTAssertEqual(none as? KMIPTransportError, .keyPasswordRequired(path: KMIPTestEnv.file("client-encrypted.pem")))
    }

    func testMissingFilesAreNamed() throws {
        let missing = KMIPTestEnv.file("no-such-client.pem")
        var o = KMIPTestEnv.options(KMIPTestEnv.server(0))
        o.clientCertificateFile = missing
        let e = failure { try KMIPTransport(options: o) }
        XCTAssertEqual(e as? KMIPTransportError, .fileNotFound(role: "client certificate file", path: missing))
        XCTAssertTrue("\(e!)".contains(missing), "\(e!)")

        o = KMIPTestEnv.options(KMIPTestEnv.server(0), ca: "no-such-ca.pem")
        let ca = failure { try KMIPTransport(options: o) }
        XCTAssertEqual(ca as? KMIPTransportError, .fileNotFound(role: "server CA file", path: KMIPTestEnv.file("no-such-ca.pem")))
    }

    func testFilesWithoutKeyOrCertificateAreRefused() throws {
        let dir = NSTemporaryDirectory() + "ct-kmip-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A certificate without its key.
        let certOnly = dir + "/cert-only.pem"
        try FileManager.default.copyItem(atPath: KMIPTestEnv.file("client.crt"), toPath: certOnly)
        let e = failure { try KMIPTransport(options: KMIPOptions(serverName: "127.0.0.1", clientCertificateFile: certOnly)) }
        guard case let .fileUnusable(role, path, _)? = e as? KMIPTransportError else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(role, "client certificate file")
        XCTAssertEqual(path, certOnly)
        // A key with somebody else's certificate.
        let mismatched = dir + "/mismatched.pem"
        let key = try String(contentsOfFile: KMIPTestEnv.file("client.key"), encoding: .utf8)
        let other = try String(contentsOfFile: KMIPTestEnv.file("wrong-ca-client.crt"), encoding: .utf8)
        try (key + other).write(toFile: mismatched, atomically: true, encoding: .utf8)
        let m = failure { try KMIPTransport(options: KMIPOptions(serverName: "127.0.0.1", clientCertificateFile: mismatched)) }
        XCTAssertEqual(m as? KMIPTransportError, .keyDoesNotMatchCertificate(path: mismatched))
        // A CA file that holds no certificate.
        let junk = dir + "/junk-ca.pem"
        try "not a certificate\n".write(toFile: junk, atomically: true, encoding: .utf8)
        let j = failure {
            try KMIPTransport(options: KMIPOptions(serverName: "127.0.0.1", serverCAFile: junk,
                                                   clientCertificateFile: KMIPTestEnv.file("client.pem")))
        }
        guard case .fileUnusable("server CA file", junk, _)? = j as? KMIPTransportError else { return XCTFail("\(String(describing: j))") }
    }

    // MARK: Failover

    func testFirstServerDownSecondUsed() throws {
        let down = "127.0.0.1:\(KMIPTestEnv.freePort())"
        let log = LogCapture()
        let t = try KMIPTransport(options: KMIPTestEnv.options("\(down), \(KMIPTestEnv.server(0))"), logger: log.logger)
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: true))
        XCTAssertEqual(t.connectedServer, KMIPServer(host: "127.0.0.1", port: KMIPTestEnv.ports[0]))
        XCTAssertEqual(log.count(.notice), 1, "\(log.entries)")
        XCTAssertEqual(log.count(.warning), 1, "\(log.entries)")
        XCTAssertTrue(log.entries.contains { $0.level == .warning && $0.message.contains(down) && $0.message.contains("refused") },
                      "\(log.entries)")
        // The kept connection serves the next request without another failover.
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.discoverVersions, idempotent: true))
        XCTAssertEqual(log.count(.notice), 1)
    }

    func testAllServersDownCountsEveryAttempt() throws {
        let a = KMIPTestEnv.freePort()
        var b = KMIPTestEnv.freePort()
        while b == a { b = KMIPTestEnv.freePort() }
        let log = LogCapture()
        let t = try KMIPTransport(options: KMIPTestEnv.options("127.0.0.1:\(a),127.0.0.1:\(b)", retries: 2), logger: log.logger)
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        guard case let .allServersFailed(attempts, failures)? = e as? KMIPTransportError else { return XCTFail("\(String(describing: e))") }
        XCTAssertEqual(attempts, 6) // (2 retries + 1) rounds x 2 servers
        XCTAssertEqual(failures.map(\.server.port), [a, b, a, b, a, b])
        XCTAssertTrue(failures.allSatisfy { if case .connectionRefused = $0.error { return true } else { return false } })
        XCTAssertTrue("\(e!)".contains("6 attempts"), "\(e!)")
        XCTAssertTrue("\(e!)".contains("127.0.0.1:\(a)") && "\(e!)".contains("127.0.0.1:\(b)"), "\(e!)")
        XCTAssertEqual(log.count(.warning), 2, "one warning per failed server: \(log.entries)")
        XCTAssertNil(t.connectedServer)
    }

    func testFailoverDuringAnIdempotentRequest() throws {
        // The first server completes the handshake, then drops the request half answered.
        let bad = try start("truncated")
        let log = LogCapture()
        let t = try KMIPTransport(options: KMIPTestEnv.options("\(bad.address),\(KMIPTestEnv.server(1))"), logger: log.logger)
        XCTAssertEqual(try t.connect(), KMIPServer(host: "127.0.0.1", port: bad.port))
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: true))
        XCTAssertEqual(t.connectedServer, KMIPServer(host: "127.0.0.1", port: KMIPTestEnv.ports[1]))
        XCTAssertTrue(log.entries.contains { $0.level == .warning && $0.message.contains("truncated") }, "\(log.entries)")
    }

    func testNoResendOfANonIdempotentRequest() throws {
        let bad = try start("truncated")
        let t = try KMIPTransport(options: KMIPTestEnv.options("\(bad.address),\(KMIPTestEnv.server(1))"))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: false) }
        guard case .truncatedResponse? = e as? KMIPTransportError else { return XCTFail("\(String(describing: e))") }
        XCTAssertNil(t.connectedServer, "the failed connection is dropped")
        // The next request connects again, first server first: it fails there and moves on.
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: true))
        XCTAssertEqual(t.connectedServer?.port, KMIPTestEnv.ports[1])
    }

    // MARK: Timeouts (each phase; durations are not asserted)

    func testSilentServerTimesOutInTheHandshake() throws {
        let silent = try start("silent")
        let t = try KMIPTransport(options: KMIPTestEnv.options(silent.address, timeoutMS: 1000))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        let errors = attemptErrors(e!)
        XCTAssertEqual(errors, [.timeout(server: KMIPServer(host: "127.0.0.1", port: silent.port), phase: .tlsHandshake,
                                         milliseconds: 1000)])
        XCTAssertTrue("\(e!)".contains("TLS handshake"), "\(e!)")
    }

    func testFullBacklogTimesOutInTheConnect() throws {
        let s = try start("backlog")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address, timeoutMS: 1000))
        let e = failure { try t.connect() }
        XCTAssertEqual(attemptErrors(e!), [.timeout(server: KMIPServer(host: "127.0.0.1", port: s.port), phase: .connect,
                                                    milliseconds: 1000)])
    }

    func testServerThatNeverRepliesTimesOutOnRead() throws {
        let s = try start("silent-tls")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address, timeoutMS: 1000))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: false) }
        XCTAssertEqual(e as? KMIPTransportError, .timeout(server: KMIPServer(host: "127.0.0.1", port: s.port), phase: .read,
                                                          milliseconds: 1000))
    }

    // MARK: Certificates

    func testWrongCAIsAServerVerificationError() throws {
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(0), ca: "other-ca.pem"))
        let e = failure { try t.connect() }
        guard case let .serverCertificateRejected(server, reason)? = attemptErrors(e!).first else {
            return XCTFail("\(String(describing: e))")
        }
        XCTAssertEqual(server.port, KMIPTestEnv.ports[0])
        // PyKMIP's server sends its CA along (OpenSSL builds the chain from its trust store).
        XCTAssertTrue(reason.contains("self-signed certificate in certificate chain")
                      || reason.contains("unable to get local issuer certificate"), reason)
    }

    func testHostIPNotInTheCertificate() throws {
        // The same certificate (localhost, 127.0.0.1) served from 127.0.0.2.
        let s = try start("silent-tls", host: "127.0.0.2")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address))
        let e = failure { try t.connect() }
        guard case let .serverCertificateRejected(_, reason)? = attemptErrors(e!).first else {
            return XCTFail("\(String(describing: e))")
        }
        XCTAssertTrue(reason.contains("IP address mismatch"), reason)
    }

    func testHostNameNotInTheCertificate() throws {
        // Needs another name for 127.0.0.1 than "localhost"; /etc/hosts often has one.
        let hosts = (try? String(contentsOfFile: "/etc/hosts", encoding: .utf8)) ?? ""
        var alias: String?
        for line in hosts.split(separator: "\n") where alias == nil {
            let fields: [String] = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard fields.first == "127.0.0.1" else { continue }
            alias = fields.dropFirst().prefix { !$0.hasPrefix("#") }.first { $0 != "localhost" }
        }
        guard let alias else { throw XCTSkip("no alias of 127.0.0.1 other than localhost in /etc/hosts") }
        let t = try KMIPTransport(options: KMIPTestEnv.options("\(alias):\(KMIPTestEnv.ports[0])"))
        let e = failure { try t.connect() }
        guard case let .serverCertificateRejected(_, reason)? = attemptErrors(e!).first else {
            return XCTFail("\(String(describing: e))")
        }
        XCTAssertTrue(reason.contains("hostname mismatch"), reason)
    }

    func testExpiredClientCertificateIsRejectedByTheServer() throws {
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(0), certificate: "expired-client.pem"))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        guard case let .clientCertificateRejected(_, alert)? = attemptErrors(e!).first else {
            return XCTFail("\(String(describing: e))")
        }
        XCTAssertTrue(alert.contains("certificate expired"), alert)
    }

    func testClientCertificateFromAnotherCAIsRejectedByTheServer() throws {
        let t = try KMIPTransport(options: KMIPTestEnv.options(KMIPTestEnv.server(1), certificate: "wrong-ca-client.pem"))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        guard case let .clientCertificateRejected(_, alert)? = attemptErrors(e!).first else {
            return XCTFail("\(String(describing: e))")
        }
        XCTAssertTrue(alert.contains("unknown ca"), alert)
    }

    func testRejectionAfterATLS13HandshakeIsSeenOnTheFirstRead() throws {
        // With TLS 1.3 the client's handshake ends before the server has checked the
        // client certificate; the refusal arrives as an alert when the response is read.
        // The request may be written before the alert arrives, or after the server has
        // closed (the write fails, the alert is read after it); or, when the connection
        // waited, the alert is found before the request is sent. Each says the same.
        let s = try start("tls13-strict")
        for wait in [false, true] {
            let t = try KMIPTransport(options: KMIPTestEnv.options(s.address, certificate: "expired-client.pem"))
            XCTAssertEqual(try t.connect().port, s.port, "the handshake itself succeeds")
            if wait { usleep(300_000) }
            let e = failure { try t.roundTrip(TTLV.query, idempotent: false) }
            guard case let .clientCertificateRejected(_, alert)? = e as? KMIPTransportError else {
                return XCTFail("\(String(describing: e))")
            }
            XCTAssertTrue(alert.contains("certificate expired"), alert)
        }
    }

    func testConnectionClosedWhileIdleIsReplacedWithoutFailover() throws {
        // The server closes the connection after each response.
        let s = try start("one-shot")
        let log = LogCapture()
        let t = try KMIPTransport(options: KMIPTestEnv.options("\(s.address),\(KMIPTestEnv.server(0))"), logger: log.logger)
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: false))
        // Not a timing assertion: only lets the server's FIN arrive.
        usleep(500_000)
        XCTAssertKMIPSuccess(try t.roundTrip(TTLV.query, idempotent: false))
        XCTAssertEqual(t.connectedServer?.port, s.port)
        XCTAssertEqual(log.count(.warning), 0, "\(log.entries)")
        XCTAssertTrue(log.entries.contains { $0.message.contains("closed by the server while idle") }, "\(log.entries)")
    }

    // MARK: Hostile responses

    func testHeaderDeclaringTwoGiBIsRefusedBeforeReading() throws {
        let s = try start("huge")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        XCTAssertEqual(e as? KMIPTransportError,
                       .responseTooLarge(server: KMIPServer(host: "127.0.0.1", port: s.port), declared: 0x8000_0000, limit: 1 << 20))
        XCTAssertNil(t.connectedServer)
    }

    func testResponseCutShortIsTruncated() throws {
        let s = try start("truncated")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: false) }
        XCTAssertEqual(e as? KMIPTransportError,
                       .truncatedResponse(server: KMIPServer(host: "127.0.0.1", port: s.port), expected: 72, received: 18))
        XCTAssertTrue("\(e!)".contains("18 of 72 bytes"), "\(e!)")
    }

    func testResponseThatIsNotAStructure() throws {
        let s = try start("not-struct")
        let t = try KMIPTransport(options: KMIPTestEnv.options(s.address))
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        XCTAssertEqual(e as? KMIPTransportError, .notAStructure(server: KMIPServer(host: "127.0.0.1", port: s.port), type: 0x07))
    }

    func testSmallerResponseLimit() throws {
        // A real Query response is some hundreds of bytes.
        var o = KMIPTestEnv.options(KMIPTestEnv.server(0))
        o.maxResponseBytes = 64
        let t = try KMIPTransport(options: o)
        let e = failure { try t.roundTrip(TTLV.query, idempotent: true) }
        guard case .responseTooLarge(_, _, 64)? = e as? KMIPTransportError else { return XCTFail("\(String(describing: e))") }
    }
}

/// Options checks: no server needed.
final class KMIPOptionsTests: XCTestCase {
    private func options(_ serverName: String) -> KMIPOptions {
        KMIPOptions(serverName: serverName, clientCertificateFile: "/nonexistent/client.pem")
    }

    func testDefaults() throws {
        let o = options("kmip.example")
        XCTAssertEqual(o.port, 5696)
        XCTAssertEqual(o.connectRetries, 0)
        XCTAssertEqual(o.connectTimeoutMS, 5000)
        XCTAssertEqual(o.maxResponseBytes, 1 << 20)
        XCTAssertFalse(o.rotateMasterKey)
        XCTAssertNil(o.keyIdentifier)
        XCTAssertNoThrow(try o.validate())
    }

    func testConnectTimeoutBelowOneSecondIsRefused() {
        var o = options("kmip.example")
        o.connectTimeoutMS = 999
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .connectTimeoutTooSmall(999)) }
        o.connectTimeoutMS = 1000
        XCTAssertNoThrow(try o.validate())
        // The transport refuses it too, before looking at any file.
        o.connectTimeoutMS = 999
        XCTAssertThrowsError(try KMIPTransport(options: o)) { XCTAssertEqual($0 as? KMIPOptionsError, .connectTimeoutTooSmall(999)) }
    }

    func testEmptyServerNameIsRefused() {
        for name in ["", "   ", " , "] {
            XCTAssertThrowsError(try options(name).validate(), "'\(name)'") {
                XCTAssertEqual($0 as? KMIPOptionsError, .emptyServerName)
            }
        }
        XCTAssertThrowsError(try options("a,,b").validate()) {
            guard case .invalidServer? = $0 as? KMIPOptionsError else { return XCTFail("\($0)") }
        }
    }

    func testServerListTrimmedInOrderWithPorts() throws {
        var o = options(" kmip-a.example , 10.0.0.5:7000,[::1]:5697 ,::1, kmip-a.example")
        o.port = 5800
        XCTAssertEqual(try o.servers(), [
            KMIPServer(host: "kmip-a.example", port: 5800),
            KMIPServer(host: "10.0.0.5", port: 7000),
            KMIPServer(host: "::1", port: 5697),
            KMIPServer(host: "::1", port: 5800),
        ])
        XCTAssertEqual(try o.servers().map(\.description), ["kmip-a.example:5800", "10.0.0.5:7000", "[::1]:5697", "[::1]:5800"])
        for bad in ["a:0", "a:70000", "a:x", "[::1", "[::1]x", "a b", ":5696"] {
            XCTAssertThrowsError(try options(bad).validate(), bad) {
                guard case .invalidServer? = $0 as? KMIPOptionsError else { return XCTFail("\(bad): \($0)") }
            }
        }
    }

    func testOtherSettingsChecked() {
        var o = options("a")
        o.port = 0
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .invalidPort(0)) }
        o = options("a")
        o.connectRetries = -1
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .invalidConnectRetries(-1)) }
        o = options("a")
        o.clientCertificateFile = ""
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .missingClientCertificateFile) }
        o = options("a")
        o.keyIdentifier = " "
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .emptyKeyIdentifier) }
        o = options("a")
        o.clientCertificatePassword = ""
        XCTAssertThrowsError(try o.validate()) { XCTAssertEqual($0 as? KMIPOptionsError, .emptyPassword) }
    }

    func testPasswordNeverInDescriptions() {
        var o = options("a")
        o.clientCertificatePassword = "s3cret-pass"
        for text in ["\(o)", String(reflecting: o), { var s = ""; dump(o, to: &s); return s }()] {
            XCTAssertFalse(text.contains("s3cret-pass"), text)
            XCTAssertTrue(text.contains("redacted"), text)
        }
    }

    func testPasswordFromFile() throws {
        let dir = NSTemporaryDirectory() + "ct-kmip-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/password"
        _ = FileManager.default.createFile(atPath: path, contents: Data("pa ss\n".utf8), attributes: [.posixPermissions: 0o600])
        XCTAssertEqual(try KMIPOptions.password(fromFile: path), "pa ss")
        chmod(path, 0o644)
        XCTAssertThrowsError(try KMIPOptions.password(fromFile: path)) {
            XCTAssertTrue("\($0)".contains("group and others must have no access"), "\($0)")
            XCTAssertFalse("\($0)".contains("pa ss"))
        }
        _ = FileManager.default.createFile(atPath: dir + "/empty", contents: Data("\n".utf8), attributes: [.posixPermissions: 0o600])
        XCTAssertThrowsError(try KMIPOptions.password(fromFile: dir + "/empty")) {
            XCTAssertEqual($0 as? KMIPOptionsError, .passwordFile(path: dir + "/empty", problem: "is empty"))
        }
        XCTAssertThrowsError(try KMIPOptions.password(fromFile: dir + "/missing")) {
            XCTAssertTrue("\($0)".contains(dir + "/missing"), "\($0)")
        }
    }

    func testPasswordFromEnvironment() throws {
        XCTAssertEqual(try KMIPOptions.password(fromEnvironment: "KMIP_PW", environment: ["KMIP_PW": "x y"]), "x y")
        XCTAssertThrowsError(try KMIPOptions.password(fromEnvironment: "KMIP_PW", environment: [:])) {
            XCTAssertEqual($0 as? KMIPOptionsError, .passwordVariable(name: "KMIP_PW", problem: "is not set"))
        }
        XCTAssertThrowsError(try KMIPOptions.password(fromEnvironment: "KMIP_PW", environment: ["KMIP_PW": ""])) {
            XCTAssertEqual($0 as? KMIPOptionsError, .passwordVariable(name: "KMIP_PW", problem: "is empty"))
        }
    }
}
