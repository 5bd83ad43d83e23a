import BSON
import FieldCrypto
import Foundation
import XCTest

final class MongoCryptEngineTests: XCTestCase {
    var masterKey: LocalMasterKey!
    var vault: InMemoryKeyVault!
    var engine: MongoCryptEngine!
    var keyA: UUID!
    var keyB: UUID!

    override func setUpWithError() throws {
        masterKey = try randomMasterKey()
        vault = try InMemoryKeyVault()
        engine = try MongoCryptEngine(localMasterKey: masterKey, keyVault: vault)
        keyA = try DataKeyInfo(engine.createDataKey(keyAltNames: ["alpha"])).id
        keyB = try DataKeyInfo(engine.createDataKey(keyAltNames: ["beta"])).id
    }

    func testLibraryVersion() {
        XCTAssertEqual(MongoCrypt.version, "1.7.2")
    }

    func testDataKeyDocumentHasTheCSFLEFields() throws {
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let key = try engine.createDataKey(keyAltNames: ["one", "two"])
        let after = Int64(Date().timeIntervalSince1970 * 1000)
        print("data key fields:", key.elements.map { "\($0.key):\(String(format: "0x%02x", $0.value.typeCode))" })

        XCTAssertEqual(Set(key.keys), ["_id", "keyAltNames", "keyMaterial", "creationDate", "updateDate", "status", "masterKey"])
        guard case .binary(4, let id)? = key["_id"] else { return XCTFail("_id is not binary subtype 4") }
        XCTAssertEqual(id.count, 16)
        XCTAssertEqual(id[6] >> 4, 4, "a random (version 4) UUID")
        XCTAssertEqual(Set(key["keyAltNames"]?.arrayValue ?? []), ["one", "two"])
        guard case .binary(0, let material)? = key["keyMaterial"] else { return XCTFail("keyMaterial is not binary subtype 0") }
        // 96-byte data key, wrapped with AEAD_AES_256_CBC_HMAC_SHA_512: IV 16 + 112 padded + HMAC 32.
        XCTAssertEqual(material.count, 160)
        XCTAssertEqual(key["masterKey"], .document(["provider": "local"]))
        guard case .datetime(let created)? = key["creationDate"], case .datetime(let updated)? = key["updateDate"] else {
            return XCTFail("dates are not BSON datetimes")
        }
        XCTAssertEqual(created, updated)
        XCTAssert((before - 1000)...(after + 1000) ~= created)
        XCTAssertEqual(key["status"]?.int64Value, 0)

        // It went into the vault, and into nothing else.
        XCTAssertEqual(try vault.allKeys().count, 3)
        XCTAssertEqual(try vault.keys(matching: KeyVaultQuery(altNames: ["two"])).map(\.bytes), [key.bytes])
        XCTAssertEqual(try vault.keys(matching: KeyVaultQuery(ids: [UUID(keyIdBytes: id)!])).map(\.bytes), [key.bytes])
        // Two different keys never share key material.
        XCTAssertNotEqual(try vault.keys(matching: KeyVaultQuery(ids: [keyA])).first?["keyMaterial"], key["keyMaterial"])
    }

    func testRoundTripOfEveryRequestedType() throws {
        let values: [(String, BSONValue, deterministicAllowed: Bool)] = [
            ("string", .string("hello, wörld"), true),
            ("empty string", .string(""), true),
            ("int32", .int32(-42), true),
            ("int64", .int64(Int64.max - 7), true),
            ("document", .document(["a": 1, "nested": ["b": "c", "arr": [1, 2, 3]]]), false),
            ("array", .array(["x", 2, .int64(3), ["y": true]]), false),
            ("binary", .binary(subtype: 0, data: Array(0...255)), true),
            ("uuid binary", .binary(subtype: 4, data: Array(repeating: 0xAB, count: 16)), true),
            ("date", .datetime(1_700_000_000_123), true),
        ]
        for (name, value, deterministicAllowed) in values {
            for algorithm in [EncryptionAlgorithm.random, .deterministic] where algorithm == .random || deterministicAllowed {
                let ct = try engine.encrypt(value, keyId: keyA, algorithm: algorithm)
                XCTAssertEqual(ct.binarySubtype, 6, name)
                XCTAssertNotEqual(ct, value, name)
                XCTAssertEqual(try engine.decrypt(ct), value, "\(name) \(algorithm)")
                // The original BSON type is byte 17 of the payload.
                XCTAssertEqual(ct.binaryBytes?[17], value.typeCode, name)
            }
        }
    }

