import Archive
import BSON
@testable import Erasure
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import TestSupport
import XCTest

/// Right to erasure end to end, through the CLI, against the real mongod and libmongocrypt:
/// 1,000 users with a key each, two backups around a round of changes, ten users erased,
/// verify-erasure for each, restores of both old backups, a key-vault backup restored after
/// the erasure, and a plaintext copy planted where verify-erasure must find it.
final class ErasureEndToEndTests: XCTestCase {
    var dir: String!
    var src: String!
    var pipeline: String!
    var ledgerPath: String { dir + "/ledger/erasure.ledger" }
    var vaultPath: String { dir + "/keys/vault" }
    var kvBackups: String { dir + "/keyvault-backups" }
    var repo: String { dir + "/repo" }

    static let users = 1000
    static let erased = stride(from: 0, to: 1000, by: 100).map { $0 + 7 }  // user-0007, user-0107, ...

    static func userId(_ i: Int) -> String { String(format: "user-%04d", i) }
    static func email(_ i: Int) -> String { String(format: "ada.%04d@example.com", i) }
    static func ssn(_ i: Int) -> String { String(format: "SSN-%04d-%04d", i, i * 7 % 10_000) }
    static func card(_ i: Int, _ n: Int) -> String { String(format: "CARD-%04d-%d", i, n) }

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("erase")
        src = TestEnv.uniqueName("erase_src")
        pipeline = dir + "/p.yaml"
        try """
        source: {uri: "\(TestEnv.uri)", namespaces: ["\(src!).*"]}
        archive: {repo: \(repo)}
        encryption:
          keyVault: \(vaultPath)
          masterKey: {provider: local, local: {keyFile: \(dir!)/keys/master.key}}
          erasureLedger: \(ledgerPath)
          keyVaultBackups: \(kvBackups)
          rules:
            - namespace: \(src!).users
              subject: userId
              fields:
                - {path: email, algorithm: deterministic}
                - {path: ssn, algorithm: deterministic}
                - {path: name, algorithm: random, onErased: marker}
                - {path: phone, algorithm: random, onErased: remove}
            - namespace: \(src!).orders
              subject: userId
              fields:
                - {path: card, algorithm: random}
        """.write(toFile: pipeline, atomically: true, encoding: .utf8)
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline]).status, 0)
    }

    override func tearDown() { dropDatabases(src, src + "_r1", src + "_r2", src + "_r3") }

    func protector() throws -> DocumentProtector {
        let file = try PipelineFile.load(path: pipeline)
        let settings = try XCTUnwrap(KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil))
        return DocumentProtector(rules: file.encryption?.protectionRules() ?? [], engine: try settings.openEngine())
    }

    func user(_ i: Int) -> Document {
        ["_id": .int32(Int32(i)), "userId": .string(Self.userId(i)), "email": .string(Self.email(i)), "ssn": .string(Self.ssn(i)),
         "name": .string("Ada \(i) Lovelace"), "phone": .string(String(format: "+44 20 %04d", i)), "plan": .string(i % 3 == 0 ? "pro" : "free")]
    }

    /// The live cluster holds what an application with CSFLE writes: users as ciphertext
    /// (encrypted here with the same keys). Orders hold plaintext that ciphertail encrypts
    /// on capture.
    func seed() throws {
        let client = try TestEnv.client()
        let p = try protector()
        let sealed = try p.protect(batch: (0..<Self.users).map(user), database: src, collection: "users")
        try insert(client, Namespace(database: src, collection: "users"), sealed)
        try insert(client, Namespace(database: src, collection: "orders"), (0..<Self.users * 2).map { n in
            ["_id": .int32(Int32(n)), "userId": .string(Self.userId(n / 2)), "card": .string(Self.card(n / 2, n % 2)), "total": .int32(Int32(n % 97))]
        })
    }

    func json(_ r: CLIResult) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout + r.stderr)
    }

    func testEraseTenOfAThousandAcrossBackupsKeyVaultRestoreAndPlantedCopy() throws {
        try seed()
        let client = try TestEnv.client()
        // A key-vault backup before anything is erased, and an offline copy of it.
        let kvb = TestEnv.ciphertail(["keys", "backup", "--pipeline", pipeline, "--json"])
        XCTAssertEqual(kvb.status, 0, kvb.stderr)
        let kvFile = try XCTUnwrap(try json(kvb)["backup"] as? String)
        let offline = dir + "/offline-copy.ctkvb"
        try FileManager.default.copyItem(atPath: kvFile, toPath: offline)

        let b1 = TestEnv.ciphertail(["backup", "--pipeline", pipeline, "--json"])
        XCTAssertEqual(b1.status, 0, b1.stderr)
        let id1 = try XCTUnwrap(try json(b1)["id"] as? String)

        // Changes: new orders for every erased user and some others, an updated plan, a deleted order.
        let orders = Namespace(database: src, collection: "orders")
        try insert(client, orders, (Self.erased + [1, 2, 3]).enumerated().map { n, i in
            ["_id": .int32(Int32(10_000 + n)), "userId": .string(Self.userId(i)), "card": .string(Self.card(i, 9)), "total": 5]
        })
        try client.runCommand(["update": "users", "updates": [["q": ["_id": 7], "u": ["$set": ["plan": "pro"]]]]], database: src)
        try client.runCommand(["delete": "orders", "deletes": [["q": ["_id": 0], "limit": 1]]], database: src)
        let b2 = TestEnv.ciphertail(["backup", "--pipeline", pipeline, "--json"])
        XCTAssertEqual(b2.status, 0, b2.stderr)
        let id2 = try XCTUnwrap(try json(b2)["id"] as? String)

        // Erase ten users.
        for i in Self.erased {
            let r = TestEnv.ciphertail(["erase", "--pipeline", pipeline, "--subject", Self.userId(i), "--reason", "ticket \(i)", "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let out = try json(r)
            XCTAssertEqual((out["keys"] as? [String])?.count, 1)
            // The one key-vault backup holds every user's key: each erasure rewrites it.
            XCTAssertEqual(out["scrubbedKeyVaultBackups"] as? [String], [kvFile])
            XCTAssertFalse(r.stdout.contains(Self.userId(i)), "the subject id in erase's output")
        }
        let ledger = try String(contentsOfFile: ledgerPath, encoding: .utf8)
        XCTAssertEqual(ledger.split(separator: "\n").count, 20)
        for i in Self.erased { XCTAssertFalse(ledger.contains(Self.userId(i)), "a subject id in the ledger") }
        // Idempotent: again changes nothing.
        let again = TestEnv.ciphertail(["erase", "--pipeline", pipeline, "--subject", Self.userId(7), "--json"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try json(again)["alreadyErased"] as? Bool, true)
        XCTAssertEqual(try String(contentsOfFile: ledgerPath, encoding: .utf8), ledger)

        // verify-erasure passes for each erased user and fails for one who was not erased.
        for i in Self.erased {
            let v = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", Self.userId(i), "--canary", Self.email(i), "--canary", Self.ssn(i)])
            XCTAssertEqual(v.status, 0, "user \(i): " + v.stdout + v.stderr)
            XCTAssertTrue(v.stdout.contains("erasure verified"), v.stdout)
        }
        let notErased = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", Self.userId(8), "--json"])
        XCTAssertEqual(notErased.status, 9, notErased.stderr)
        let report = try json(notErased)
        let findings = try XCTUnwrap(report["findings"] as? [[String: Any]])
        XCTAssertTrue(findings.contains { $0["check"] as? String == "keys" && $0["scope"] as? String == "key vault" })
        XCTAssertTrue(findings.contains { $0["check"] as? String == "ciphertext" && ($0["scope"] as? String ?? "").contains(id1) })
        XCTAssertTrue(findings.contains { $0["check"] as? String == "ciphertext" && $0["namespace"] as? String == "\(src!).orders" && $0["field"] as? String == "card" })

        // Both old backups restore the 990 intact and the 10 unreadable.
        for (id, target) in [(id1, src + "_r1"), (id2, src + "_r2")] {
            let r = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--uri", TestEnv.uri, "--backup", id,
                                        "--ns-from", "\(src!).*", "--ns-to", "\(target).*", "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let summary = try json(r)
            let erasedCounts = try XCTUnwrap(summary["erased"] as? [String: Int])
            // Per erased user: email, ssn, name, phone; per order of theirs: card.
            XCTAssertEqual(erasedCounts["\(target).users"], 10 * 4)
            XCTAssertEqual(erasedCounts["\(target).orders"], 10 * (id == id1 ? 2 : 3))
            XCTAssertEqual((summary["undecryptable"] as? [String: Int]) ?? [:], [:], "only erased values are unreadable")
            try assertRestored(client, database: target, erasedOrdersPerUser: id == id1 ? 2 : 3)
        }

        // The key vault is lost and the old (pre-erasure) offline key-vault backup restored:
        // the ledger withholds the erased keys, so the ten stay unreadable.
        let managed = try KeyVaultBackups.read(kvFile)
        XCTAssertEqual(managed.1.count, try KeyVaultBackups.read(offline).1.count - 10, "erase scrubbed the managed key-vault backup")
        try FileManager.default.removeItem(atPath: vaultPath)
        let kr = TestEnv.ciphertail(["keys", "restore", "--pipeline", pipeline, offline, "--json"])
        XCTAssertEqual(kr.status, 0, kr.stderr)
        XCTAssertEqual(try json(kr)["withheldErased"] as? Int, 10)
        let r3 = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--uri", TestEnv.uri, "--backup", id2,
                                     "--ns-from", "\(src!).*", "--ns-to", "\(src!)_r3.*", "--json"])
        XCTAssertEqual(r3.status, 0, r3.stderr)
        try assertRestored(client, database: src + "_r3", erasedOrdersPerUser: 3)
        for i in Self.erased.prefix(2) {
            let v = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", Self.userId(i), "--key-vault-backup", offline])
            XCTAssertEqual(v.status, 0, v.stdout + v.stderr)
            XCTAssertTrue(v.stdout.contains("withheld by the ledger"), v.stdout)
        }

        // A plaintext copy of an erased user's email planted in an unencrypted field is found.
        let victim = Self.erased[3]
        try insert(client, Namespace(database: src, collection: "support"), [
            ["_id": 1, "ticket": "refund", "note": .string("customer wrote from \(Self.email(victim)) yesterday")],
        ])
        let b3 = TestEnv.ciphertail(["backup", "--pipeline", pipeline, "--json"])
        XCTAssertEqual(b3.status, 0, b3.stderr)
        let id3 = try XCTUnwrap(try json(b3)["id"] as? String)
        let caught = TestEnv.ciphertail(["verify-erasure", "--pipeline", pipeline, "--subject", Self.userId(victim), "--canary", Self.email(victim), "--json"])
        XCTAssertEqual(caught.status, 9, caught.stdout + caught.stderr)
        let planted = try XCTUnwrap(try json(caught)["findings"] as? [[String: Any]])
        // In the copied document, and in the insert event the backup captured alongside it.
        XCTAssertTrue(planted.contains { $0["field"] as? String == "note" && ($0["location"] as? String ?? "").contains("/data/") }, "\(planted)")
        for f in planted {
            XCTAssertEqual(f["check"] as? String, "plaintext")
            XCTAssertEqual(f["namespace"] as? String, "\(src!).support")
            XCTAssertTrue(["note", "fullDocument.note"].contains(f["field"] as? String ?? ""), "\(f)")
            XCTAssertTrue((f["scope"] as? String ?? "").contains(id3))
        }
        XCTAssertFalse(caught.stdout.contains(Self.email(victim)), "the report repeats the value it found")
    }

    /// A restored users/orders pair: the 990 decrypt to what was written, the 10 erased have
    /// email and ssn as ciphertext (keep), name as the marker, no phone, and orders' cards as
    /// ciphertext.
    func assertRestored(_ client: Client, database: String, erasedOrdersPerUser: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let users = try TestEnv.documents(client, Namespace(database: database, collection: "users"))
        XCTAssertEqual(users.count, Self.users, file: file, line: line)
        let erased = Set(Self.erased)
        for d in users {
            let i = Int(try XCTUnwrap(d["_id"]?.int64Value))
            if erased.contains(i) {
                guard case .binary(6, _)? = d["email"], case .binary(6, _)? = d["ssn"] else {
                    return XCTFail("user \(i): an erased email or ssn is not ciphertext", file: file, line: line)
                }
                XCTAssertEqual(d["name"], .string("[erased]"), file: file, line: line)
                XCTAssertNil(d["phone"], file: file, line: line)
                XCTAssertEqual(d["userId"], .string(Self.userId(i)), file: file, line: line)
            } else {
                XCTAssertEqual(d, user(i), "user \(i)", file: file, line: line)
            }
        }
        var erasedCards = 0
        for d in try TestEnv.documents(client, Namespace(database: database, collection: "orders")) {
            guard case .string(let uid)? = d["userId"], let i = Int(uid.dropFirst(5)) else { return XCTFail("order without userId") }
            if erased.contains(i) {
                guard case .binary(6, _)? = d["card"] else { return XCTFail("an erased user's card is readable", file: file, line: line) }
                erasedCards += 1
            } else {
                guard case .string(let c)? = d["card"], c.hasPrefix(String(format: "CARD-%04d-", i)) else {
                    return XCTFail("order \(d["_id"]!) of user \(i) did not decrypt", file: file, line: line)
                }
            }
        }
        XCTAssertEqual(erasedCards, 10 * erasedOrdersPerUser, file: file, line: line)
    }
}
