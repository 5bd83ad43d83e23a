import Archive
import BSON
import Capture
import Foundation
import Mongo
import Restore
import TestSupport
import XCTest

/// Backup then restore into another database must give the same BSON, byte for byte, and
/// the same collection options and index specifications.
final class FidelityTests: XCTestCase {
    /// One document per BSON type and oddity, in canonical extended JSON.
    static let everyTypeJSON: [String] = [
        #"{"_id": 1, "double": {"$numberDouble": "3.14159"}, "negzero": {"$numberDouble": "-0.0"}, "nan": {"$numberDouble": "NaN"}, "inf": {"$numberDouble": "-Infinity"}}"#,
        #"{"_id": 2, "string": "plain", "unicode": "Grüße, 東京, emoji 😀, rtl שלום", "empty": "", "nul": "a\u0000b"}"#,
        #"{"_id": 3, "doc": {"a": {"b": {"c": {"d": [1, 2, {"e": null}]}}}}}"#,
        #"{"_id": 4, "bin0": {"$binary": {"base64": "AAECAw==", "subType": "00"}}, "bin1": {"$binary": {"base64": "AQ==", "subType": "01"}}, "bin2": {"$binary": {"base64": "BAAAAAECAwQ=", "subType": "02"}}, "bin3": {"$binary": {"base64": "c//SZESzTGmQ6OfR38A11A==", "subType": "03"}}, "bin4": {"$binary": {"base64": "c//SZESzTGmQ6OfR38A11A==", "subType": "04"}}, "bin5": {"$binary": {"base64": "XrY7CM/R2fLCnMjWxHr0Ww==", "subType": "05"}}, "bin6": {"$binary": {"base64": "AQID", "subType": "06"}}, "bin7": {"$binary": {"base64": "AQID", "subType": "07"}}, "bin8": {"$binary": {"base64": "AQID", "subType": "08"}}, "bin80": {"$binary": {"base64": "/w==", "subType": "80"}}}"#,
        #"{"_id": 5, "undef": {"$undefined": true}, "oid": {"$oid": "5f1a2b3c4d5e6f7a8b9c0d1e"}, "t": true, "f": false, "date": {"$date": {"$numberLong": "-62135596800000"}}, "null": null}"#,
        #"{"_id": 6, "regex": {"$regularExpression": {"pattern": "^ab+c$", "options": "imsux"}}, "dbptr": {"$dbPointer": {"$ref": "other.coll", "$id": {"$oid": "5f1a2b3c4d5e6f7a8b9c0d1e"}}}, "code": {"$code": "function() { return 1; }"}, "symbol": {"$symbol": "sym"}, "cws": {"$code": "function() { return x; }", "$scope": {"x": {"$numberInt": "7"}}}}"#,
        #"{"_id": 7, "i32": {"$numberInt": "-2147483648"}, "ts": {"$timestamp": {"t": 4294967295, "i": 1}}, "i64": {"$numberLong": "9223372036854775807"}, "dec": {"$numberDecimal": "1234567890.123456789012345678901234"}, "decneg": {"$numberDecimal": "-0.00"}, "decnan": {"$numberDecimal": "NaN"}, "min": {"$minKey": 1}, "max": {"$maxKey": 1}}"#,
        #"{"_id": 8, "$price": {"$numberInt": "5"}, "a.b": "dotted", "nested": {"$x": 1, "y.z": 2}, "": "empty key"}"#,
        #"{"_id": {"compound": "key", "n": 1}, "v": 1}"#,
        #"{"_id": {"$oid": "5f1a2b3c4d5e6f7a8b9c0d1f"}, "v": 2}"#,
        #"{"_id": "string-id", "v": 3}"#,
    ]

    func testEveryBSONTypeAndLargeDocumentsRoundTripByteForByte() throws {
        let src = TestEnv.uniqueName("fid_src"), dst = TestEnv.uniqueName("fid_dst")
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "types")
        var docs = try FidelityTests.everyTypeJSON.map { try Document(json: $0) }
        // Deep nesting (90 levels; the server allows 100), a large array, and a document near 16 MB.
        var deep = Document(["leaf": "bottom"])
        for i in 0..<90 { deep = Document([String("level\(i)"): .document(deep)]) }
        docs.append(Document(["_id": 100, "deep": .document(deep)]))
        docs.append(Document(["_id": 101, "big": .array((0..<50_000).map { .int32(Int32($0)) })]))
        let filler = [UInt8](repeating: 0xAB, count: 16 * 1024 * 1024 - 200)
        docs.append(Document(["_id": 102, "blob": .binary(subtype: 0, data: filler)]))
        XCTAssertGreaterThan(docs.last!.count, 16_700_000)
        try insert(client, ns, docs)
        // Many ordinary documents so that blocks and segments roll over.
        let many = (0..<20_000).map { i in
            Document(["_id": .int64(Int64(1000 + i)), "name": .string("user \(i)"), "n": .double(Double(i) / 3),
                      "tags": .array([.string("t\(i % 7)"), .int32(Int32(i))])])
        }
        try insert(client, Namespace(database: src, collection: "many"), many)

        let repo = TestEnv.temporaryDirectory("fid-repo")
        let manifest = try backup(["\(src).*"], repo: repo) { $0.blockBytes = 64 * 1024; $0.segmentBytes = 512 * 1024 }
        XCTAssertEqual(manifest.documentCount, Int64(docs.count + many.count))
        XCTAssertGreaterThan(manifest.namespaces.first { $0.namespace == "\(src).many" }!.segments.count, 1, "segments should roll over")