    func testDeterministicAndRandomBehaviour() throws {
        let v: BSONValue = "123-45-6789"
        let d1 = try engine.encrypt(v, keyId: keyA, algorithm: .deterministic)
        let d2 = try engine.encrypt(v, keyId: keyA, algorithm: .deterministic)
        let d3 = try engine.encrypt(v, keyAltName: "alpha", algorithm: .deterministic)
        XCTAssertEqual(d1, d2)
        XCTAssertEqual(d1, d3, "the alt name selects the same key")
        XCTAssertNotEqual(d1, try engine.encrypt("123-45-6780", keyId: keyA, algorithm: .deterministic))
        let other = try engine.encrypt(v, keyId: keyB, algorithm: .deterministic)
        XCTAssertNotEqual(d1.binaryBytes.map { Array($0.dropFirst(17)) }, other.binaryBytes.map { Array($0.dropFirst(17)) })

        let r1 = try engine.encrypt(v, keyId: keyA, algorithm: .random)
        let r2 = try engine.encrypt(v, keyId: keyA, algorithm: .random)
        XCTAssertNotEqual(r1, r2)
        XCTAssertNotEqual(r1, d1)
        XCTAssertEqual(try engine.decrypt(r1), v)
        XCTAssertEqual(try engine.decrypt(r2), v)
        XCTAssertEqual(try engine.decrypt(other), v)
    }

    func testCiphertextIsTheCSFLEFormat() throws {
        let plaintext = Array("twenty bytes exactly".utf8)
        XCTAssertEqual(plaintext.count, 20)
        for (algorithm, marker) in [(EncryptionAlgorithm.deterministic, UInt8(1)), (.random, 2)] {
            let ct = try engine.encrypt(.string(String(decoding: plaintext, as: UTF8.self)), keyAltName: "beta", algorithm: algorithm)
            guard case .binary(6, let blob) = ct else { return XCTFail("not subtype 6") }
            XCTAssertEqual(blob[0], marker)
            XCTAssertEqual(Array(blob[1...16]), keyB.keyIdBytes, "bytes 1...16 are the data key's UUID")
            XCTAssertEqual(blob[17], 0x02, "original BSON type: string")
            // Then IV (16) + AES-256-CBC of the BSON string value (4-byte length + 20 + NUL = 25,
            // padded to 32) + HMAC-SHA-512 truncated to 32 bytes.
            XCTAssertEqual(blob.count, 18 + 16 + 32 + 32)
            XCTAssertNil(blob.firstRange(of: plaintext), "no plaintext in the ciphertext")
        }
    }

