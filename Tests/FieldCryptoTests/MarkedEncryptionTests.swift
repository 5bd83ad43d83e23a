import BSON
import FieldCrypto
import Foundation
import XCTest

/// `Marking` and `MongoCryptEngine.encryptMarked`, against the real libmongocrypt.
final class MarkedEncryptionTests: XCTestCase {
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

    // MARK: Marking

    func testMarkingIsTheFLE1PlaceholderLibmongocryptParses() throws {
        let m = Marking.make(value: "123-45-6789", key: .id(keyA), algorithm: .deterministic)
        guard case .binary(6, let data) = m else { return XCTFail("not binary subtype 6") }
        XCTAssertEqual(data[0], 0, "FLE1EncryptionPlaceholder")
        let inner = try Document(bytes: Array(data[1...]))
        XCTAssertEqual(Set(inner.keys), ["a", "ki", "v"])
        XCTAssertEqual(inner["a"], .int32(1))
        XCTAssertEqual(inner["ki"], .binary(subtype: 4, data: keyA.keyIdBytes))
        XCTAssertEqual(inner["v"], "123-45-6789")

        let r = Marking.make(value: .int64(7), key: .altName("beta"), algorithm: .random)
        guard case .binary(6, let rdata) = r else { return XCTFail("not binary subtype 6") }
        let rinner = try Document(bytes: Array(rdata[1...]))
        XCTAssertEqual(Set(rinner.keys), ["a", "ka", "v"])
        XCTAssertEqual(rinner["a"], .int32(2))
        XCTAssertEqual(rinner["ka"], "beta")

        XCTAssertEqual(try Marking.parse(m), Marking.Parsed(value: "123-45-6789", key: .id(keyA), algorithm: .deterministic))
        XCTAssertEqual(try Marking.parse(r), Marking.Parsed(value: .int64(7), key: .altName("beta"), algorithm: .random))
        XCTAssertNil(try Marking.parse("plain"))
        XCTAssertNil(try Marking.parse(try engine.encrypt("x", keyId: keyA, algorithm: .random)), "ciphertext is not a marking")
    }

    // MARK: encryptMarked

    /// A document with markings at the top level, in subdocuments, in arrays of
    /// subdocuments and in arrays of values, around values whose bytes a re-encoding would change.
    func document(_ i: Int, mark: (BSONValue, DataKeySelector, EncryptionAlgorithm) -> BSONValue) -> Document {
        let nan = Double(bitPattern: 0x7FF8_0000_0000_0BAD)
        return [
            "_id": .int32(Int32(i)),
            "ssn": mark(.string("123-45-\(String(format: "%04d", i))"), .id(keyA), .deterministic),
            "z": .double(-0.0), "nan": .double(nan), "s": .string("a\u{0}b"),
            "profile": [
                "name": mark(.string("Name \(i)"), .altName("beta"), .random),
                "deep": ["card": mark(.string("4111 1111 1111 \(1000 + i)"), .id(keyB), .deterministic), "keep": .decimal128(low: 5, high: 0x3040_0000_0000_0000)],
            ],
            "addresses": [
                ["street": mark(.string("\(i) Main St"), .altName("alpha"), .random), "zip": "12345"],
                ["street": mark(.int64(Int64(i) * 1_000_003), .id(keyB), .random), "zip": .null],
            ],
            "tags": ["plain", mark("secret tag", .id(keyA), .deterministic), .minKey],
            "code": .codeWithScope(code: "f()", scope: ["x": 1]),
            "ts": .timestamp(Timestamp(t: 9, i: 3)),
            "last": .null,
        ]
    }

    func marked(_ i: Int) -> Document { document(i) { Marking.make(value: $0, key: $1, algorithm: $2) } }
    func plain(_ i: Int) -> Document { document(i) { v, _, _ in v } }

