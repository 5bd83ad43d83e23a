import BSON
import Digest
@testable import FieldCrypto
import Mongo
import XCTest

final class KeySourceTests: XCTestCase {
    func testPathsURIsAndNamespaces() throws {
        XCTAssertEqual(try KeySource.parse("/var/lib/ct/keyvault"), .file("/var/lib/ct/keyvault"))
        guard case .collection(let c1, let ns1) = try KeySource.parse("mongodb://kv1,kv2/?replicaSet=keys") else { return XCTFail() }
        XCTAssertEqual(c1.text, "mongodb://kv1,kv2/?replicaSet=keys")
        XCTAssertEqual(ns1, Namespace(database: "encryption", collection: "__keyVault"), "drivers' default")
        guard case .collection(let c2, let ns2) = try KeySource.parse("mongodb://u:p@kv1/vaults.keys?replicaSet=keys&tls=true") else { return XCTFail() }
        XCTAssertEqual(c2.text, "mongodb://u:p@kv1/?replicaSet=keys&tls=true", "the namespace is taken out of the URI path")
        XCTAssertEqual(ns2, Namespace(database: "vaults", collection: "keys"))
        guard case .collection(_, let ns3) = try KeySource.parse("mongodb://kv1/admin", namespace: "a.b") else { return XCTFail() }
        XCTAssertEqual(ns3, Namespace(database: "a", collection: "b"), "a bare database in the path stays the auth database")
        XCTAssertNotNil(expectFieldCryptoError { try KeySource.parse("mongodb://kv1/x.y", namespace: "a.b") }, "two different namespaces")
        XCTAssertNotNil(expectFieldCryptoError { try KeySource.parse("mongodb://kv1/", namespace: "nodot") })
        XCTAssertFalse(try KeySource.parse("mongodb://u:secret@kv1/a.b").description.contains("secret"), "descriptions hide passwords")
    }
}

final class HMACTests: XCTestCase {
    /// RFC 4231, test cases 1 and 2.
    func testKnownAnswers() {
        XCTAssertEqual(HMACSHA256(key: [UInt8](repeating: 0x0b, count: 20)).authenticate(Array("Hi There".utf8)).hexString,
                       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        let jefe = HMACSHA256(key: Array("Jefe".utf8))
        XCTAssertEqual(jefe.authenticate(Array("what do ya want for nothing?".utf8)).hexString,
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertEqual(jefe.authenticate(Array("what do ya want for nothing?".utf8)), jefe.authenticate(Array("what do ya want for nothing?".utf8)),
                       "the keyed context is reusable")
    }
}

final class BatchDecryptionTests: XCTestCase {
    /// Batched decryption gives what document-by-document decryption gives, failures included:
    /// plaintext documents, sealed ones, and one under a key the vault does not have.
    func testBatchMatchesOneByOneIncludingFailures() throws {
        let vault = try InMemoryKeyVault()
        let engine = try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: vault)
        let keyA = try DataKeyInfo(engine.createDataKey(keyAltNames: ["a"])).id
        let keyB = try DataKeyInfo(engine.createDataKey(keyAltNames: ["b"])).id
        var docs: [Document] = []
        for i in 0..<40 {
            if i % 5 == 0 { docs.append(["_id": .int32(Int32(i)), "plain": "no ciphertext"]); continue }
            let key = i % 2 == 0 ? keyA : keyB
            docs.append(["_id": .int32(Int32(i)), "ssn": try engine.encrypt(.string("SECRET-\(i)"), keyId: key, algorithm: .deterministic),
                         "nested": ["list": [try engine.encrypt(.int32(Int32(i)), keyId: key, algorithm: .random)]]])
        }
        // A value under a key that is not in this vault (another engine's).
        let foreign = try MongoCryptEngine(localMasterKey: try randomMasterKey(), keyVault: try InMemoryKeyVault())
        let lost = try DataKeyInfo(foreign.createDataKey()).id
        docs[7] = docs[7].setting("extra", try foreign.encrypt(.string("LOST"), keyId: lost, algorithm: .random))

        let decryptor = LenientDecryptor(engine: engine)
        let batched = decryptor.decrypt(batch: docs, batchBytes: 2_000)  // several batches
        XCTAssertEqual(batched.count, docs.count)
        for (i, (doc, failures)) in batched.enumerated() {
            let one = decryptor.decrypt(docs[i])
            XCTAssertEqual(doc.bytes, one.0.bytes, "document \(i)")
            XCTAssertEqual(failures, one.1, "document \(i)")
            if i % 5 != 0 { XCTAssertEqual(doc["ssn"], .string("SECRET-\(i)")) }
        }
        XCTAssertEqual(batched[7].1.map(\.path), ["extra"], "the lost key is reported by field")
        XCTAssertEqual(batched[7].0["ssn"], "SECRET-7", "the rest of that document is still decrypted")
        XCTAssertEqual(batched[0].0, docs[0])
    }
}
