import Archive
import BSON
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import TestSupport
import XCTest

/// The encryption stage end to end, through the real CLI, real mongod and real libmongocrypt:
/// canary values must appear nowhere in the archive (raw or decompressed) or the logs, and
/// restores give the plaintext back, or the ciphertext with --keep-encrypted.
final class EncryptionTests: XCTestCase {
    var dir: String!
    var src: String!
    var keySettings: KeySettings!
    var vaultPath: String { dir + "/keyvault" }

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("enc")
        src = TestEnv.uniqueName("enc_src")
        keySettings = KeySettings(keyVault: .file(dir + "/keyvault"), masterKeyFile: dir + "/master.key")
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", vaultPath, "--master-key-file", dir + "/master.key"]).status, 0)
    }

    override func tearDown() { dropDatabases(src, src + "_plain", src + "_sealed", src + "_other") }

    func pipeline(repo: String, vault: String? = nil, masterKey: String? = nil) -> String {
        let path = dir + "/pipeline-\(UUID().uuidString.prefix(6)).yaml"
        let yaml = """
        source:
          uri: \(TestEnv.uri)
          namespaces: [\(src!).*]
        archive:
          repo: \(repo)
        encryption:
          keyVault: \(vault ?? vaultPath)
          masterKey:
            provider: local
            local: {keyFile: \(masterKey ?? dir + "/master.key")}
          rules:
            - namespace: \(src!).users
              subject: userId
              fields:
                - {path: ssn, algorithm: deterministic}
                - {path: email, algorithm: deterministic}
                - {path: name, algorithm: random}
                - {path: address, algorithm: random}
                - {path: orders.card, algorithm: random}
        """
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8)))
        return path
    }

    static func canary(_ kind: String, _ i: Int) -> String { "CANARY\(kind)\(String(format: "%05d", i))Z" }

    func seed(_ n: Int) throws {
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<n).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 50)"), "name": .string(Self.canary("NAME", i)),
                      "email": .string(Self.canary("MAIL", i)), "ssn": .string(Self.canary("SSN", i)),
                      "address": ["street": .string(Self.canary("STREET", i)), "zip": "12345"],
                      "orders": [["n": 1, "card": .string(Self.canary("CARD", i))]], "visits": .int32(Int32(i))])
        })
        try insert(client, Namespace(database: src, collection: "plain"), [Document(["_id": 1, "note": "not protected"])])
    }

    /// Every byte of the repo, and every decompressed block, searched for canary text.
    func assertNoCanaries(inRepo repo: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let e = FileManager.default.enumerator(atPath: repo)
        var blocks = 0
        while let rel = e?.nextObject() as? String {
            let path = repo + "/" + rel
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { continue }
            let raw = try Data(contentsOf: URL(fileURLWithPath: path))
            XCTAssertNil(raw.range(of: Data("CANARY".utf8)), "canary in raw \(rel)", file: file, line: line)
            guard rel.hasSuffix(".seg") else { continue }
            let reader = try SegmentReader(path: path)
            while let block = try reader.nextBlock() {
                blocks += 1
                XCTAssertNil(Data(block.data).range(of: Data("CANARY".utf8)), "canary in a decompressed block of \(rel)", file: file, line: line)
            }
        }
        XCTAssertGreaterThan(blocks, 0, file: file, line: line)
    }

    func testArchivesAndLogsHoldNoPlaintextAndRestoresDecryptOrKeepCiphertext() throws {
        try seed(400)
        let client = try TestEnv.client()
        let repo = dir + "/repo"
        let pipe = pipeline(repo: repo)

        // Updates to protected fields while the backup runs: change events must be sealed too.
        let stop = StopFlag()
        let writer = Thread {
            guard let c = try? TestEnv.client() else { return }
            var i = 1000
            while !stop.isSet {
                i += 1
                _ = try? c.runCommand(["update": "users", "updates": [[
                    "q": ["_id": .int32(Int32(i % 400))],
                    "u": ["$set": ["ssn": .string(Self.canary("SSN", i)), "address.street": .string(Self.canary("STREET", i)),
                                   "orders.0.card": .string(Self.canary("CARD", i))]]]]], database: self.src)
                _ = try? c.runCommand(["insert": "users", "documents": [["_id": .int32(Int32(i)), "userId": "u-new",
                                                                        "email": .string(Self.canary("MAIL", i))]]], database: self.src)
            }
        }
        writer.start()
        let backup = TestEnv.ciphertail(["backup", "--pipeline", pipe, "--json", "--log-level", "trace"])
        stop.set()
        while !writer.isFinished { usleep(10_000) }
        XCTAssertEqual(backup.status, 0, backup.stderr)
        XCTAssertFalse(backup.stdout.contains("CANARY") || backup.stderr.contains("CANARY"), "plaintext in the output or logs")
        try assertNoCanaries(inRepo: repo)
        let manifest = try Repository(path: repo).latest()
        XCTAssertGreaterThan(manifest.events.count, 0, "the test needs change events in the backup")
        // The key vault is not in the repository.
        XCTAssertFalse(FileManager.default.fileExists(atPath: repo + "/keyvault"))

        // Restore decrypts: the documents read back in clear.
        let plain = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--ns-from", "\(src!).*", "--ns-to", "\(src!)_plain.*", "--json"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertFalse(plain.stdout.contains("CANARY") || plain.stderr.contains("CANARY"))
        let restored = try TestEnv.documents(client, Namespace(database: src + "_plain", collection: "users"))
        XCTAssertGreaterThanOrEqual(restored.count, 400)
        let first = try XCTUnwrap(restored.first { $0["_id"] == .int32(0) })
        XCTAssertEqual(first["name"], .string(Self.canary("NAME", 0)))
        XCTAssertEqual(first["userId"], "u0")
        for d in restored { XCTAssertFalse(d.bytes.containsSubtype6, "no ciphertext left after a decrypting restore") }

        // --keep-encrypted: the target holds only ciphertext for the protected fields.
        let sealed = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--keep-encrypted", "--ns-from", "\(src!).*", "--ns-to", "\(src!)_sealed.*"])
        XCTAssertEqual(sealed.status, 0, sealed.stderr)
        let sealedDocs = try TestEnv.documents(client, Namespace(database: src + "_sealed", collection: "users"))
        XCTAssertEqual(sealedDocs.count, restored.count)
        for d in sealedDocs { XCTAssertFalse(String(decoding: d.bytes, as: UTF8.self).contains("CANARY")) }
        let engine = try keySettings.openEngine()
        for (a, b) in zip(sealedDocs, restored) { XCTAssertEqual(try engine.decryptDocument(a).bytes, b.bytes) }
        // Unprotected collections come back in clear either way.
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: src + "_sealed", collection: "plain")),
                       [Document(["_id": 1, "note": "not protected"])])
    }

    func testNoPlaintextBesideEncryptedBackupsAndNoKeyVaultInArchives() throws {
        try seed(10)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "__keyVault"), [Document(["_id": 1, "keyMaterial": "must not be archived"])])
        let repo = dir + "/repo3"
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipeline(repo: repo)]).status, 0)
        let m = try Repository(path: repo).latest()
        XCTAssertFalse(m.namespaces.contains { $0.namespace.hasSuffix(".__keyVault") }, "key vault collections are never archived")
        XCTAssertEqual(m.protectedFields?["\(src!).users"], ["ssn", "email", "name", "address", "orders.card"])
        // The same repository, without the encryption settings: refused, nothing written.
        let plain = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src!).*"])
        XCTAssertEqual(plain.status, 64, plain.stderr)
        XCTAssertTrue(plain.stderr.contains("would store it in clear"), plain.stderr)
        XCTAssertEqual(try Repository(path: repo).backupIDs().count, 1)
        // Other namespaces may still be backed up in clear there.
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src!).plain"]).status, 0)
    }

    func testMissingKeysAreCountedOrFatalAndAWrongMasterKeyWritesNothing() throws {
        try seed(60)
        let client = try TestEnv.client()
        let repo = dir + "/repo2"
        let pipe = pipeline(repo: repo)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipe]).status, 0)

        // Another key vault under the same master key: it knows none of the data keys.
        let otherVault = dir + "/other-vault"
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", otherVault, "--master-key-file", dir + "/master.key"]).status, 0)
        let lenient = TestEnv.ciphertail(["restore", "--pipeline", pipeline(repo: repo, vault: otherVault),
                                          "--ns-from", "\(src!).*", "--ns-to", "\(src!)_other.*", "--json"])
        XCTAssertEqual(lenient.status, 0, lenient.stderr)
        XCTAssertTrue(lenient.stdout.contains("\"\(src!)_other.users\" : 300"), lenient.stdout)  // 60 documents x 5 fields
        XCTAssertTrue(lenient.stdout.contains("data key not in the key vault"), lenient.stdout)
        XCTAssertFalse(lenient.stdout.contains("CANARY"))

        let strict = TestEnv.ciphertail(["restore", "--pipeline", pipeline(repo: repo, vault: otherVault), "--strict", "--drop",
                                         "--ns-from", "\(src!).*", "--ns-to", "\(src!)_other.*"])
        XCTAssertNotEqual(strict.status, 0)
        XCTAssertTrue(strict.stderr.contains("cannot decrypt field"), strict.stderr)

        // A wrong master key: a clear error, and the target is not touched.
        let wrongKey = dir + "/wrong.key"
        _ = try LocalMasterKey.create(at: wrongKey)
        dropDatabases(src + "_other")
        let wrong = TestEnv.ciphertail(["restore", "--pipeline", pipeline(repo: repo, masterKey: wrongKey),
                                        "--ns-from", "\(src!).*", "--ns-to", "\(src!)_other.*", "--strict"])
        XCTAssertEqual(wrong.status, 8, wrong.stderr)
        XCTAssertTrue(wrong.stderr.contains("master key"), wrong.stderr)
        XCTAssertEqual(try client.database(src + "_other").listCollections().count, 0, "nothing written with a wrong master key")
    }
}

