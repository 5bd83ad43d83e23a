import Archive
import BSON
@testable import Erasure
import FieldCrypto
import Foundation
import KMIPClient
import Logging
import Mongo
import Pipeline
import TestSupport
import XCTest

/// Erasure under bad input and faults: an unknown subject, a damaged ledger, a crash between
/// destroying and recording, an erasure while a tail and a decryption run, a damaged segment.
final class ErasureFaultTests: XCTestCase {
    var dir: String!
    var src: String!
    var pipeline: String!
    var ledgerPath: String { dir + "/ledger" }
    var repo: String { dir + "/repo" }

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("erasefault")
        src = TestEnv.uniqueName("erasefault")
        pipeline = dir + "/p.yaml"
        try """
        source: {uri: "\(TestEnv.uri)", namespaces: ["\(src!).*"]}
        archive: {repo: \(repo)}
        tail: {segmentMaxAgeSeconds: 0.2, idleCheckpointSeconds: 0.5}
        encryption:
          keyVault: \(dir!)/vault
          masterKey: {provider: local, local: {keyFile: \(dir!)/master.key}}
          erasureLedger: \(ledgerPath)
          rules:
            - namespace: \(src!).orders
              subject: userId
              fields:
                - {path: card, algorithm: random}
        """.write(toFile: pipeline, atomically: true, encoding: .utf8)
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline]).status, 0)
    }

    override func tearDown() { dropDatabases(src) }

    func order(_ n: Int, user: String, card: String) -> Document {
        ["_id": .int32(Int32(n)), "userId": .string(user), "card": .string(card), "total": .int32(Int32(n))]
    }

    func seedAndBackup(users: [String]) throws {
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "orders"), users.enumerated().map { order($0, user: $1, card: "CARD\($0)") })
        let b = TestEnv.ciphertail(["backup", "--pipeline", pipeline])
        XCTAssertEqual(b.status, 0, b.stderr)
    }

    func erase(_ user: String, json: Bool = true) -> CLIResult {
        TestEnv.ciphertail(["erase", "--pipeline", pipeline, "--subject", user] + (json ? ["--json"] : []))
    }

    func engine() throws -> MongoCryptEngine {
        let file = try PipelineFile.load(path: pipeline)
        return try XCTUnwrap(KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil)).openEngine()
    }

    func testUnknownSubjectChangesNothingAndExits5() throws {
        try seedAndBackup(users: ["alice"])
        XCTAssertEqual(erase("alice").status, 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: ledgerPath))
        let r = erase("nobody-by-that-name", json: false)
        XCTAssertEqual(r.status, 5, r.stderr)
        XCTAssertTrue(r.stderr.contains("no data key of this subject"), r.stderr)
        XCTAssertTrue(r.stderr.contains("ledger unchanged"), r.stderr)
        XCTAssertFalse(r.stderr.contains("nobody-by-that-name"), "the subject id in an error message")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: ledgerPath)), before)
    }

    func testDamagedLedgerIsRefusedNamingTheEntry() throws {
        try seedAndBackup(users: ["alice", "bob", "carol"])
        XCTAssertEqual(erase("alice").status, 0)
        XCTAssertEqual(erase("bob").status, 0)
        // Someone "corrects" the time of entry 2.
        var lines = try String(contentsOfFile: ledgerPath, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[1] = lines[1].replacingOccurrences(of: "\"time\":\"2", with: "\"time\":\"1")
        try (lines.joined(separator: "\n") + "\n").write(toFile: ledgerPath, atomically: true, encoding: .utf8)
        for args in [["erase", "--subject", "carol"], ["verify-erasure", "--subject", "alice"],
                     ["restore", "--uri", TestEnv.uri, "--ns-from", "\(src!).*", "--ns-to", "\(src!)_x.*"]] {
            let r = TestEnv.ciphertail(args + ["--pipeline", pipeline])
            XCTAssertEqual(r.status, 6, "\(args[0]): " + r.stderr)
            XCTAssertTrue(r.stderr.contains("damaged at line 3") && r.stderr.contains("hash chain"), r.stderr)
        }
        dropDatabases(src + "_x")
        // carol's key was not touched.
        let e = try engine()
        let name = try DocumentProtector(rules: [], engine: e).subjectKeyName(.string("carol"))
        XCTAssertEqual(try e.keyVault.keyIds(forAltNames: [name]).count, 1)
    }

    /// A crash after the keys are destroyed and before the ledger records it: the next run
    /// finds the intent without its `erased` entry and completes it.
    func testCrashBetweenDestroyAndRecordIsCompletedByTheNextRun() throws {
        try seedAndBackup(users: ["alice", "bob"])
        struct Crash: Error {}
        let e = try engine()
        let eraser = Eraser(protector: DocumentProtector(rules: [], engine: e), ledger: try ErasureLedger.open(at: ledgerPath),
                            keyVaultBackups: nil, logger: Logger(label: "test"))
        eraser.afterDestroy = { throw Crash() }
        XCTAssertThrowsError(try eraser.erase(subject: .string("alice"), reason: nil)) { XCTAssertTrue($0 is Crash) }
        let ledger = try ErasureLedger.open(at: ledgerPath)
        XCTAssertEqual(ledger.entries.map(\.kind), [.intent])
        XCTAssertEqual(ledger.pendingIntents.count, 1)
        // Meanwhile: the key is gone, and verify-erasure says the erasure is unfinished.
        let name = try DocumentProtector(rules: [], engine: try engine()).subjectKeyName(.string("alice"))
        XCTAssertTrue(try engine().keyVault.keyIds(forAltNames: [name]).isEmpty)
        let pending = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice"])
        XCTAssertEqual(pending.status, 9)
        XCTAssertTrue(pending.stdout.contains("interrupted"), pending.stdout)

        // The next erase (of anyone) completes it first.
        let r = erase("bob")
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(out["completedPending"] as? [Int], [1])
        XCTAssertEqual(try ErasureLedger.open(at: ledgerPath).entries.map(\.kind), [.intent, .erased, .intent, .erased])
        XCTAssertEqual(TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice"]).status, 0)
    }

    /// A tail runs while a subject is erased: its later events are captured without the
    /// protected plaintext and without a new key, other subjects stay encrypted, and
    /// verify-erasure passes over the whole change log.
    func testEraseWhileTailRunsWithholdsTheSubjectAndNeverMintsANewKey() throws {
        let client = try TestEnv.client()
        let orders = Namespace(database: src, collection: "orders")
        try insert(client, orders, [order(0, user: "alice", card: "CANARYALICE0"), order(1, user: "bob", card: "CANARYBOB1")])
        let tail = try startTailProcess(["--pipeline", pipeline])
        defer { if tail.isRunning { kill(tail.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: repo).backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        try insert(client, orders, [order(2, user: "alice", card: "CANARYALICE2")])
        try waitCovered(repo, try operationTime(client))

        XCTAssertEqual(erase("alice").status, 0)
        Thread.sleep(forTimeInterval: 2.5)  // the tail's ledger watch runs every second
        try insert(client, orders, [order(3, user: "alice", card: "CANARYALICE3"), order(4, user: "bob", card: "CANARYBOB4")])
        try client.runCommand(["update": "orders", "updates": [["q": ["_id": 0], "u": ["$set": ["card": "CANARYALICE0B"]]]]], database: src)
        try waitCovered(repo, try operationTime(client))
        kill(tail.processIdentifier, SIGTERM)
        tail.waitUntilExit()
        XCTAssertEqual(tail.terminationStatus, 0, "the tail kept running through the erasure")

        let v = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice",
                                    "--canary", "CANARYALICE3", "--canary", "CANARYALICE0B", "--canary", "CANARYALICE2"])
        XCTAssertEqual(v.status, 0, v.stdout + v.stderr)
        XCTAssertTrue(v.stdout.contains("change log"), v.stdout)
        let name = try DocumentProtector(rules: [], engine: try engine()).subjectKeyName(.string("alice"))
        XCTAssertTrue(try engine().keyVault.keyIds(forAltNames: [name]).isEmpty, "a new key was made for an erased subject")

        // The events after the erasure: alice's card withheld, bob's encrypted.
        let log = ChangeLog(repository: try Repository(path: repo))
        var aliceAfter = 0, bobAfter = 0
        for e in log.load().entries.map(\.entry) where e.kind == .segment {
            let reader = try SegmentReader(path: log.segmentPath(e))
            while let b = try reader.nextBlock() {
                b.forEachRecord { raw in
                    let ev = Document(trusted: Array(raw))
                    guard let full = ev["fullDocument"]?.documentValue, let id = full["_id"]?.int64Value else { return }
                    // After the erasure: the insert of order 3 and the update of order 0.
                    let afterErasure = (id == 3 && ev["operationType"] == "insert") || (id == 0 && ev["operationType"] == "update")
                    if full["userId"] == "alice" && afterErasure {
                        aliceAfter += 1
                        XCTAssertNil(full["card"], "an erased subject's card was captured after the erasure")
                    }
                    if full["userId"] == "bob" && id == 4 {
                        bobAfter += 1
                        guard case .binary(6, _)? = full["card"] else { return XCTFail("bob's card is not ciphertext") }
                    }
                }
            }
        }
        XCTAssertEqual(aliceAfter, 2)
        XCTAssertEqual(bobAfter, 1)
    }

    /// A decryption that runs (as a restore does) while a subject is erased by another
    /// process: once its ledger watch has run, the key no longer opens anything, though the
    /// process had it cached.
    func testRunningDecryptorStopsUsingAKeyErasedElsewhere() throws {
        try seedAndBackup(users: ["alice"])
        let producer = DocumentProtector(rules: try PipelineFile.load(path: pipeline).encryption!.protectionRules(), engine: try engine())
        let sealed = try producer.protect(order(9, user: "alice", card: "CANARY9"), database: src, collection: "orders")
        let ledger = try ErasureLedger.open(at: ledgerPath)
        let erased = ErasedSet(ledger: ledger)
        let readerEngine = try engine()
        let decryptor = LenientDecryptor(engine: readerEngine, erasure: erased.treatment(rules: producer.rules))
        let watch = ErasureWatch(erased: erased, engine: readerEngine, logger: Logger(label: "test"))
        XCTAssertEqual(decryptor.decrypt(sealed, namespace: "\(src!).orders").0["card"], "CANARY9")  // the key is now cached

        XCTAssertEqual(erase("alice").status, 0)
        watch.check()
        let (after, failures) = decryptor.decrypt(sealed, namespace: "\(src!).orders")
        guard case .binary(6, _)? = after["card"] else { return XCTFail("an erased key still decrypts in a running process") }
        XCTAssertEqual(failures.map(\.erased), [true])
        XCTAssertEqual(failures.first?.path, "card")
    }

    func testDamagedSegmentIsReportedUnverifiable() throws {
        try seedAndBackup(users: ["alice", "bob"])
        XCTAssertEqual(erase("alice").status, 0)
        XCTAssertEqual(TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice"]).status, 0)
        let id = try XCTUnwrap(try Repository(path: repo).backupIDs().first)
        let m = try Repository(path: repo).manifest(id)
        let seg = try XCTUnwrap(m.namespaces.first { $0.namespace == "\(src!).orders" }?.segments.first)
        let path = try Repository(path: repo).segmentPath(backup: id, seg)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let v = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice", "--json"])
        XCTAssertEqual(v.status, 9, v.stderr)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(v.stdout.utf8)) as? [String: Any])
        let findings = try XCTUnwrap(report["findings"] as? [[String: Any]])
        XCTAssertEqual(findings.count, 1, "\(findings)")
        XCTAssertEqual(findings.first?["check"] as? String, "unverifiable")
        XCTAssertEqual(findings.first?["location"] as? String, "backups/\(id)/\(seg.path)")
        XCTAssertEqual(findings.first?["namespace"] as? String, "\(src!).orders")
    }
}

