import Archive
import BSON
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import TestSupport
import XCTest

/// Cross-cluster migration with two real mongod processes: the source's encrypted change log
/// restored to a point in time into another mongod (its own port and data folder), re-keyed
/// on the way under another key vault (a collection in the target) and another master key (in
/// the KMIP server). The target then holds ciphertext no source key opens, which pymongo with
/// the target's keys reads.
final class MigrationTests: XCTestCase {
    static let targetName = "ct-migrate", targetPort = 27137

    func testMigrationIntoAnotherMongodUnderNewKeys() throws {
        let started = TestEnv.shell("\(TestEnv.root)/ops/mongod.sh start \(Self.targetName) \(Self.targetPort)")
        XCTAssertEqual(started.status, 0, started.stderr)
        defer { TestEnv.shell("\(TestEnv.root)/ops/mongod.sh stop \(Self.targetName)") }
        let targetURI = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertNotEqual(targetURI, TestEnv.uri)
        let dir = TestEnv.temporaryDirectory("migrate")
        let src = TestEnv.uniqueName("mig_src"), dst = src + "_moved"
        defer { dropDatabases(src) }
        let target = try Client(ConnectionString(targetURI))
        for db in try target.databaseNames() where db.hasPrefix("mig_") || db == "encryption" { try target.database(db).drop() }

        let fields = ["ssn: deterministic", "email: deterministic", "name: random", "address.street: random", "orders.card: random"]
            .map { "      - {path: \($0.split(separator: ":")[0]), algorithm:\($0.split(separator: ":")[1])}" }
            .joined(separator: "\n")
        let sourcePipeline = dir + "/source.yaml"
        try """
        source: {uri: "\(TestEnv.uri)", namespaces: [\(src).*]}
        archive: {repo: \(dir)/repo}
        encryption:
          keyVault: \(dir)/source-vault
          masterKey: {provider: local, local: {keyFile: \(dir)/source.key}}
          rules:
            - namespace: \(src).users
              subject: userId
              fields:
        \(fields)
        """.write(toFile: sourcePipeline, atomically: true, encoding: .utf8)
        let targetPipeline = dir + "/target.yaml"
        try """
        encryption:
          keyVault: "\(targetURI)"
          keyVaultNamespace: encryption.__keyVault
          masterKey:
            provider: kmip
            kmip:
              serverName: 127.0.0.1
              port: \(KMIPTestServers.ports[0])
              serverCAFile: \(KMIPTestServers.file("ca.pem"))
              clientCertificateFile: \(KMIPTestServers.file("client.pem"))
          rules:
            - namespace: \(src).users
              subject: userId
              fields:
        \(fields)
        """.write(toFile: targetPipeline, atomically: true, encoding: .utf8)
        for p in [sourcePipeline, targetPipeline] {
            let r = TestEnv.ciphertail(["keys", "init", "--pipeline", p])
            XCTAssertEqual(r.status, 0, r.stderr)
        }

        let client = try TestEnv.client()
        let users = Namespace(database: src, collection: "users")
        try insert(client, users, (0..<200).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 25)"), "name": .string("CANARYNAME\(i)"),
                      "email": .string("CANARYMAIL\(i)"), "ssn": .string("CANARYSSN\(i)"),
                      "address": ["street": .string("CANARYSTREET\(i)"), "zip": "12345"],
                      "orders": [["n": 1, "card": .string("CANARYCARD\(i)")]]])
        })
        let tail = try startTailProcess(["--pipeline", sourcePipeline])
        defer { if tail.isRunning { kill(tail.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: dir + "/repo").backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        for i in 0..<30 {
            try client.runCommand(["update": "users", "updates": [["q": ["_id": .int32(Int32(i))], "u": ["$set": ["ssn": .string("CANARYNEWSSN\(i)")]]]]], database: src)
        }
        try client.runCommand(["delete": "users", "deletes": [["q": ["_id": 199], "limit": 1]]], database: src)
        let point = try operationTime(client)
        let expected = try TestEnv.documents(client, users)
        try client.runCommand(["insert": "users", "documents": [["_id": 5000, "userId": "late"]]], database: src)  // after the point
        try waitCovered(dir + "/repo", point)
        kill(tail.processIdentifier, SIGTERM)
        tail.waitUntilExit()

        // The logical restore into the other mongod, to the point, under the target's keys.
        let r = TestEnv.ciphertail(["restore", "--pipeline", sourcePipeline, "--uri", targetURI, "--at", point.description,
                                    "--rekey", targetPipeline, "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--workers", "2", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse((r.stdout + r.stderr).contains("CANARY"))
        let moved = try target.collection(Namespace(database: dst, collection: "users")).find(Document(), options: ["sort": ["_id": 1]]).all()
        XCTAssertEqual(moved.count, expected.count)

        // Ciphertext at rest in the target, under keys the source vault does not hold.
        let sourceKeyIds = Set(try FileKeyVault.open(at: dir + "/source-vault").allKeys().compactMap { try? DataKeyInfo($0).id })
        var targetKeyIds = Set<UUID>()
        for doc in moved {
            XCTAssertFalse(String(decoding: doc.bytes, as: UTF8.self).contains("CANARY"), "plaintext in the target: \(doc["_id"]!)")
            for v in [doc["ssn"], doc["email"], doc["name"]] {
                guard case .binary(6, let bytes)? = v, bytes.count > 17 else { return XCTFail("not ciphertext in \(doc["_id"]!)") }
                targetKeyIds.insert(UUID(uuid: (bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                                                bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15], bytes[16])))
            }
        }
        XCTAssertEqual(targetKeyIds.count, 25, "one data key per subject")
        XCTAssertTrue(targetKeyIds.isDisjoint(with: sourceKeyIds), "the source's keys cannot open the target's values")

        // Decrypted with the target's keys, the target equals the source at the point.
        let settings = try XCTUnwrap(try KeySettings.resolve(try PipelineFile.load(path: targetPipeline).encryption, keyVault: nil, masterKeyFile: nil))
        let decryptor = LenientDecryptor(engine: try settings.openEngine())
        let opened = decryptor.decrypt(batch: moved)
        XCTAssertTrue(opened.allSatisfy { $0.1.isEmpty })
        XCTAssertEqual(opened.map(\.0.bytes), expected.map(\.bytes))

        // Any driver with the target's keys reads it: pymongo with libmongocrypt, the master
        // key in the KMIP server, the key vault in the target cluster.
        let python = TestEnv.shell("\(TestEnv.root)/ops/pyenv.sh").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let read = TestEnv.run(python, ["\(TestEnv.root)/Tests/interop/csfle_interop.py", "read-sealed-kmip", targetURI, dst, "encryption.__keyVault",
                                        KMIPTestServers.server(0), KMIPTestServers.file("ca.pem"), KMIPTestServers.file("client.pem")])
        XCTAssertEqual(read.status, 0, read.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(read.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(rows.count, 5)
        XCTAssertEqual(rows[0]["ssn"] as? String, "CANARYNEWSSN0")
        XCTAssertEqual(rows[3]["street"] as? String, "CANARYSTREET3")
        XCTAssertEqual(rows[4]["card"] as? String, "CANARYCARD4")
        try target.database(dst).drop()
    }
}