/// A pipeline file backing up `database` into `dir/repo`, with one per-subject (userId) rule;
/// `extra` adds top-level sections.
func writeUsersPipeline(_ path: String, database: String, dir: String, vault: String, master: String,
                        ruleNamespace: String, fields: KeyValuePairs<String, String>, extra: String = "") throws {
    let fieldLines = fields.map { "            - {path: \($0.key), algorithm: \($0.value)}" }.joined(separator: "\n")
    let yaml = """
    source: {uri: "\(TestEnv.uri)", namespaces: [\(database).*]}
    archive: {repo: \(dir)/repo}
    encryption:
      keyVault: \(vault)
      masterKey: {provider: local, local: {keyFile: \(master)}}
      rules:
        - namespace: "\(ruleNamespace)"
          subject: userId
          fields:
    \(fieldLines)
    """
    try Data((yaml + "\n" + extra).utf8).write(to: URL(fileURLWithPath: path))
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return flag }
    func set() { lock.lock(); flag = true; lock.unlock() }
}

extension Array where Element == UInt8 {
    /// True when the bytes hold a BSON binary subtype 6 value (ciphertext) at any depth.
    var containsSubtype6: Bool {
        func scan(_ d: Document) -> Bool {
            d.elements.contains { e in
                switch e.value {
                case .binary(6, _): return true
                case .document(let sub): return scan(sub)
                case .array(let items): return items.contains { if case .document(let s) = $0 { return scan(s) }; if case .binary(6, _) = $0 { return true }; return false }
                default: return false
                }
            }
        }
        return scan(Document(trusted: self))
    }
}