        try restore(repo: repo, from: "\(src).*", to: "\(dst).*")
        try assertSameDocuments(client, ns, Namespace(database: dst, collection: "types"))
        try assertSameDocuments(client, Namespace(database: src, collection: "many"), Namespace(database: dst, collection: "many"))
        // The comparison really looks at bytes: the near-16 MB document came back whole.
        let big = try client.collection(Namespace(database: dst, collection: "types")).find(["_id": 102]).next()
        XCTAssertEqual(big?.bytes, docs.last!.bytes)
    }

    func testCollectionOptionsAndEveryIndexKindRoundTrip() throws {
        let src = TestEnv.uniqueName("opt_src"), dst = TestEnv.uniqueName("opt_dst")
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        func run(_ cmd: Document) throws { try client.runCommand(cmd, database: src) }
        try run(["create": "validated", "validator": ["$jsonSchema": ["required": ["x"]]], "validationLevel": "moderate", "validationAction": "warn"])
        try run(["create": "collated", "collation": ["locale": "fr", "strength": 2]])
        try run(["create": "capped", "capped": true, "size": 100_000, "max": 50])
        try run(["create": "clustered", "clusteredIndex": ["key": ["_id": 1], "unique": true], "expireAfterSeconds": 3600])
        try run(["create": "series", "timeseries": ["timeField": "t", "metaField": "m", "granularity": "minutes"], "expireAfterSeconds": 86400])
        try run(["create": "plainview", "viewOn": "validated", "pipeline": [["$match": ["x": ["$gt": 1]]]]])
        try run(["createIndexes": "validated", "indexes": [
            ["key": ["u": 1], "name": "u_unique", "unique": true],
            ["key": ["p": 1], "name": "p_partial", "partialFilterExpression": ["p": ["$gt": 5]]],
            ["key": ["ttl": 1], "name": "ttl", "expireAfterSeconds": 60],
            ["key": ["a": 1, "b": -1], "name": "compound"],
            ["key": ["txt": "text", "z": 1], "name": "text", "weights": ["txt": 3], "default_language": "english"],
            ["key": ["loc": "2dsphere"], "name": "geo"],
            ["key": ["h": "hashed"], "name": "hashed"],
            ["key": ["$**": 1], "name": "wildcard", "wildcardProjection": ["w": 1]],
            ["key": ["s": 1], "name": "sparse_hidden", "sparse": true, "hidden": true],
        ]])
        try run(["createIndexes": "collated", "indexes": [
            ["key": ["q": 1], "name": "q_simple", "collation": ["locale": "simple"]],
            ["key": ["r": 1], "name": "r_default"],
        ]])
        try run(["createIndexes": "series", "indexes": [["key": ["m": 1, "t": -1], "name": "m_t"]]])
        try run(["createIndexes": "clustered", "indexes": [["key": ["a": 1], "name": "a_1", "unique": true]]])
        try insert(client, Namespace(database: src, collection: "validated"), (0..<100).map { Document(["_id": .int32($0), "x": .int32($0), "u": .int32($0)]) })
        try insert(client, Namespace(database: src, collection: "capped"), (0..<80).map { Document(["_id": .int32($0), "i": .int32($0)]) })
        try insert(client, Namespace(database: src, collection: "clustered"), (0..<10).map { Document(["_id": .int32($0), "a": .int32($0)]) })
        try insert(client, Namespace(database: src, collection: "series"), (0..<500).map {
            Document(["t": .datetime(1_790_000_000_000 + Int64($0) * 60_000), "m": ["dev": .int32($0 % 4)], "v": .double(Double($0))])
        })

        let repo = TestEnv.temporaryDirectory("opt-repo")
        try backup(["\(src).*"], repo: repo)
        try restore(repo: repo, from: "\(src).*", to: "\(dst).*")

        let before = try TestEnv.collectionOptions(client, database: src)
        let after = try TestEnv.collectionOptions(client, database: dst)
        XCTAssertEqual(Set(before.keys), Set(after.keys))
        for (name, options) in before {
            XCTAssertEqual(options, after[name], "options of \(name)")
        }
        for coll in ["validated", "collated", "capped", "clustered", "series"] {
            let a = try client.collection(Namespace(database: src, collection: coll)).listIndexes()
            let b = try client.collection(Namespace(database: dst, collection: coll)).listIndexes()
            XCTAssertEqual(a, b, "indexes of \(coll)")
            XCTAssertFalse(a.isEmpty)
        }
        // Capped: the 50 newest, in natural (insertion) order.
        let capped = try client.collection(Namespace(database: dst, collection: "capped")).find().all()
        XCTAssertEqual(capped.map { $0["i"] }, (30..<80).map { BSONValue.int32(Int32($0)) })
        // Time series: the measurements read back the same.
        let series = { (db: String) in
            try client.collection(Namespace(database: db, collection: "series")).find(Document(), options: ["sort": ["t": 1], "projection": ["_id": 0]]).all()
        }
        XCTAssertEqual(try series(src), try series(dst))
        XCTAssertEqual(try series(dst).count, 500)
        for coll in ["validated", "collated", "clustered", "plainview"] {
            try assertSameDocuments(client, Namespace(database: src, collection: coll), Namespace(database: dst, collection: coll))
        }
    }
}
