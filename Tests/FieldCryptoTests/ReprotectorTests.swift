import BSON
@testable import FieldCrypto
import XCTest

/// Re-keying with the real libmongocrypt and key vault files: a source vault and master key,
/// a target vault and another master key. What the re-key writes opens with the target keys
/// only; what the source could not open stays exactly as it was.
final class ReprotectorTests: XCTestCase {
    static let fields: [ProtectionRule.Field] = [
        .init(path: "ssn", algorithm: .deterministic), .init(path: "email", algorithm: .deterministic),
        .init(path: "name", algorithm: .random), .init(path: "address", algorithm: .random),
        .init(path: "orders.card", algorithm: .random),
    ]
    static let rules = [
        ProtectionRule(namespace: "shop.users", key: .perSubject(field: "userId", onMissing: .fallback("anon")), fields: fields),
    ]

    var folder: String!
    var sourceEngine: MongoCryptEngine!
    var sourceProtector: DocumentProtector!
    var targetEngine: MongoCryptEngine!

    override func setUpWithError() throws {
        folder = try makeTemporaryFolder()
        sourceEngine = try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: try FileKeyVault.create(at: folder + "/source-vault"))
        sourceProtector = DocumentProtector(rules: Self.rules, engine: sourceEngine)
        targetEngine = try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: try FileKeyVault.create(at: folder + "/target-vault"))
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    func reprotector(rules: [ProtectionRule] = ReprotectorTests.rules, sourceEngine: MongoCryptEngine? = nil) -> Reprotector {
        Reprotector(source: LenientDecryptor(engine: sourceEngine ?? self.sourceEngine),
                    target: DocumentProtector(rules: rules, engine: targetEngine))
    }

    func user(_ id: Int32, _ subject: String?, ssn: String = "SSN-CANARY", email: String? = nil) -> Document {
        var b = DocumentBuilder()
        b.append("_id", .int32(id))
        if let subject { b.append("userId", .string(subject)) }
        b.append("ssn", .string(ssn))
        b.append("email", .string(email ?? "mail-\(id)-CANARY@example.com"))
        b.append("name", .string("Name \(id) CANARY"))
        b.append("address", ["street": .string("\(id) CANARY Road"), "zip": "12345"])
        b.append("orders", [["n": 1, "card": .string("4111-\(id)-CANARY")], ["n": 2, "card": .null]])
        b.append("visits", .int32(id))
        return b.document
    }

    /// The key id (bytes 1...16) of every subtype-6 value in a document, at any depth.
    func keyIds(_ value: BSONValue) -> [UUID] {
        switch value {
        case .binary(6, let b) where b.count > 17: return [UUID(keyIdBytes: Array(b[1..<17]))!]
        case .document(let d): return d.elements.flatMap { keyIds($0.value) }
        case .array(let items): return items.flatMap { keyIds($0) }
        default: return []
        }
    }

    func vaultIds(_ engine: MongoCryptEngine) throws -> Set<UUID> { Set(try engine.keyVault.allKeys().map { try DataKeyInfo($0).id }) }

    func testReprotectedValuesOpenWithTheTargetKeysOnly() throws {
        let plain = (0..<40).map { user(Int32($0), $0 % 9 == 0 ? nil : "u\($0 % 7)") }
        let sealed = try sourceProtector.protect(batch: plain, database: "shop", collection: "users")
        let results = try reprotector().reprotect(batch: sealed, database: "shop", collection: "users")
        XCTAssertEqual(results.count, plain.count)
        let sourceKeys = try vaultIds(sourceEngine)
        let targetKeys = try vaultIds(targetEngine)
        XCTAssertTrue(sourceKeys.isDisjoint(with: targetKeys), "new data keys only")
        for ((out, failures), original) in zip(results, plain) {
            XCTAssertEqual(failures, [])
            XCTAssertEqual(out.keys, original.keys, "field order kept")
            XCTAssertFalse(String(decoding: out.bytes, as: UTF8.self).contains("CANARY"), "no plaintext")
            let ids = keyIds(.document(out))
            XCTAssertEqual(ids.count, 5, "ssn, email, name, address, orders.0.card")
            XCTAssertTrue(Set(ids).isSubset(of: targetKeys), "every value is under a target key")
            XCTAssertEqual(try targetEngine.decryptDocument(out).bytes, original.bytes, "the target keys give the plaintext back")
            // The source keys cannot open any of the new values.
            for field in ["ssn", "email", "name", "address"] {
                guard case .keyNotFound? = expectFieldCryptoError({ try sourceEngine.decrypt(out[field]!) }) else {
                    return XCTFail("\(field): the source engine must miss the key")
                }
            }
            let lenient = LenientDecryptor(engine: sourceEngine).decrypt(out)
            XCTAssertEqual(lenient.1.count, 5)
            XCTAssertEqual(lenient.0.bytes, out.bytes, "nothing opened with the source keys")
        }
        // Subject keys are named from the target vault's own subject-hash key: other names.
        func subjectNames(_ e: MongoCryptEngine) throws -> Set<String> {
            Set(try e.keyVault.allKeys().flatMap { try DataKeyInfo($0).altNames }.filter { $0.hasPrefix("subject/") })
        }
        XCTAssertEqual(try subjectNames(targetEngine).count, 7)
        XCTAssertTrue(try subjectNames(targetEngine).isDisjoint(with: try subjectNames(sourceEngine)))
        XCTAssertFalse(try targetEngine.keyVault.allKeys().contains { String(decoding: $0.bytes, as: UTF8.self).contains("u1") })
    }

    func testDeterministicValuesStayDeterministicPerSubject() throws {
        let plain = [user(1, "u1", ssn: "111"), user(2, "u1", ssn: "111"), user(3, "u2", ssn: "111"), user(4, "u1", ssn: "222")]
        let sealed = try sourceProtector.protect(batch: plain, database: "shop", collection: "users")
        let r = reprotector()
        // Twice, in two batches: the same subject and plaintext give the same target ciphertext.
        let out = try r.reprotect(batch: Array(sealed[0..<2]), database: "shop", collection: "users").map(\.0)
            + r.reprotect(batch: Array(sealed[2...]), database: "shop", collection: "users").map(\.0)
        XCTAssertEqual(out[0]["ssn"], out[1]["ssn"], "same subject, same value: same ciphertext")
        XCTAssertNotEqual(out[0]["ssn"], sealed[0]["ssn"], "not the source's ciphertext")
        XCTAssertNotEqual(out[0]["ssn"], out[2]["ssn"], "another subject: another key")
        XCTAssertNotEqual(out[0]["ssn"], out[3]["ssn"], "another value")
        XCTAssertNotEqual(out[0]["name"], out[1]["name"], "random stays random")
        XCTAssertEqual(try targetEngine.decrypt(out[2]["ssn"]!), "111")
        // And equal to what a backup under the target keys would have written.
        let direct = try DocumentProtector(rules: Self.rules, engine: targetEngine).protect(plain[1], database: "shop", collection: "users")
        XCTAssertEqual(direct["ssn"], out[1]["ssn"])
        XCTAssertEqual(direct["email"], out[1]["email"])
    }

    /// An erased subject (its data key deleted from the source vault) stays erased: its
    /// values are kept byte for byte, under the old key id, which the target vault does not have.
    func testUndecryptableValuesStayByteIdenticalAndUnreadable() throws {
        let plain = [user(1, "kept"), user(2, "gone"), user(3, "kept")]
        let sealed = try sourceProtector.protect(batch: plain, database: "shop", collection: "users")
        let goneName = try sourceProtector.subjectKeyName("gone")
        let erasedVault = try FileKeyVault.create(at: folder + "/source-vault-erased")
        try erasedVault.insert(contentsOf: try sourceEngine.keyVault.allKeys().filter { !(try DataKeyInfo($0).altNames.contains(goneName)) })
        XCTAssertEqual(erasedVault.count, try sourceEngine.keyVault.allKeys().count - 1)
        let erasedEngine = try MongoCryptEngine(kmsProviders: [sourceEngine.provider(named: "local")!], keyVault: erasedVault)

        let results = try reprotector(sourceEngine: erasedEngine).reprotect(batch: sealed, database: "shop", collection: "users")
        let (gone, failures) = results[1]
        XCTAssertEqual(gone.bytes, sealed[1].bytes, "the erased subject's document is byte-identical")
        XCTAssertEqual(Set(failures.map(\.path)), ["ssn", "email", "name", "address", "orders.0.card"])
        XCTAssertTrue(failures.allSatisfy { $0.reason == "data key not in the key vault" })
        XCTAssertFalse(failures.map(\.description).joined().contains("CANARY"))
        guard case .keyNotFound? = expectFieldCryptoError({ try targetEngine.decrypt(gone["ssn"]!) }) else {
            return XCTFail("the target keys must not open an erased value")
        }
        XCTAssertEqual(LenientDecryptor(engine: targetEngine).decrypt(gone).1.count, 5, "nothing readable with the target keys")
        // The other subjects are re-keyed as usual.
        XCTAssertEqual(results[0].1, [])
        XCTAssertEqual(try targetEngine.decryptDocument(results[0].0).bytes, plain[0].bytes)
        XCTAssertEqual(try targetEngine.decryptDocument(results[2].0).bytes, plain[2].bytes)

        // A document with one value that cannot be opened and others that can: the first stays,
        // the others are re-keyed.
        let mixed = sealed[0].setting("note", sealed[1]["ssn"]!)
        let (out, f) = try reprotector(sourceEngine: erasedEngine).reprotect(batch: [mixed], database: "shop", collection: "users")[0]
        XCTAssertEqual(f.map(\.path), ["note"])
        XCTAssertEqual(out["note"], sealed[1]["ssn"], "byte-identical")
        XCTAssertTrue(Set(keyIds(out["ssn"]!)).isSubset(of: try vaultIds(targetEngine)))

        // The same for an event.
        let event = Document(["_id": ["_data": "82"], "operationType": "insert", "ns": ["db": "shop", "coll": "users"],
                              "documentKey": ["_id": 2], "fullDocument": .document(sealed[1])])
        let (e, ef) = try reprotector(sourceEngine: erasedEngine).reprotectEvent(event)
        XCTAssertEqual(e.bytes, event.bytes)
        XCTAssertEqual(ef.count, 5)
    }

    func event(_ type: String, id: Int32, _ extra: KeyValuePairs<String, BSONValue>) -> Document {
        var b = DocumentBuilder()
        b.append("_id", ["_data": .string("82-\(type)-\(id)")])
        b.append("operationType", .string(type))
        b.append("clusterTime", .timestamp(Timestamp(t: 1_700_000_000, i: UInt32(id))))
        b.append("ns", ["db": "shop", "coll": "users"])
        b.append("documentKey", ["_id": .int32(id)])
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func testChangeEventsAreReprotected() throws {
        let full = user(1, "u1")
        let events = [
            event("insert", id: 1, ["fullDocument": .document(full)]),
            event("update", id: 1, ["fullDocument": .document(full.setting("ssn", "999-CANARY")),
                                    "updateDescription": ["updatedFields": ["ssn": "999-CANARY", "visits": 2, "orders.0.card": "4111-CANARY-9"],
                                                          "removedFields": [], "truncatedArrays": []]]),
            event("replace", id: 1, ["fullDocument": .document(user(1, "u1", email: "new-CANARY@example.com"))]),
            event("delete", id: 1, [:]),
            // Deleted before the capture read it: the source dropped the protected entry.
            event("update", id: 5, ["updateDescription": ["updatedFields": ["ssn": "CANARY", "visits": 3], "removedFields": []]]),
        ]
        let sealed = try events.map { try sourceProtector.protectEvent($0) }
        XCTAssertEqual(sealed[4]["updateDescription"]?.documentValue?["ciphertailDroppedFields"], .int32(1))
        let r = reprotector()
        let targetKeys = { try self.vaultIds(self.targetEngine) }
        for (i, (s, original)) in zip(sealed, events).enumerated() {
            let (out, failures) = try r.reprotectEvent(s)
            XCTAssertEqual(failures, [], "event \(i)")
            XCTAssertEqual(out.keys, s.keys, "event \(i)")
            XCTAssertFalse(String(decoding: out.bytes, as: UTF8.self).contains("CANARY"), "event \(i): no plaintext")
            XCTAssertEqual(keyIds(.document(out)).count, keyIds(.document(s)).count, "event \(i): as many sealed values")
            XCTAssertTrue(Set(keyIds(.document(out))).isSubset(of: try targetKeys()), "event \(i)")
            // Opened with the target keys, the event is the source's opened with the source keys.
            XCTAssertEqual(try targetEngine.decryptDocument(out).bytes, try sourceEngine.decryptDocument(s).bytes, "event \(i)")
            XCTAssertEqual(LenientDecryptor(engine: sourceEngine).decrypt(out).0.bytes, out.bytes, "event \(i): the source keys open nothing")
            if i < 4 { XCTAssertEqual(out["documentKey"], original["documentKey"]) }
        }
        let update = try r.reprotectEvent(sealed[1]).0
        let fields = try XCTUnwrap(update["updateDescription"]?.documentValue?["updatedFields"]?.documentValue)
        XCTAssertEqual(fields.keys, ["ssn", "visits", "orders.0.card"])
        XCTAssertEqual(try targetEngine.decrypt(fields["ssn"]!), "999-CANARY")
        XCTAssertEqual(fields["visits"], 2)
        XCTAssertEqual(fields["ssn"], try r.reprotect(batch: [try sourceProtector.protect(full.setting("ssn", "999-CANARY"), database: "shop", collection: "users")],
                                                    database: "shop", collection: "users")[0].0["ssn"],
                       "deterministic: the event's value equals the document's")
        let delete = try r.reprotectEvent(sealed[3]).0
        XCTAssertEqual(delete.bytes, events[3].bytes, "nothing to re-key in a delete")
        let orphan = try r.reprotectEvent(sealed[4]).0
        XCTAssertEqual(orphan["updateDescription"]?.documentValue?["ciphertailDroppedFields"], .int32(1), "the source's count is kept")
        XCTAssertEqual(orphan["updateDescription"]?.documentValue?["updatedFields"], ["visits": 3])
    }

    func testRefusesToWriteInClearWhatTheSourceEncrypted() throws {
        let sealed = try sourceProtector.protect(batch: [user(7, "u7")], database: "shop", collection: "users")
        let fewer = [ProtectionRule(namespace: "shop.users", key: .perSubject(field: "userId", onMissing: .fallback("anon")),
                                    fields: Self.fields.filter { $0.path != "email" })]
        XCTAssertThrowsError(try reprotector(rules: fewer).reprotect(batch: sealed, database: "shop", collection: "users")) { e in
            XCTAssertEqual(e as? RekeyError, .wouldExposePlaintext(namespace: "shop.users", id: "7", path: "email"))
            XCTAssertFalse("\(e)".contains("CANARY"))
        }
        let insert = try sourceProtector.protectEvent(event("insert", id: 7, ["fullDocument": .document(user(7, "u7"))]))
        XCTAssertThrowsError(try reprotector(rules: []).reprotectEvent(insert)) { e in
            XCTAssertEqual(e as? RekeyError, .wouldExposePlaintext(namespace: "shop.users", id: "7", path: "fullDocument.ssn"))
        }
        // More fields in the target than in the source: fine, they get encrypted too.
        let more = [ProtectionRule(namespace: "shop.users", key: .named("users"), fields: Self.fields + [.init(path: "visits", algorithm: .random)])]
        let (out, _) = try reprotector(rules: more).reprotect(batch: sealed, database: "shop", collection: "users")[0]
        XCTAssertEqual(try targetEngine.decrypt(out["visits"]!), .int32(7))
    }

    func testAKeyVaultSharedWithTheSourceIsRefused() throws {
        try reprotector().checkSeparateKeyVaults()
        _ = try sourceProtector.protect(user(1, "u1"), database: "shop", collection: "users")
        let copy = try MongoCryptEngine(kmsProviders: [sourceEngine.provider(named: "local")!],
                                        keyVault: try FileKeyVault.open(at: folder + "/source-vault"))
        let r = Reprotector(source: LenientDecryptor(engine: sourceEngine), target: DocumentProtector(rules: Self.rules, engine: copy))
        XCTAssertThrowsError(try r.checkSeparateKeyVaults()) { e in
            guard case .sharedDataKeys(let n, _)? = e as? RekeyError else { return XCTFail("\(e)") }
            XCTAssertEqual(n, 2, "the subject-hash key and u1's key")
        }
    }

    func testTheSameKeyVaultIsRecognisedHoweverItIsWritten() throws {
        let vault = folder + "/source-vault"
        XCTAssertEqual(symlink(vault, folder + "/link"), 0)
        XCTAssertTrue(KeySource.file(vault).isSameVault(as: .file(folder + "/./link")))
        XCTAssertTrue(KeySource.file(vault).isSameVault(as: .file(folder + "/../" + (folder as NSString).lastPathComponent + "/source-vault")))
        XCTAssertFalse(KeySource.file(vault).isSameVault(as: .file(folder + "/target-vault")))
        let a = try KeySource.parse("mongodb://h1:27017,h2:27018/?replicaSet=rs0", namespace: "enc.__keyVault")
        let b = try KeySource.parse("mongodb://user:pw@H2:27018,h1/enc.__keyVault?tls=true")
        XCTAssertTrue(a.isSameVault(as: b), "same hosts (any order, default port), same namespace")
        XCTAssertFalse(a.isSameVault(as: try KeySource.parse("mongodb://h1:27017,h2:27018/other.__keyVault")))
        XCTAssertFalse(a.isSameVault(as: try KeySource.parse("mongodb://h3:27017/enc.__keyVault")))
        XCTAssertFalse(a.isSameVault(as: .file(vault)))
    }
}
