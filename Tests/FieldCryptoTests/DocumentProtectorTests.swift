import BSON
@testable import FieldCrypto
import XCTest

final class DocumentProtectorTests: XCTestCase {
    let rules = [
        ProtectionRule(namespace: "shop.users", key: .perSubject(field: "userId", onMissing: .stop), fields: [
            .init(path: "ssn", algorithm: .deterministic), .init(path: "email", algorithm: .deterministic),
            .init(path: "name", algorithm: .random), .init(path: "address", algorithm: .random),
            .init(path: "orders.card", algorithm: .random),
        ]),
        ProtectionRule(namespace: "shop.audit", key: .perSubject(field: "who", onMissing: .fallback("shared")), fields: [
            .init(path: "ip", algorithm: .random),
        ]),
        ProtectionRule(namespace: "hr.*", key: .named("hr-key"), fields: [.init(path: "salary", algorithm: .random)]),
    ]

    func makeProtector() throws -> DocumentProtector {
        DocumentProtector(rules: rules, engine: try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: try InMemoryKeyVault()))
    }

    func user(_ id: Int32, userId: String, email: String) -> Document {
        Document(["_id": .int32(id), "userId": .string(userId), "name": "Ada CANARY-NAME", "email": .string(email),
                  "ssn": "123-45-CANARY", "address": ["street": "1 CANARY Road", "zip": "99999"],
                  "orders": [["n": 1, "card": "4111-CANARY-1"], ["n": 2, "card": "4111-CANARY-2"], "not-a-doc"],
                  "score": 3.5])
    }

    func keyId(_ v: BSONValue?) -> [UInt8]? {
        guard case .binary(6, let b)? = v, b.count > 17 else { return nil }
        return Array(b[1..<17])
    }

    func testProtectsEveryConfiguredPathAndDecryptsBackExactly() throws {
        let p = try makeProtector()
        let doc = user(1, userId: "u1", email: "ada@example.com")
        let sealed = try p.protect(doc, database: "shop", collection: "users")
        XCTAssertEqual(sealed.keys, doc.keys, "field order kept")
        for path in ["ssn", "email", "name", "address"] { XCTAssertNotNil(keyId(sealed[path]), path) }
        guard case .array(let orders)? = sealed["orders"] else { return XCTFail() }
        XCTAssertNotNil(keyId(orders[0].documentValue?["card"]))
        XCTAssertNotNil(keyId(orders[1].documentValue?["card"]))
        XCTAssertEqual(orders[2], "not-a-doc")
        XCTAssertEqual(sealed["userId"], "u1")
        XCTAssertEqual(sealed["score"], .double(3.5))
        XCTAssertFalse(String(decoding: sealed.bytes, as: UTF8.self).contains("CANARY"), "no plaintext left")
        XCTAssertEqual(try p.engine.decryptDocument(sealed).bytes, doc.bytes)
        // Unrelated namespaces pass through untouched.
        XCTAssertEqual(try p.protect(doc, database: "shop", collection: "other").bytes, doc.bytes)
    }

    func testOneKeyPerSubjectNamedByAKeyedHash() throws {
        let p = try makeProtector()
        let a1 = try p.protect(user(1, userId: "u1", email: "x@example.com"), database: "shop", collection: "users")
        let a2 = try p.protect(user(2, userId: "u1", email: "x@example.com"), database: "shop", collection: "users")
        let b = try p.protect(user(3, userId: "u2", email: "x@example.com"), database: "shop", collection: "users")
        XCTAssertEqual(keyId(a1["ssn"]), keyId(a2["ssn"]))
        XCTAssertNotEqual(keyId(a1["ssn"]), keyId(b["ssn"]))
        XCTAssertEqual(a1["email"], a2["email"], "deterministic: same subject, same value, same ciphertext")
        XCTAssertNotEqual(a1["email"], b["email"], "another subject's key gives another ciphertext")
        XCTAssertNotEqual(a1["name"], a2["name"], "random differs each time")
        let names = try p.engine.keyVault.allKeys().flatMap { try DataKeyInfo($0).altNames }
        XCTAssertEqual(names.filter { $0.hasPrefix("subject/") }.count, 2)
        XCTAssertFalse(names.contains { $0.contains("u1") || $0.contains("u2") }, "subject ids never appear in the vault")
        XCTAssertEqual(try p.subjectKeyName("u1"), try p.subjectKeyName("u1"))
    }

    func testMissingSubjectStopsOrFallsBack() throws {
        let p = try makeProtector()
        XCTAssertThrowsError(try p.protect(Document(["_id": 7, "ssn": "x"]), database: "shop", collection: "users")) { e in
            XCTAssertEqual("\(e)", "shop.users document _id 7 has no subject field userId, and its rule has no fallback key (onMissingSubject: stop)")
        }
        let fell = try p.protect(Document(["_id": 8, "ip": "10.0.0.1"]), database: "shop", collection: "audit")
        let shared = try p.engine.keyVault.keys(matching: KeyVaultQuery(ids: [], altNames: ["shared"]))
        XCTAssertEqual(shared.count, 1)
        XCTAssertEqual(keyId(fell["ip"]), try DataKeyInfo(shared[0]).id.keyIdBytes)
    }

    func testMarkingsAlreadyInTheSourceAreNeverEncryptedOnRequest() throws {
        let p = try makeProtector()
        // A subtype-6 value shaped like an intent-to-encrypt marking, planted in the source.
        let planted = Marking.make(value: "chosen plaintext", key: .altName(DocumentProtector.subjectHashKeyName), algorithm: .deterministic)
        let doc = Document(["_id": 1, "userId": "u1", "ssn": "123", "note": planted])
        let sealed = try p.protect(batch: [doc, user(2, userId: "u2", email: "e@x")], database: "shop", collection: "users")
        XCTAssertEqual(sealed[0]["note"], planted, "left exactly as it was, not turned into ciphertext")
        XCTAssertEqual(try p.engine.decrypt(sealed[0]["ssn"]!), "123")
        XCTAssertEqual(try p.engine.decryptDocument(sealed[1]).bytes, user(2, userId: "u2", email: "e@x").bytes)
    }

    func testForbiddenTypeUnderDeterministicNamesThePathNotTheValue() throws {
        let p = try makeProtector()
        XCTAssertThrowsError(try p.protect(Document(["_id": 9, "userId": "u9", "ssn": .double(123.456)]), database: "shop", collection: "users")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("ssn") && text.contains("double") && text.contains("_id 9"), text)
            XCTAssertFalse(text.contains("123.456"), text)
        }
    }

    func event(_ type: String, _ extra: KeyValuePairs<String, BSONValue>) -> Document {
        var b = DocumentBuilder()
        b.append("operationType", .string(type))
        b.append("ns", ["db": "shop", "coll": "users"])
        b.append("documentKey", ["_id": 1])
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func testChangeEventsCarryNoPlaintextOfProtectedFields() throws {
        let p = try makeProtector()
        let full = user(1, userId: "u1", email: "ada@example.com")
        let insert = try p.protectEvent(event("insert", ["fullDocument": .document(full)]))
        XCTAssertFalse(String(decoding: insert.bytes, as: UTF8.self).contains("CANARY"))
        XCTAssertEqual(try p.engine.decryptDocument(insert["fullDocument"]!.documentValue!).bytes, full.bytes)

        let update = try p.protectEvent(event("update", [
            "fullDocument": .document(full),
            "updateDescription": ["updatedFields": [
                "ssn": "999-CANARY", "orders.1.card": "4111-CANARY-9", "orders.0": ["n": 5, "card": "CANARY-elem"],
                "address.zip": "CANARY-zip", "plain": 1,
            ], "removedFields": [], "truncatedArrays": []],
        ]))
        XCTAssertFalse(String(decoding: update.bytes, as: UTF8.self).contains("CANARY"), update.relaxedJSON)
        let fields = update["updateDescription"]!.documentValue!["updatedFields"]!.documentValue!
        XCTAssertEqual(fields.keys, ["ssn", "orders.1.card", "orders.0", "plain", "address"])
        XCTAssertEqual(fields["plain"], 1)
        XCTAssertEqual(try p.engine.decrypt(fields["ssn"]!), "999-CANARY")
        XCTAssertEqual(try p.engine.decrypt(fields["address"]!), full["address"])

        // Removes and truncations inside an encrypted field become a whole-field $set.
        let inside = try p.protectEvent(event("update", [
            "fullDocument": .document(full),
            "updateDescription": ["updatedFields": [:], "removedFields": ["address.zip", "visits"],
                                  "truncatedArrays": [["field": "address.lines", "newSize": 1], ["field": "orders", "newSize": 1]]],
        ]))
        let d2 = inside["updateDescription"]!.documentValue!
        XCTAssertEqual(d2["removedFields"], ["visits"])
        XCTAssertEqual(d2["truncatedArrays"], [["field": "orders", "newSize": 1]])
        XCTAssertEqual(try p.engine.decrypt(d2["updatedFields"]!.documentValue!["address"]!), full["address"])

        // No full document (deleted since): the subject and so the key are unknown. Protected
        // entries are dropped and counted, never kept in clear; the rest stays; no error.
        let orphan = try p.protectEvent(event("update", ["updateDescription": ["updatedFields": ["ssn": "CANARY", "visits": 2],
                                                                                 "removedFields": ["address.zip"]]]))
        XCTAssertFalse(String(decoding: orphan.bytes, as: UTF8.self).contains("CANARY"))
        let d3 = orphan["updateDescription"]!.documentValue!
        XCTAssertEqual(d3["updatedFields"], ["visits": 2])
        XCTAssertEqual(d3["removedFields"], [])
        XCTAssertEqual(d3["ciphertailDroppedFields"], .int32(2))
    }
}