/// ciphertail and an independent MongoDB client (pymongo + pymongocrypt) read each other's
/// ciphertext, given the same key vault and local master key.
final class InteropTests: XCTestCase {
    func testPymongoReadsWhatWeSealedAndWeReadWhatPymongoSealed() throws {
        let dir = TestEnv.temporaryDirectory("interop")
        let src = TestEnv.uniqueName("interop")
        defer { dropDatabases(src, src + "_sealed", src + "_kv") }
        let vault = dir + "/keyvault", master = dir + "/master.key"
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", vault, "--master-key-file", master]).status, 0)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<20).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 4)"), "name": .string("Name \(i)"), "email": .string("user\(i)@example.com"),
                      "ssn": .string("SSN-\(i)"), "address": ["street": .string("\(i) Main St")], "orders": [["card": .string("CARD-\(i)")]]])
        })
        let pipe = dir + "/p.yaml"
        try writeUsersPipeline(pipe, database: src, dir: dir, vault: vault, master: master, ruleNamespace: "\(src).users",
                               fields: ["ssn": "deterministic", "email": "deterministic", "name": "random", "address": "random", "orders.card": "random"])
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipe]).status, 0)
        let r = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--keep-encrypted", "--ns-from", "\(src).*", "--ns-to", "\(src)_sealed.*"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // The target really holds ciphertext.
        let stored = try TestEnv.documents(client, Namespace(database: src + "_sealed", collection: "users"))
        guard case .binary(6, _)? = stored.first?["ssn"] else { return XCTFail("ssn is not encrypted in the target") }

        let kvNS = "\(src)_kv.__keyVault"
        let export = TestEnv.ciphertail(["keys", "export", "--pipeline", pipe, "--uri", TestEnv.uri, "--key-vault-namespace", kvNS])
        XCTAssertEqual(export.status, 0, export.stderr)
        let python = TestEnv.shell("\(TestEnv.root)/ops/pyenv.sh").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let script = "\(TestEnv.root)/Tests/interop/csfle_interop.py"

        // pymongo's automatic decryption reads what ciphertail encrypted.
        let read = TestEnv.run(python, [script, "read-sealed", TestEnv.uri, src + "_sealed", kvNS, master])
        XCTAssertEqual(read.status, 0, read.stderr)
        let rows = try JSONSerialization.jsonObject(with: Data(read.stdout.utf8)) as? [[String: Any]]
        XCTAssertEqual(rows?.count, 5)
        XCTAssertEqual(rows?.first?["ssn"] as? String, "SSN-0")
        XCTAssertEqual(rows?.first?["email"] as? String, "user0@example.com")
        XCTAssertEqual(rows?.first?["name"] as? String, "Name 0")
        XCTAssertEqual(rows?.first?["street"] as? String, "0 Main St")
        XCTAssertEqual(rows?[3]["card"] as? String, "CARD-3")

        // ciphertail decrypts what pymongo encrypted explicitly, once it has the key.
        let write = TestEnv.run(python, [script, "write-explicit", TestEnv.uri, src, kvNS, master])
        XCTAssertEqual(write.status, 0, write.stderr)
        let imported = TestEnv.ciphertail(["keys", "import", "--pipeline", pipe, "--uri", TestEnv.uri, "--key-vault-namespace", kvNS, "--json"])
        XCTAssertEqual(imported.status, 0, imported.stderr)
        XCTAssertTrue(imported.stdout.contains("\"imported\" : 1"), imported.stdout)
        let found = TestEnv.ciphertail(["find", "--pipeline", pipe, "--uri", TestEnv.uri, "--ns", "\(src).pyenc", "--filter", "{}"])
        XCTAssertEqual(found.status, 0, found.stderr)
        XCTAssertTrue(found.stdout.contains("PYCANARY-DETERMINISTIC") && found.stdout.contains("PYCANARY-RANDOM"), found.stdout)
    }
}