/// Subject keys wrapped by KMIP objects of their own (`perSubjectKeys: true`), against the
/// PyKMIP server: erase revokes and destroys the subject's object, verify-erasure checks it
/// on the server, and even a copy of the key vault made before the erasure, used without
/// the ledger, cannot open the subject's values.
final class ErasurePerSubjectKMIPTests: XCTestCase {
    func testErasingDestroysTheSubjectsOwnKMIPObject() throws {
        let dir = TestEnv.temporaryDirectory("erasekmip")
        let src = TestEnv.uniqueName("erasekmip")
        defer { dropDatabases(src, src + "_old") }
        let pipeline = dir + "/p.yaml"
        try """
        source: {uri: "\(TestEnv.uri)", namespaces: ["\(src).*"]}
        archive: {repo: \(dir)/repo}
        encryption:
          keyVault: \(dir)/vault
          erasureLedger: \(dir)/ledger
          masterKey:
            provider: kmip
            kmip:
              serverName: "\(KMIPTestServers.server(0))"
              serverCAFile: \(KMIPTestServers.file("ca.pem"))
              clientCertificateFile: \(KMIPTestServers.file("client.pem"))
              perSubjectKeys: true
          rules:
            - namespace: \(src).orders
              subject: userId
              fields:
                - {path: card, algorithm: random}
        """.write(toFile: pipeline, atomically: true, encoding: .utf8)
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline]).status, 0)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "orders"), [
            ["_id": 1, "userId": "alice", "card": "CANARYA1"], ["_id": 2, "userId": "bob", "card": "CANARYB2"],
        ])
        let b = TestEnv.ciphertail(["backup", "--pipeline", pipeline])
        XCTAssertEqual(b.status, 0, b.stderr)

        let file = try PipelineFile.load(path: pipeline)
        let engine = try XCTUnwrap(KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil)).openEngine()
        let names = DocumentProtector(rules: [], engine: engine)
        func kekOf(_ subject: String) throws -> String? {
            let doc = try engine.keyVault.keys(matching: KeyVaultQuery(altNames: [try names.subjectKeyName(.string(subject))])).first
            return doc?["masterKey"]?.documentValue?["keyId"]?.stringValue
        }
        let hashKek = try engine.keyVault.keys(matching: KeyVaultQuery(altNames: [DocumentProtector.subjectHashKeyName])).first?["masterKey"]?.documentValue?["keyId"]?.stringValue
        let aliceKek = try XCTUnwrap(try kekOf("alice"))
        let bobKek = try XCTUnwrap(try kekOf("bob"))
        XCTAssertNotEqual(aliceKek, hashKek)
        XCTAssertNotEqual(aliceKek, bobKek)
        let kmip = KMIPClient(transport: try KMIPTransport(options: KMIPOptions(serverName: KMIPTestServers.server(0), serverCAFile: KMIPTestServers.file("ca.pem"),
                                                                               clientCertificateFile: KMIPTestServers.file("client.pem"))))
        XCTAssertEqual(try kmip.locate(name: try names.subjectKeyName(.string("alice"))), [aliceKek])

        // Rotating the shared master key leaves the subjects' own keys where they are.
        let rot = TestEnv.ciphertail(["keys", "rotate-master", "--pipeline", pipeline])
        XCTAssertEqual(rot.status, 0, rot.stderr)
        XCTAssertEqual(try kekOf("bob"), bobKek)
        try engine.keyVault.reload()
        XCTAssertEqual(try kekOf("alice"), aliceKek)

        // A copy of the vault from before the erasure: the kind of copy erasure cannot reach.
        let oldVault = dir + "/vault-copy"
        try FileManager.default.copyItem(atPath: dir + "/vault", toPath: oldVault)
        let r = TestEnv.ciphertail(["erase", "--pipeline", pipeline, "--subject", "alice", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(out["kmipObjects"] as? [String], [aliceKek])
        XCTAssertThrowsError(try kmip.state(aliceKek), "the subject's KMIP object survives")
        XCTAssertEqual(try kmip.state(bobKek), .active)

        let v = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", "alice", "--canary", "CANARYA1"])
        XCTAssertEqual(v.status, 0, v.stdout + v.stderr)
        XCTAssertTrue(v.stdout.contains("1 object(s) of the subject destroyed"), v.stdout)

        // The old vault copy, and no ledger at all: bob opens, alice cannot.
        let restore = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--key-vault", oldVault, "--erasure-ledger", dir + "/no-ledger",
                                          "--ns-from", "\(src).*", "--ns-to", "\(src)_old.*", "--json"])
        XCTAssertEqual(restore.status, 0, restore.stderr)
        let docs = try TestEnv.documents(client, Namespace(database: src + "_old", collection: "orders"))
        XCTAssertEqual(docs.first { $0["userId"] == "bob" }?["card"], "CANARYB2")
        guard case .binary(6, _)? = docs.first(where: { $0["userId"] == "alice" })?["card"] else {
            return XCTFail("a vault copy from before the erasure still opens the subject's values")
        }
    }
}