    func testDecryptDocumentDecryptsNestedValuesAndKeepsOtherBytes() throws {
        // Every BSON type around the encrypted values, including ones whose bytes a sloppy
        // re-encoding would change (-0.0, a NaN payload, a NUL inside a string).
        let nan = Double(bitPattern: 0x7FF8_0000_0000_0BAD)
        func plain(_ secret: BSONValue, _ inner: BSONValue, _ element: BSONValue) -> Document {
            [
                "_id": .objectId(ObjectId(bytes: Array(1...12))),
                "z": .double(-0.0), "nan": .double(nan), "s": .string("a\u{0}b"),
                "secret": secret,
                "nested": ["keep": .decimal128(low: 1, high: 0x3040_0000_0000_0000), "inner": inner,
                           "deeper": ["list": [.int32(1), element, .regex(pattern: "^a", options: "i")]]],
                "ts": .timestamp(Timestamp(t: 9, i: 3)), "min": .minKey, "code": .codeWithScope(code: "f()", scope: ["x": 1]),
                "last": .null,
            ]
        }
        let secret: BSONValue = "top secret"
        let inner: BSONValue = .int64(77)
        let element: BSONValue = ["card": "4111 1111 1111 1111"]
        let original = plain(secret, inner, element)
        let encrypted = try plain(
            engine.encrypt(secret, keyId: keyA, algorithm: .deterministic),
            engine.encrypt(inner, keyId: keyB, algorithm: .random),
            engine.encrypt(element, keyAltName: "alpha", algorithm: .random))
        XCTAssertNotEqual(encrypted.bytes, original.bytes)

        let decrypted = try engine.decryptDocument(encrypted)
        XCTAssertEqual(decrypted.bytes, original.bytes, "byte-identical to the document before encryption")
        XCTAssertEqual(decrypted.value(atPath: "nested.inner"), inner)
        XCTAssertEqual(decrypted.keys, original.keys)

        // Nothing encrypted: the very same bytes come back.
        XCTAssertEqual(try engine.decryptDocument(original).bytes, original.bytes)
    }

    func testTamperedCiphertextFailsAuthentication() throws {
        let value: BSONValue = "do not return garbage"
        for algorithm in [EncryptionAlgorithm.deterministic, .random] {
            guard case .binary(6, let blob) = try engine.encrypt(value, keyId: keyA, algorithm: algorithm) else {
                return XCTFail("not subtype 6")
            }
            // 17: original type (authenticated data); 20: IV; 40: body; last: HMAC.
            for position in [17, 20, 40, blob.count - 33, blob.count - 1] {
                var bad = blob
                bad[position] ^= 0x01
                let e = expectFieldCryptoError { try engine.decrypt(.binary(subtype: 6, data: bad)) }
                guard case .authenticationFailed(_, let message)? = e else {
                    XCTFail("byte \(position): expected an authentication failure, got \(String(describing: e))")
                    continue
                }
                XCTAssertEqual(message, "HMAC validation failure")
                XCTAssertFalse(e!.description.contains("garbage"))
                // Same through the whole-document path.
                let doc: Document = ["a": 1, "x": .binary(subtype: 6, data: bad)]
                guard case .authenticationFailed? = expectFieldCryptoError({ try engine.decryptDocument(doc) }) else {
                    XCTFail("decryptDocument, byte \(position): expected an authentication failure")
                    continue
                }
            }
        }
    }

    func testMissingKeyErrorNamesTheKeyAndNoPlaintext() throws {
        let ct = try engine.encrypt("Plaintext-Canary-9f3a", keyId: keyA, algorithm: .random)
        let emptyVault = try InMemoryKeyVault()
        let other = try MongoCryptEngine(localMasterKey: masterKey, keyVault: emptyVault)

        let e = expectFieldCryptoError { try other.decrypt(ct) }
        print("missing key:", e.map(String.init(describing:)) ?? "-")
        guard case .keyNotFound(let ids, let names, let message)? = e else { return XCTFail("expected keyNotFound") }
        XCTAssertEqual(ids, [keyA])
        XCTAssertEqual(names, [])
        XCTAssertEqual(message, "not all keys requested were satisfied")
        XCTAssert(e!.description.contains(keyA.uuidString.lowercased()))
        XCTAssertFalse(e!.description.contains("Canary"))

        // Whole document: same error.
        guard case .keyNotFound([keyA], _, _)? = expectFieldCryptoError({ try other.decryptDocument(["f": ct]) }) else {
            return XCTFail("expected keyNotFound")
        }
        // Encrypting with unknown id or alt name names them too.
        let ghost = UUID()
        guard case .keyNotFound([ghost], [], _)? = expectFieldCryptoError({ try engine.encrypt("Plaintext-Canary", keyId: ghost, algorithm: .random) }) else {
            return XCTFail("expected keyNotFound for an unknown id")
        }
        let byName = expectFieldCryptoError { try engine.encrypt("Plaintext-Canary", keyAltName: "nobody", algorithm: .random) }
        guard case .keyNotFound([], ["nobody"], _)? = byName else { return XCTFail("expected keyNotFound for an unknown alt name") }
        XCTAssert(byName!.description.contains("\"nobody\""))
        XCTAssertFalse(byName!.description.contains("Canary"))
    }