    func testMarkingsAtEveryDepthAreEncryptedAndEverythingElseIsKept() throws {
        let input = (0..<5).map(marked)
        let run = try engine.encryptMarkedObservingStates(input)
        print("encryptMarked states (first batch):", run.states)
        XCTAssertEqual(run.states, ["NEED_MONGO_MARKINGS", "NEED_MONGO_KEYS", "READY", "DONE"])
        let again = try engine.encryptMarkedObservingStates(input)
        print("encryptMarked states (keys cached):", again.states)
        XCTAssertEqual(again.states, ["NEED_MONGO_MARKINGS", "READY", "DONE"])
        XCTAssertEqual(engine.cryptSharedLibraryVersionForTests, 0, "crypt_shared is not loaded")

        let output = run.documents
        XCTAssertEqual(output.count, input.count)
        for (i, out) in output.enumerated() {
            XCTAssertEqual(out.keys, input[i].keys, "field order")
            let paths = ["ssn", "profile.name", "profile.deep.card"]
            for p in paths {
                guard case .binary(6, let ct)? = out.value(atPath: p) else { return XCTFail("\(p) not encrypted") }
                XCTAssert(ct[0] == 1 || ct[0] == 2, "\(p): ciphertext, not a marking")
            }
            // Decrypting gives back the plain document, byte for byte: every unmarked value
            // (-0.0, the NaN payload, the NUL in a string, code with scope, ...) is unchanged.
            XCTAssertEqual(try engine.decryptDocument(out).bytes, plain(i).bytes, "document \(i)")
            // Markings of the algorithm and key asked for.
            guard case .binary(6, let ssn)? = out["ssn"], case .binary(6, let name)? = out.value(atPath: "profile.name") else { return XCTFail() }
            XCTAssertEqual(ssn[0], 1)
            XCTAssertEqual(Array(ssn[1...16]), keyA.keyIdBytes)
            XCTAssertEqual(name[0], 2)
            XCTAssertEqual(Array(name[1...16]), keyB.keyIdBytes, "beta is keyB")
            guard case .array(let tags)? = out["tags"], case .binary(6, let tag) = tags[1] else { return XCTFail("tags[1]") }
            XCTAssertEqual(tag[0], 1)
            XCTAssertEqual(tags[0], "plain")
            XCTAssertEqual(tags[2], .minKey)
        }
    }

    func testUnmarkedBytesAreIdentical() throws {
        // The same document with the marked fields removed before and after encryption.
        let input = [marked(7)]
        let out = try engine.encryptMarked(input)[0]
        let strip: (Document) -> Document = { d in
            d.removing(["ssn", "profile", "addresses", "tags"])
        }
        XCTAssertEqual(strip(out).bytes, strip(input[0]).bytes)
        // Only the marked elements differ: replacing the ciphertexts with the plaintexts
        // gives the plain document byte for byte (checked above through decryptDocument);
        // a document without markings comes back as the very same bytes.
        let unmarked = plain(3)
        XCTAssertEqual(try engine.encryptMarked([unmarked, unmarked]).map(\.bytes), [unmarked.bytes, unmarked.bytes])
        XCTAssertEqual(try engine.encryptMarked([]), [])
        // Existing ciphertext (not a marking) passes through untouched.
        let ct = try engine.encrypt("already", keyId: keyA, algorithm: .random)
        let mixed: Document = ["old": ct, "new": Marking.make(value: "fresh", key: .id(keyA), algorithm: .random)]
        let mixedOut = try engine.encryptMarked([mixed])[0]
        XCTAssertEqual(mixedOut["old"], ct)
        XCTAssertEqual(try engine.decryptDocument(mixedOut), ["old": "already", "new": "fresh"])
    }

    func testDeterministicResultsEqualTheExplicitAPIByteForByte() throws {
        let input = (0..<20).map(marked)
        let batched = try engine.encryptMarked(input)
        let explicit = try engine.encryptMarkedExplicitly(input)
        for i in input.indices {
            for p in ["ssn", "profile.deep.card"] {
                XCTAssertEqual(batched[i].value(atPath: p), explicit[i].value(atPath: p), "document \(i) \(p)")
            }
            guard case .array(let bt)? = batched[i]["tags"], case .array(let et)? = explicit[i]["tags"] else { return XCTFail() }
            XCTAssertEqual(bt[1], et[1])
            // And the same as one direct explicit call.
            XCTAssertEqual(batched[i]["ssn"], try engine.encrypt(.string("123-45-\(String(format: "%04d", i))"), keyId: keyA, algorithm: .deterministic))
            // Random ones differ but both decrypt to the original.
            XCTAssertNotEqual(batched[i].value(atPath: "profile.name"), explicit[i].value(atPath: "profile.name"))
            XCTAssertEqual(try engine.decryptDocument(batched[i]).bytes, plain(i).bytes)
            XCTAssertEqual(try engine.decryptDocument(explicit[i]).bytes, plain(i).bytes)
            // Same shape: same keys, same sizes.
            XCTAssertEqual(batched[i].bytes.count, explicit[i].bytes.count)
        }
    }