/// `find` over a live collection and over an archive.
final class FindTests: XCTestCase {
    func testEqualityOnDeterministicFieldsOverACollectionAndAnArchive() throws {
        let dir = TestEnv.temporaryDirectory("find")
        let src = TestEnv.uniqueName("find")
        defer { dropDatabases(src, src + "_sealed") }
        let vault = dir + "/keyvault", master = dir + "/master.key"
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", vault, "--master-key-file", master]).status, 0)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<30).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 3)"), "email": .string("shared@example.com"),
                      "ssn": .string("SSN-\(i)"), "name": .string("N\(i)")])
        })
        let pipe = dir + "/p.yaml"
        try writeUsersPipeline(pipe, database: src, dir: dir, vault: vault, master: master, ruleNamespace: "*.users",
                               fields: ["ssn": "deterministic", "email": "deterministic", "name": "random"])
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", pipe]).status, 0)
        XCTAssertEqual(TestEnv.ciphertail(["restore", "--pipeline", pipe, "--keep-encrypted", "--ns-from", "\(src).*", "--ns-to", "\(src)_sealed.*"]).status, 0)

        for target in [["--uri", TestEnv.uri, "--ns", "\(src)_sealed.users"], ["--repo", dir + "/repo", "--ns", "\(src).users"]] {
            // Same email for everyone, but each subject's key gives its own ciphertext: only u1's 10 match.
            let r = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"userId": "u1", "email": "shared@example.com"}"#])
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = r.stdout.split(separator: "\n")
            XCTAssertEqual(lines.count, 10, r.stdout)
            XCTAssertTrue(lines.allSatisfy { $0.contains("\"u1\"") && $0.contains("shared@example.com") }, r.stdout)
            let one = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"userId": "u2", "ssn": {"$in": ["SSN-2", "SSN-5", "SSN-3"]}}"#])
            XCTAssertEqual(one.stdout.split(separator: "\n").count, 2, one.stdout)  // SSN-2 and SSN-5 belong to u2
            let noSubject = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"email": "shared@example.com"}"#])
            XCTAssertEqual(noSubject.status, 64)
            XCTAssertTrue(noSubject.stderr.contains("needs an equality on userId"), noSubject.stderr)
            let random = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"userId": "u1", "name": "N1"}"#])
            XCTAssertEqual(random.status, 64)
            XCTAssertTrue(random.stderr.contains("random algorithm"), random.stderr)
            let range = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"userId": "u1", "ssn": {"$gt": "A"}}"#])
            XCTAssertTrue(range.stderr.contains("$gt cannot run on ciphertext"), range.stderr)
            let unknown = TestEnv.ciphertail(["find", "--pipeline", pipe] + target + ["--filter", #"{"userId": "nobody", "ssn": "SSN-1"}"#])
            XCTAssertEqual(unknown.status, 0)
            XCTAssertEqual(unknown.stdout, "")
        }
    }
}