    func testWrongMasterKeyFailsClearly() throws {
        let ct = try engine.encrypt("Plaintext-Canary", keyId: keyA, algorithm: .deterministic)
        let wrong = try MongoCryptEngine(localMasterKey: randomMasterKey(), keyVault: vault)
        let e = expectFieldCryptoError { try wrong.decrypt(ct) }
        print("wrong master key:", e.map(String.init(describing:)) ?? "-")
        guard case .masterKeyMismatch(let id, _)? = e else { return XCTFail("expected masterKeyMismatch") }
        XCTAssertEqual(id, keyA)
        XCTAssert(e!.description.contains("master key"))
        XCTAssertFalse(e!.description.contains("Canary"))
        guard case .masterKeyMismatch(keyB, _)? = expectFieldCryptoError({ try wrong.encrypt("x", keyAltName: "beta", algorithm: .random) }) else {
            return XCTFail("expected masterKeyMismatch when encrypting")
        }
    }

    func testDeterministicEncryptionOfADoubleIsRefused() throws {
        let e = expectFieldCryptoError { try engine.encrypt(.double(3.14159), keyId: keyA, algorithm: .deterministic) }
        print("deterministic double:", e.map(String.init(describing:)) ?? "-")
        guard case .library(_, .client, _, let message)? = e else { return XCTFail("expected a libmongocrypt client error") }
        XCTAssertEqual(message, "BSON type invalid for deterministic encryption")
        XCTAssertFalse(e!.description.contains("3.14"))
        // Random may encrypt it.
        let ct = try engine.encrypt(.double(3.14159), keyId: keyA, algorithm: .random)
        XCTAssertEqual(try engine.decrypt(ct), .double(3.14159))
        // Some types no algorithm may encrypt, nor an already encrypted value.
        guard case .library(_, _, _, "BSON type invalid for encryption")? = expectFieldCryptoError({ try engine.encrypt(.null, keyId: keyA, algorithm: .random) }) else {
            return XCTFail("null must be refused")
        }
        guard case .library? = expectFieldCryptoError({ try engine.encrypt(ct, keyId: keyA, algorithm: .random) }) else {
            return XCTFail("subtype 6 must be refused")
        }
    }

    func testDecryptRefusesValuesThatAreNotCiphertext() {
        guard case .notEncrypted(0x02)? = expectFieldCryptoError({ try engine.decrypt("plain") }) else { return XCTFail() }
        guard case .notEncrypted(0x05)? = expectFieldCryptoError({ try engine.decrypt(.binary(subtype: 0, data: [1])) }) else { return XCTFail() }
        XCTAssertNotNil(expectFieldCryptoError { try engine.decrypt(.binary(subtype: 6, data: [1, 2, 3])) })
    }

    func testKeyVaultFilterShape() throws {
        let recording = RecordingKeyVault(vault)
        let e = try MongoCryptEngine(localMasterKey: masterKey, keyVault: recording)
        let ct = try e.encrypt("x", keyId: keyA, algorithm: .random)
        _ = try e.encrypt("x", keyAltName: "beta", algorithm: .random)
        let cold = try MongoCryptEngine(localMasterKey: masterKey, keyVault: recording)
        _ = try cold.decryptDocument(["a": ct, "b": try e.encrypt("y", keyId: keyB, algorithm: .random)])
        for q in recording.queries { print("key vault filter:", q.filter.canonicalJSON) }

        let queries = recording.queries
        XCTAssertEqual(queries.count, 3, "later lookups come from libmongocrypt's key cache")
        XCTAssertEqual(queries[0].ids, [keyA])
        XCTAssertEqual(queries[0].altNames, [])
        XCTAssertEqual(queries[1].ids, [])
        XCTAssertEqual(queries[1].altNames, ["beta"])
        XCTAssertEqual(Set(queries[2].ids), [keyA, keyB])
        // The exact shape, both clauses always present.
        let expected = try Document(json: """
            {"$or": [{"_id": {"$in": [{"$binary": {"base64": "\(Data(keyA.keyIdBytes).base64EncodedString())", "subType": "04"}}]}},
                     {"keyAltNames": {"$in": []}}]}
            """)
        XCTAssertEqual(queries[0].filter.bytes, expected.bytes)
        XCTAssertEqual(KeyVaultQuery(ids: [keyA]).filter.bytes, expected.bytes)
    }