    func testRandomResultsDecryptToTheOriginal() throws {
        let values: [BSONValue] = ["text", .int32(-1), .int64(1 << 40), .double(2.5), .bool(true), .decimal128(low: 1, high: 2),
                                   ["nested": ["x": 1]], [1, "two", 3.0], .datetime(1_700_000_000_000), .binary(subtype: 0, data: [1, 2, 3])]
        let doc = Document(elements: values.enumerated().map { ("f\($0.offset)", Marking.make(value: $0.element, key: .id(keyB), algorithm: .random)) })
        let out = try engine.encryptMarked([doc])[0]
        for (i, v) in values.enumerated() {
            guard case .binary(6, let ct)? = out["f\(i)"] else { return XCTFail("f\(i) not encrypted") }
            XCTAssertEqual(ct[0], 2)
            XCTAssertEqual(ct[17], v.typeCode)
            XCTAssertEqual(try engine.decrypt(.binary(subtype: 6, data: ct)), v)
        }
    }

    func testMixedKeysByIdAndAltNameInOneBatch() throws {
        let recording = RecordingKeyVault(vault)
        let cold = try MongoCryptEngine(localMasterKey: masterKey, keyVault: recording)
        let docs: [Document] = [
            ["a": Marking.make(value: "x", key: .id(keyA), algorithm: .deterministic)],
            ["a": Marking.make(value: "x", key: .altName("alpha"), algorithm: .deterministic)],
            ["b": Marking.make(value: "y", key: .altName("beta"), algorithm: .random)],
            ["b": Marking.make(value: "y", key: .id(keyB), algorithm: .deterministic)],
        ]
        let out = try cold.encryptMarked(docs)
        XCTAssertEqual(out[0]["a"], out[1]["a"], "id and alt name select the same key")
        XCTAssertEqual(out[2]["b"]?.binaryBytes.map { Array($0[1...16]) }, keyB.keyIdBytes)
        XCTAssertEqual(out[3]["b"]?.binaryBytes.map { Array($0[1...16]) }, keyB.keyIdBytes)
        for (i, d) in out.enumerated() {
            XCTAssertEqual(try cold.decryptDocument(d).elements.first?.value, i < 2 ? "x" : "y")
        }
        print("key vault filters of one mixed batch:", recording.queries.map(\.filter.canonicalJSON))
        XCTAssertEqual(recording.queries.count, 1, "one key lookup for the whole batch")
        XCTAssertEqual(Set(recording.queries[0].ids), [keyA, keyB])
        XCTAssertEqual(Set(recording.queries[0].altNames), ["alpha", "beta"])
    }

    func testMissingKeyFailsNamingIt() throws {
        let ghost = UUID()
        let docs: [Document] = [
            ["ok": Marking.make(value: "Plaintext-Canary-1", key: .id(keyA), algorithm: .random)],
            ["bad": Marking.make(value: "Plaintext-Canary-2", key: .id(ghost), algorithm: .random)],
        ]
        let e = expectFieldCryptoError { try engine.encryptMarked(docs) }
        print("missing key (id):", e.map(String.init(describing:)) ?? "-")
        guard case .keyNotFound([ghost], [], _)? = e else { return XCTFail("expected keyNotFound for the id") }
        XCTAssert(e!.description.contains(ghost.uuidString.lowercased()))
        XCTAssertFalse(e!.description.contains("Canary"))

        let byName = expectFieldCryptoError {
            try engine.encryptMarked([["x": Marking.make(value: "Plaintext-Canary-3", key: .altName("nobody"), algorithm: .deterministic)]])
        }
        print("missing key (alt name):", byName.map(String.init(describing:)) ?? "-")
        guard case .keyNotFound([], ["nobody"], _)? = byName else { return XCTFail("expected keyNotFound for the alt name") }
        XCTAssert(byName!.description.contains("\"nobody\""))
        XCTAssertFalse(byName!.description.contains("Canary"))
        // The engine is still usable.
        XCTAssertEqual(try engine.encryptMarked([docs[0]]).count, 1)
    }