/// The key vault as a MongoDB collection (drivers' layout), inside the very database being
/// backed up: it is left out of the archive and its writes out of the captured events; keys
/// created by the backup are found by the restore and by a plain driver-style find.
final class CollectionKeyVaultTests: XCTestCase {
    func testBackupAndRestoreWithTheKeysInACollectionThatIsNeverArchived() throws {
        let dir = TestEnv.temporaryDirectory("kvcoll")
        let src = TestEnv.uniqueName("kvc_src")
        defer { dropDatabases(src, src + "_plain") }
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<30).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 7)"), "ssn": .string("CANARYSSN\(i)")])
        })
        let vaultNS = Namespace(database: src, collection: "vault")
        let pipe = dir + "/pipeline.yaml"
        try Data("""
        source: {uri: "\(TestEnv.uri)", namespaces: [\(src).*]}
        archive: {repo: \(dir)/repo}
        encryption:
          keyVault: "\(TestEnv.uri)"
          keyVaultNamespace: \(vaultNS)
          masterKey: {provider: local, local: {keyFile: \(dir)/master.key}}
          rules:
            - namespace: \(src).users
              subject: userId
              fields: [{path: ssn, algorithm: deterministic}]
        """.utf8).write(to: URL(fileURLWithPath: pipe))

        let initRun = TestEnv.ciphertail(["keys", "init", "--pipeline", pipe, "--json"])
        XCTAssertEqual(initRun.status, 0, initRun.stderr)
        let indexes = try client.collection(vaultNS).listIndexes()
        let altIndex = try XCTUnwrap(indexes.first { $0["name"] == .string(CollectionKeyVault.keyAltNamesIndex) })
        XCTAssertEqual(altIndex["unique"], BSONValue.bool(true), "keyAltNames are unique, as the drivers require")
        XCTAssertEqual(try client.collection(vaultNS).countDocuments(), 1, "keys init made the subject-hash key")

        let backup = TestEnv.ciphertail(["backup", "--pipeline", pipe, "--json"])
        XCTAssertEqual(backup.status, 0, backup.stderr)
        XCTAssertEqual(try client.collection(vaultNS).countDocuments(), 8, "one key per subject (7) and the subject-hash key")
        let manifest = try Repository(path: dir + "/repo").latest()
        XCTAssertEqual(manifest.namespaces.map(\.namespace), ["\(src).users"], "the key vault collection is not archived")
        XCTAssertEqual(manifest.events.count, 0, "the backup wrote keys while capturing, but none of those writes is an event")

        // Every key is a CSFLE key document a driver can use, wrapped by the local master key.
        for k in try client.collection(vaultNS).find().all() {
            let info = try DataKeyInfo(k)
            XCTAssertEqual(info.provider, "local")
            XCTAssertEqual(info.altNames.count, 1)
        }
        // Two keys cannot share a name: the unique index refuses the second.
        let vault = try CollectionKeyVault(connection: TestEnv.connection, namespace: vaultNS)
        let engine = try MongoCryptEngine(localMasterKey: try LocalMasterKey.load(from: dir + "/master.key"), keyVault: vault)
        try engine.createDataKey(keyAltNames: ["twice"])
        guard case .invalidKeyDocument? = try? { () throws -> FieldCryptoError? in
            do { try engine.createDataKey(keyAltNames: ["twice"]); return nil } catch let e as FieldCryptoError { return e }
        }() else { return XCTFail("a second key named twice was accepted") }
        XCTAssertEqual(try vault.keyIds(forAltNames: ["twice", "absent"]).keys.sorted(), ["twice"])

        let restore = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--ns-from", "\(src).*", "--ns-to", "\(src)_plain.*", "--json"])
        XCTAssertEqual(restore.status, 0, restore.stderr)
        let restored = try TestEnv.documents(client, Namespace(database: src + "_plain", collection: "users"))
        XCTAssertEqual(restored.count, 30)
        XCTAssertEqual(restored.first { $0["_id"] == .int32(4) }?["ssn"], "CANARYSSN4")
        XCTAssertNil(try? TestEnv.documents(client, Namespace(database: src + "_plain", collection: "vault")).first)
    }
}
