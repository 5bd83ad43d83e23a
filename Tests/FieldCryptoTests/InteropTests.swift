import BSON
import FieldCrypto
import Foundation
import XCTest

/// Known answers from MongoDB's client-side encryption specification tests
/// (mongodb/specifications, source/client-side-encryption/corpus): the public test master
/// key, the "local" data key document drivers insert, and ciphertexts every driver must
/// produce or read. Matching them shows the wire format is MongoDB's.
final class InteropTests: XCTestCase {
    static let specMasterKey = "Mng0NCt4ZHVUYUJCa1kxNkVyNUR1QURhZ2h2UzR2d2RrZzh0cFBwM3R6NmdWMDFBMUN3YkQ5aXRRMkhGRGdQV09wOGVNYUMxT2k3NjZKelhaQmRCZGJkTXVyZG9uSjFk"
    static let specKeyDocument = """
        {"status": {"$numberInt": "1"}, "_id": {"$binary": {"base64": "LOCALAAAAAAAAAAAAAAAAA==", "subType": "04"}},
         "masterKey": {"provider": "local"}, "updateDate": {"$date": {"$numberLong": "1557827033449"}},
         "keyMaterial": {"$binary": {"base64": "Ce9HSz/HKKGkIt4uyy+jDuKGA+rLC2cycykMo6vc8jXxqa1UVDYHWq1r+vZKbnnSRBfB981akzRKZCFpC05CTyFqDhXv6OnMjpG97OZEREGIsHEYiJkBW0jJJvfLLgeLsEpBzsro9FztGGXASxyxFRZFhXvHxyiLOKrdWfs7X1O/iK3pEoHMx6uSNSfUOgbebLfIqW7TO++iQS5g1xovXA==", "subType": "00"}},
         "creationDate": {"$date": {"$numberLong": "1557827033449"}}, "keyAltNames": ["local"]}
        """

    func ciphertext(_ base64: String) -> BSONValue { .binary(subtype: 6, data: [UInt8](Data(base64Encoded: base64)!)) }

    func testSpecCorpusCiphertextsMatch() throws {
        let master = try LocalMasterKey(bytes: [UInt8](Data(base64Encoded: Self.specMasterKey)!))
        let vault = try InMemoryKeyVault(keys: [Document(json: Self.specKeyDocument)])
        let engine = try MongoCryptEngine(localMasterKey: master, keyVault: vault)
        let keyId = UUID(keyIdBytes: [UInt8](Data(base64Encoded: "LOCALAAAAAAAAAAAAAAAAA==")!))!

        // local_string_det_explicit_id / _altname: deterministic, so we must produce it exactly.
        let expected = ciphertext("ASzggCwAAAAAAAAAAAAAAAACW0cZMYWOY3eoqQQkSdBtS9iHC4CSQA27dy6XJGcmTV8EDuhGNnPmbx0EKFTDb0PCSyCjMyuE4nsgmNYgjTaSuw==")
        XCTAssertEqual(try engine.encrypt("mongodb", keyId: keyId, algorithm: .deterministic), expected)
        XCTAssertEqual(try engine.encrypt("mongodb", keyAltName: "local", algorithm: .deterministic), expected)
        XCTAssertEqual(try engine.decrypt(expected), "mongodb")

        // Random ones written by drivers: we read them.
        XCTAssertEqual(try engine.decrypt(ciphertext("AizggCwAAAAAAAAAAAAAAAACQrel7aY52J4vOf3VDal8BaenE4V+vxD4kMFtHhwUXBCpG8bkqA1wGgSVAdzDY1ppCnWdoVhccow9zG4Qw0kmiA==")), "mongodb")
        XCTAssertEqual(try engine.decrypt(ciphertext("AizggCwAAAAAAAAAAAAAAAABoz1hSZBELRpiQgapKrLW0wLywVdglg/9sdSZVdDAIj8FSUzeSWrWa5ewvffQaPuKL4carJc/uPoVCT/fXk/ilg==")), .double(1.234))
        let doc = try engine.decryptDocument(["_id": "client_side_encryption_corpus", "local_object_rand_explicit_id": ciphertext("AizggCwAAAAAAAAAAAAAAAADoIQn146Z1oDJTiTZlKs/VD/iSSdn4c5uCCstUyBb/J4dP2++MTh5MZCGbUT1stnvJWmdKQ2/s8aeq8Ay/fXABw==")])
        XCTAssertEqual(doc["local_object_rand_explicit_id"], .document(["x": 1]))
    }
}