    func testForbiddenTypesFailClearly() throws {
        let docs: [Document] = [
            ["fine": Marking.make(value: "ok", key: .id(keyA), algorithm: .deterministic)],
            ["outer": ["list": [1, ["amount": Marking.make(value: .double(3.14159), key: .id(keyA), algorithm: .deterministic)]]]],
        ]
        let e = expectFieldCryptoError { try engine.encryptMarked(docs) }
        print("deterministic double:", e.map(String.init(describing:)) ?? "-")
        guard case .invalidArgument(let why)? = e else { return XCTFail("expected invalidArgument") }
        XCTAssert(why.contains("document 1, field \"outer.list.1.amount\""), why)
        XCTAssert(why.contains("double"), why)
        XCTAssert(why.contains("deterministic"), why)
        XCTAssertFalse(why.contains("3.14"))
        // The explicit fallback says the same.
        guard case .invalidArgument(let why2)? = expectFieldCryptoError({ try engine.encryptMarkedExplicitly(docs) }) else { return XCTFail() }
        XCTAssert(why2.contains("outer.list.1.amount"), why2)

        // Random takes a double; nothing takes null; nothing re-encrypts subtype 6.
        let r = try engine.encryptMarked([["d": Marking.make(value: .double(3.14159), key: .id(keyA), algorithm: .random)]])
        XCTAssertEqual(try engine.decryptDocument(r[0]), ["d": .double(3.14159)])
        for (value, expect) in [(BSONValue.null, "null"), (.minKey, "minKey"),
                                (try engine.encrypt("x", keyId: keyA, algorithm: .random), "subtype 6")] {
            guard case .invalidArgument(let w)? = expectFieldCryptoError({
                try engine.encryptMarked([["v": Marking.make(value: value, key: .id(keyA), algorithm: .random)]])
            }) else { return XCTFail("\(expect) must be refused") }
            XCTAssert(w.contains(expect), w)
        }
        // Malformed markings are refused with libmongocrypt's reasons.
        let noKey = Document(["a": .int32(1), "v": "x"])
        let bothKeys = Document(["a": .int32(1), "v": "x", "ki": .binary(subtype: 4, data: keyA.keyIdBytes), "ka": "alpha"])
        let badAlgorithm = Document(["a": .int32(3), "v": "x", "ka": "alpha"])
        let extra = Document(["a": .int32(1), "v": "x", "ka": "alpha", "zz": 1])
        let fle2: BSONValue = .binary(subtype: 6, data: [3] + noKey.bytes)
        for (bad, expect) in [(noKey, "neither 'ki' nor 'ka'"), (bothKeys, "both 'ki' and 'ka'"),
                              (badAlgorithm, "invalid algorithm value 3"), (extra, "unrecognized field 'zz'")] {
            guard case .invalidArgument(let w)? = expectFieldCryptoError({
                try engine.encryptMarked([["m": .binary(subtype: 6, data: [0] + bad.bytes)]])
            }) else { return XCTFail(expect) }
            XCTAssert(w.contains(expect), w)
        }
        guard case .invalidArgument(let w)? = expectFieldCryptoError({ try engine.encryptMarked([["q": fle2]]) }) else { return XCTFail() }
        XCTAssert(w.contains("FLE 2"), w)
        // A marking hidden in a code-with-scope scope would stay plaintext: refused.
        let cws: Document = ["c": .codeWithScope(code: "f()", scope: ["s": Marking.make(value: "x", key: .id(keyA), algorithm: .random)])]
        guard case .invalidArgument(let w3)? = expectFieldCryptoError({ try engine.encryptMarked([cws]) }) else { return XCTFail() }
        XCTAssert(w3.contains("code-with-scope"), w3)
    }

    /// What libmongocrypt itself does with a deterministic double marking when nobody checks:
    /// it encrypts it (the type rules are mongocryptd's job). Hence the check in encryptMarked.
    func testLibmongocryptAloneDoesNotCheckMarkedTypes() throws {
        let m = Marking.make(value: .double(2.5), key: .id(keyA), algorithm: .deterministic)
        let out = try engine.encryptMarkedBypassingChecksForTests([["d": m]])
        guard case .binary(6, let ct)? = out[0]["d"] else { return XCTFail("not encrypted") }
        print("libmongocrypt alone, deterministic double: encrypted, first byte \(ct[0])")
        XCTAssertEqual(ct[0], 1)
        // Nor does it look into code-with-scope scopes: a marking there stays, plaintext and all.
        let hidden = Marking.make(value: "in scope", key: .id(keyA), algorithm: .random)
        let cws = try engine.encryptMarkedBypassingChecksForTests([["c": .codeWithScope(code: "f()", scope: ["s": hidden]), "d": m]])
        XCTAssertEqual(cws[0]["c"], .codeWithScope(code: "f()", scope: ["s": hidden]))
    }

