import Archive
import BSON
import Digest
import FieldCrypto
import Foundation
import KMIP
import KMIPClient
import Logging
import Mongo
import Pipeline
import TestSupport
import XCTest

/// CSFLE data keys under a KMIP master key, against the real PyKMIP servers of ops/kmip.sh:
/// created, used, refused when the key is not Active, rotated without touching archives,
/// and stopped when the key leaves Active while a pipeline runs.
final class KMIPMasterKeyTests: XCTestCase {
    var dir: String!
    var src: String!

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("kmipkey")
        src = TestEnv.uniqueName("kmip_src")
    }

    override func tearDown() { dropDatabases(src, src + "_plain", src + "_old") }

    /// A nothing-listens port first, then the real server: failover on every connection.
    var servers: String { "127.0.0.1:\(KMIPTestServers.freePort()),\(KMIPTestServers.server(0))" }

    func pipeline(keyIdentifier: String? = nil, rotate: Bool = false, serverName: String? = nil, name: String = "pipeline") -> String {
        let path = "\(dir!)/\(name).yaml"
        let yaml = """
        source: {uri: "\(TestEnv.uri)", namespaces: [\(src!).*]}
        archive: {repo: \(dir!)/repo}
        encryption:
          keyVault: \(dir!)/keyvault
          masterKey:
            provider: kmip
            kmip:
              serverName: "\(serverName ?? servers)"
              serverCAFile: \(KMIPTestServers.file("ca.pem"))
              clientCertificateFile: \(KMIPTestServers.file("client.pem"))
              connectTimeoutMS: 2000
        \(keyIdentifier.map { "      keyIdentifier: \"\($0)\"" } ?? "")
        \(rotate ? "      rotateMasterKey: true" : "")
          rules:
            - namespace: \(src!).users
              subject: userId
              fields:
                - {path: ssn, algorithm: deterministic}
                - {path: name, algorithm: random}
        """
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8)))
        return path
    }

    func client() throws -> KMIPClient {
        // The same server the pipelines reach (the two test servers share no objects).
        let o = KMIPOptions(serverName: KMIPTestServers.server(0), serverCAFile: KMIPTestServers.file("ca.pem"),
                            clientCertificateFile: KMIPTestServers.file("client.pem"))
        return KMIPClient(transport: try KMIPTransport(options: o))
    }

    func seed(_ n: Int) throws {
        try insert(try TestEnv.client(), Namespace(database: src, collection: "users"), (0..<n).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 7)"), "ssn": .string("CANARYSSN\(i)"), "name": .string("CANARYNAME\(i)")])
        })
    }

    func vaultMasterKeyIds() throws -> Set<String> {
        Set(try FileKeyVault.open(at: dir + "/keyvault").allKeys().compactMap { $0["masterKey"]?.documentValue?["keyId"]?.stringValue })
    }

    /// Every file of the repository with its SHA-256.
    func repoDigest() throws -> [String: String] {
        var out: [String: String] = [:]
        let root = dir + "/repo"
        let e = FileManager.default.enumerator(atPath: root)
        while let rel = e?.nextObject() as? String {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + rel, isDirectory: &isDir), !isDir.boolValue else { continue }
            out[rel] = SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: root + "/" + rel)))).hexString
        }
        return out
    }

    func testDataKeysUnderAKMIPMasterKeyWorkLikeLocalOnesThroughFailover() throws {
        try seed(40)
        let pipe = pipeline()
        let initRun = TestEnv.ciphertail(["keys", "init", "--pipeline", pipe, "--json"])
        XCTAssertEqual(initRun.status, 0, initRun.stderr)
        XCTAssertTrue(initRun.stdout.contains("KMIP master key"), initRun.stdout)
        let ids = try vaultMasterKeyIds()
        XCTAssertEqual(ids.count, 1, "the subject-hash key is wrapped by the new master key")
        let masterId = try XCTUnwrap(ids.first)
        XCTAssertEqual(try client().state(masterId), .active)
        XCTAssertEqual(try client().get(masterId).objectType, .secretData)

        let backup = TestEnv.ciphertail(["backup", "--pipeline", pipe, "--json"])
        XCTAssertEqual(backup.status, 0, backup.stderr)
        XCTAssertFalse(backup.stdout.contains("CANARY") || backup.stderr.contains("CANARY"))
        XCTAssertEqual(try vaultMasterKeyIds(), [masterId], "every data key, per-subject ones included, is under the KMIP key")
        XCTAssertEqual(try FileKeyVault.open(at: dir + "/keyvault").allKeys().count, 8)

        let restore = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--ns-from", "\(src!).*", "--ns-to", "\(src!)_plain.*"])
        XCTAssertEqual(restore.status, 0, restore.stderr)
        let docs = try TestEnv.documents(try TestEnv.client(), Namespace(database: src + "_plain", collection: "users"))
        XCTAssertEqual(docs.count, 40)
        XCTAssertEqual(docs.first { $0["_id"] == .int32(9) }?["ssn"], "CANARYSSN9")

        // Steady state: unwrapping is answered from memory after the first Get.
        let settings = try XCTUnwrap(try KeySettings.resolve(try PipelineFile.load(path: pipe).encryption, keyVault: nil, masterKeyFile: nil))
        let engine = try settings.openEngine()
        let provider = try XCTUnwrap(engine.provider(named: "kmip") as? KMIPKMSProvider)
        let before = provider.roundTrips
        let protector = DocumentProtector(rules: try PipelineFile.load(path: pipe).encryption!.protectionRules(), engine: engine)
        let batch = (0..<300).map { i in Document(["_id": .int32(Int32(i)), "userId": .string("new\(i)"), "ssn": "1", "name": "n"]) }
        let sealed = try protector.protect(batch: batch, database: src, collection: "users")
        XCTAssertEqual(try engine.decryptDocument(sealed[299]), batch[299])
        XCTAssertEqual(protector.keysCreated, 300)
        XCTAssertEqual(provider.roundTrips, before, "300 new data keys, 600 values, and not one more request to the key manager")
    }

    /// A driver configured with the same KMIP server and key vault collection reads what a
    /// --keep-encrypted restore loaded: the data keys under a KMIP master key interoperate.
    func testPymongoWithTheSameKMIPServerDecryptsWhatWeEncrypted() throws {
        try seed(20)
        let kvNS = "\(src!)_kv.__keyVault"
        let yaml = try String(contentsOfFile: pipeline(serverName: KMIPTestServers.server(0)), encoding: .utf8)
            .replacingOccurrences(of: "  keyVault: \(dir!)/keyvault", with: "  keyVault: \"\(TestEnv.uri)\"\n  keyVaultNamespace: \(kvNS)")
        let pipe = dir + "/collection-vault.yaml"
        try yaml.write(toFile: pipe, atomically: true, encoding: .utf8)
        defer { dropDatabases(src + "_kv", src + "_sealed") }
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipe]).status, 0)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipe]).status, 0)
        let r = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--keep-encrypted", "--ns-from", "\(src!).*", "--ns-to", "\(src!)_sealed.*"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let python = TestEnv.shell("\(TestEnv.root)/ops/pyenv.sh").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let read = TestEnv.run(python, ["\(TestEnv.root)/Tests/interop/csfle_interop.py", "read-sealed-kmip", TestEnv.uri, src + "_sealed", kvNS,
                                        KMIPTestServers.server(0), KMIPTestServers.file("ca.pem"), KMIPTestServers.file("client.pem")])
        XCTAssertEqual(read.status, 0, read.stderr)
        let rows = try JSONSerialization.jsonObject(with: Data(read.stdout.utf8)) as? [[String: Any]]
        XCTAssertEqual(rows?.count, 5)
        XCTAssertEqual(rows?.first?["ssn"] as? String, "CANARYSSN0")
        XCTAssertEqual(rows?[2]["name"] as? String, "CANARYNAME2")
    }

    func testMasterKeysThatAreNotActiveAreRefusedWithTheirStateNamed() throws {
        let kmip = try client()
        func secret() throws -> String {
            try kmip.registerSecretData(material: (0..<96).map { UInt8($0) })
        }
        let preActive = try secret()
        let deactivated = try secret()
        try kmip.activate(deactivated)
        try kmip.revoke(deactivated, reason: .cessationOfOperation)
        let compromised = try secret()
        try kmip.activate(compromised)
        try kmip.revoke(compromised, reason: .keyCompromise)
        let destroyed = try secret()
        try kmip.destroy(destroyed)
        let symmetric = try kmip.registerSymmetricKey(material: [UInt8](repeating: 7, count: 32))
        try kmip.activate(symmetric)

        for (id, expected) in [(preActive, "Pre-Active"), (deactivated, "Deactivated"), (compromised, "Compromised"),
                               // PyKMIP deletes a destroyed object outright; a server that keeps it
                               // answers Destroyed, refused by the same state check.
                               (destroyed, "does not exist"), ("99999999", "does not exist"), (symmetric, "Secret Data of 96 bytes")] {
            let run = TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline(keyIdentifier: id, name: "p-\(id)")])
            XCTAssertEqual(run.status, 8, "\(id): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(expected) && run.stderr.contains(id), "\(id): \(run.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/keyvault"), "nothing written for \(id)")
        }

        // Every server down: a clear error after the retries, nothing written.
        let down = TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline(serverName: "127.0.0.1:\(KMIPTestServers.freePort()),127.0.0.1:\(KMIPTestServers.freePort())", name: "down"),
                                       "--kmip-connect-retries", "1"])
        XCTAssertEqual(down.status, 8, down.stderr)
        XCTAssertTrue(down.stderr.contains("4 attempts"), down.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/keyvault"))
    }

    func testRotationRewrapsEveryKeyAndLeavesArchivesAsTheyWere() throws {
        try seed(30)
        let pipe = pipeline()
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipe]).status, 0)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipe]).status, 0)
        let old = try XCTUnwrap(try vaultMasterKeyIds().first)
        let archive = try repoDigest()
        XCTAssertFalse(archive.isEmpty)

        let rotate = TestEnv.ciphertail(["keys", "rotate-master", "--pipeline", pipe, "--revoke-old", "--json"])
        XCTAssertEqual(rotate.status, 0, rotate.stderr)
        let result = try JSONSerialization.jsonObject(with: Data(rotate.stdout.utf8)) as? [String: String]
        let new = try XCTUnwrap(result?["newKeyIdentifier"])
        XCTAssertEqual(result?["oldKeyIdentifier"], old)
        XCTAssertEqual(try vaultMasterKeyIds(), [new], "every data key now under the new master key")
        XCTAssertEqual(try client().state(old), .deactivated, "--revoke-old")
        XCTAssertEqual(try repoDigest(), archive, "no archive byte changed")

        // The backup taken before the rotation restores with the rotated vault.
        let restore = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--ns-from", "\(src!).*", "--ns-to", "\(src!)_old.*"])
        XCTAssertEqual(restore.status, 0, restore.stderr)
        let docs = try TestEnv.documents(try TestEnv.client(), Namespace(database: src + "_old", collection: "users"))
        XCTAssertEqual(docs.count, 30)
        XCTAssertEqual(docs.first { $0["_id"] == .int32(3) }?["name"], "CANARYNAME3")

        // rotateMasterKey: true rotates, says so, and does nothing else.
        let backups = try Repository(path: dir + "/repo").backupIDs().count
        let again = TestEnv.ciphertail(["backup", "--pipeline", pipeline(rotate: true, name: "rotate")])
        XCTAssertEqual(again.status, 4, "the backup itself did not run: a scheduled run must not look successful")
        XCTAssertTrue(again.stdout.contains("rewrapped 8 data keys from KMIP master key \(new)"), again.stdout)
        XCTAssertEqual(try Repository(path: dir + "/repo").backupIDs().count, backups, "no backup ran")
        XCTAssertNotEqual(try vaultMasterKeyIds(), [new])
        XCTAssertEqual(try client().state(new), .active, "without --revoke-old the previous key stays Active")
    }

    func testAKeyThatLeavesActiveStopsEncryptionWhileRunning() throws {
        let pipe = pipeline()
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipe]).status, 0)
        let file = try PipelineFile.load(path: pipe)
        var settings = try XCTUnwrap(try KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil))
        guard case .kmip(let options, _) = settings.masterKey else { return XCTFail() }
        settings.masterKey = .kmip(options, keyStatePollingSeconds: 1)
        let engine = try settings.openEngine()
        let poller = try XCTUnwrap(settings.startKeyStatePolling(engine, logger: Logger(label: "test")))
        defer { poller.cancel() }
        let protector = DocumentProtector(rules: file.encryption!.protectionRules(), engine: engine)
        let doc = Document(["_id": 1, "userId": "u1", "ssn": "CANARY"])
        guard case .binary(6, _)? = try protector.protect(doc, database: src, collection: "users")["ssn"] else { return XCTFail("not encrypted") }

        let master = try XCTUnwrap(try vaultMasterKeyIds().first)
        try client().revoke(master, reason: .cessationOfOperation)
        let provider = try XCTUnwrap(engine.provider(named: "kmip") as? KMIPKMSProvider)
        var stopped = false
        for _ in 0..<100 where !stopped {
            usleep(100_000)
            stopped = (try? provider.checkUsable()) == nil
        }
        XCTAssertTrue(stopped, "the poll noticed the revocation")
        // Fail closed: cached data keys included, nothing is encrypted any more.
        XCTAssertThrowsError(try protector.protect(doc, database: src, collection: "users")) { e in
            XCTAssertTrue("\(e)".contains("Deactivated"), "\(e)")
        }
    }
}