    func testKeyVaultFilterParserRefusesOtherShapes() throws {
        let id = UUID()
        let q = try KeyVaultQuery(filter: ["_id": ["$in": [.binary(subtype: 4, data: id.keyIdBytes)]]])
        XCTAssertEqual(q.ids, [id])
        for bad: Document in [
            ["$and": []],
            ["$or": [["status": ["$in": [1]]]]],
            ["$or": [["_id": ["$eq": .binary(subtype: 4, data: id.keyIdBytes)]]]],
            ["$or": [["_id": ["$in": [.binary(subtype: 3, data: id.keyIdBytes)]]]]],
            ["$or": [["keyAltNames": ["$in": [1]]]]],
        ] {
            guard case .unsupportedKeyVaultFilter? = expectFieldCryptoError({ try KeyVaultQuery(filter: bad) }) else {
                return XCTFail("\(bad) should be refused")
            }
        }
    }

    func testConcurrentUseOfOneEngine() throws {
        let values = (0..<200).map { BSONValue.string("value \($0)") }
        let results = UnsafeMutableBufferPointer<BSONValue?>.allocate(capacity: values.count)
        defer { results.deallocate() }
        results.initialize(repeating: nil)
        let engine = self.engine!, keyA = self.keyA!, keyB = self.keyB!
        DispatchQueue.concurrentPerform(iterations: values.count) { i in
            let alg: EncryptionAlgorithm = i % 2 == 0 ? .random : .deterministic
            let ct = try? engine.encrypt(values[i], keyId: i % 3 == 0 ? keyA : keyB, algorithm: alg)
            results[i] = ct.flatMap { try? engine.decrypt($0) }
        }
        XCTAssertEqual(Array(results), values.map { Optional($0) })
    }

    /// Prints the explicit-encryption rate; asserts nothing about time.
    func testMeasureEncryptionRate() throws {
        let value: BSONValue = "abcdefghijklmnopqrst"  // 20 bytes
        for algorithm in [EncryptionAlgorithm.deterministic, .random] {
            _ = try engine.encrypt(value, keyId: keyA, algorithm: algorithm)  // key now cached
            var n = 0
            var last: BSONValue = .null
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed: UInt64 = 0
            while elapsed < 2_000_000_000 {
                for _ in 0..<500 { last = try engine.encrypt(value, keyId: keyA, algorithm: algorithm) }
                n += 500
                elapsed = DispatchTime.now().uptimeNanoseconds - start
            }
            let rate = Double(n) / (Double(elapsed) / 1e9)
            print(String(format: "encryption rate (%@, 20-byte string, one thread): %.0f/s (%d in %.2f s)",
                         algorithm == .deterministic ? "deterministic" : "random", rate, n, Double(elapsed) / 1e9))
            XCTAssertEqual(try engine.decrypt(last), value)
        }
        let ct = try engine.encrypt(value, keyId: keyA, algorithm: .random)
        var n = 0
        let start = DispatchTime.now().uptimeNanoseconds
        while DispatchTime.now().uptimeNanoseconds - start < 1_000_000_000 {
            for _ in 0..<500 { _ = try engine.decrypt(ct) }
            n += 500
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "decryption rate (20-byte string, one thread): %.0f/s", Double(n) / secs))
    }
}