    func testThousandDocumentBatches() throws {
        for batch in 0..<3 {
            let input = (0..<1_000).map { marked(batch * 1_000 + $0) }
            let output = try engine.encryptMarked(input)
            XCTAssertEqual(output.count, 1_000)
            for i in stride(from: 0, to: 1_000, by: 97) {
                XCTAssertEqual(try engine.decryptDocument(output[i]).bytes, plain(batch * 1_000 + i).bytes)
            }
            // Order is kept.
            XCTAssertEqual(output.map { $0["_id"] }, input.map { $0["_id"] })
        }
    }

    func testOversizedBatchIsRefusedNotCrashed() throws {
        let big = Document(["blob": .binary(subtype: 0, data: [UInt8](repeating: 7, count: 1 << 20)),
                            "m": Marking.make(value: "x", key: .id(keyA), algorithm: .random)])
        let docs = Array(repeating: big, count: 17)
        let e = expectFieldCryptoError { try engine.encryptMarked(docs) }
        print("oversized batch:", e.map(String.init(describing:)) ?? "-")
        guard case .invalidArgument(let why)? = e else { return XCTFail("expected invalidArgument") }
        XCTAssert(why.contains("16 MiB"), why)
        // Just under the limit works.
        XCTAssertEqual(try engine.encryptMarked(Array(docs.prefix(15))).count, 15)
    }

    // MARK: Measurements (printed, not asserted)

    func testMeasureBatchedVersusExplicit() throws {
        // 1,000 documents of 5 marked ~20-byte strings: 2 deterministic, 3 random.
        func fields(_ i: Int) -> [(String, BSONValue, EncryptionAlgorithm)] {
            [("ssn", .string(String(format: "ssn-%016d", i)), .deterministic),
             ("email", .string(String(format: "e%013d@x.org", i)), .deterministic),
             ("name", .string(String(format: "name %015d", i)), .random),
             ("phone", .string(String(format: "+1 %017d", i)), .random),
             ("card", .string(String(format: "card %015d", i)), .random)]
        }
        func makeDocs() -> [Document] {
            (0..<1_000).map { i in
                var b = DocumentBuilder()
                b.append("_id", .int32(Int32(i)))
                for (k, v, alg) in fields(i) { b.append(k, Marking.make(value: v, key: .id(keyA), algorithm: alg)) }
                b.append("plain", "some unencrypted text")
                return b.document
            }
        }
        let docs = makeDocs()
        print("measure: document size \(docs[0].bytes.count) bytes with markings")
        _ = try engine.encryptMarked(docs)  // warm the key cache

        func rate(_ label: String, seconds: Double = 2, _ body: () throws -> Void) rethrows {
            var n = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed: UInt64 = 0
            repeat {
                try body()
                n += 1
                elapsed = DispatchTime.now().uptimeNanoseconds - start
            } while Double(elapsed) < seconds * 1e9
            let perSec = Double(n * 5_000) / (Double(elapsed) / 1e9)
            print(String(format: "measure: %@: %.0f encryptions/s (%.2f µs each, %d batches of 1,000 documents)",
                         label, perSec, 1e6 / perSec, n))
        }
        try rate("encryptMarked") { _ = try engine.encryptMarked(docs) }
        try rate("encryptMarkedExplicitly") { _ = try engine.encryptMarkedExplicitly(docs) }
        try rate("Marking.make + encryptMarked") { _ = try engine.encryptMarked(makeDocs()) }
        rate("building the 1,000 marked documents (Marking.make + DocumentBuilder)") { _ = makeDocs() }
        let values = (0..<1_000).map(fields)
        rate("Marking.make alone") {
            for f in values { for (_, v, alg) in f { _ = Marking.make(value: v, key: .id(keyA), algorithm: alg) } }
        }
        // Batch size.
        for size in [1, 10, 100, 5_000] {
            let many = size <= 1_000 ? Array(docs.prefix(size)) : (0..<(size / 1_000)).flatMap { _ in docs }
            var n = 0
            let start = DispatchTime.now().uptimeNanoseconds
            while DispatchTime.now().uptimeNanoseconds - start < 1_000_000_000 {
                _ = try engine.encryptMarked(many)
                n += many.count * 5
            }
            let secs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            print(String(format: "measure: encryptMarked, batches of %d documents: %.0f encryptions/s", size, Double(n) / secs))
        }
    }
}