final class BatchProtectionTests: XCTestCase {
    func testBatchGivesTheSameResultAsOneByOneAndCreatesKeysInOneAppend() throws {
        let folder = try makeTemporaryFolder()
        let vault = try FileKeyVault.create(at: folder + "/vault")
        let engine = try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: vault)
        let rules = [ProtectionRule(namespace: "shop.users", key: .perSubject(field: "userId", onMissing: .fallback("anon")), fields: [
            .init(path: "ssn", algorithm: .deterministic), .init(path: "name", algorithm: .random), .init(path: "orders.card", algorithm: .random),
        ])]
        let batchProtector = DocumentProtector(rules: rules, engine: engine)
        let docs = (0..<1500).map { i -> Document in
            var b = DocumentBuilder()
            b.append("_id", .int32(Int32(i)))
            if i % 100 != 0 { b.append("userId", .string("u\(i % 700)")) }  // some without a subject: fallback key
            b.append("ssn", .string("SSN-\(i % 10)"))
            b.append("name", .string("Name \(i)"))
            b.append("orders", [["card": .string("C\(i)")], ["card": .null]])
            return b.document
        }
        let sealed = try batchProtector.protect(batch: docs, database: "shop", collection: "users")
        XCTAssertEqual(sealed.count, docs.count)
        let subjects = Set(docs.compactMap { $0["userId"] }).count
        XCTAssertEqual(vault.count, 1 + subjects + 1, "hash key, one per subject, the fallback")
        let oneByOne = DocumentProtector(rules: rules, engine: engine)
        for (i, (doc, s)) in zip(docs, sealed).enumerated() {
            XCTAssertEqual(s.keys, doc.keys)
            XCTAssertEqual(try engine.decryptDocument(s).bytes, doc.bytes, "document \(i)")
            XCTAssertEqual(s["ssn"], try oneByOne.protect(doc, database: "shop", collection: "users")["ssn"], "deterministic matches, \(i)")
            XCTAssertEqual(s["orders"]?.arrayValue?[1].documentValue?["card"], .null)
        }
        XCTAssertEqual(vault.count, subjects + 2, "the one-by-one pass found every key")
        XCTAssertEqual(try FileKeyVault.open(at: folder + "/vault").count, subjects + 2)
    }
}
