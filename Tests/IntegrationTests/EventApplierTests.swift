import BSON
import Foundation
import Mongo
import Restore
import TestSupport
import XCTest

/// Replay against the real server: every event kind, applied twice (idempotence), including
/// the cases a naive replay gets wrong.
final class EventApplierTests: XCTestCase {
    func event(_ type: String, _ db: String, _ id: BSONValue, _ extra: KeyValuePairs<String, BSONValue> = [:]) -> Document {
        var b = DocumentBuilder()
        b.append("operationType", .string(type))
        b.append("ns", ["db": .string(db), "coll": "c"])
        b.append("documentKey", ["_id": id])
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func testEveryEventKindReplaysIdempotently() throws {
        let db = TestEnv.uniqueName("apply")
        defer { dropDatabases(db) }
        let client = try TestEnv.client()
        let ns = Namespace(database: db, collection: "c")
        // State as copied: doc 3 is already newer than the events about it (field `a` is a string now).
        try insert(client, ns, [Document(["_id": 3, "a": "now a string", "final": true])])
        let events: [Document] = [
            // Top-level `$` and dotted names in a whole document: replayed through a $literal pipeline.
            event("insert", db, 1, ["fullDocument": ["_id": 1, "$price": 5, "a.b": "dotted", "gone": 1, "arr": [1, 2, 3, 4, 5]]]),
            event("update", db, 1, ["updateDescription": ["updatedFields": ["arr.1": 20, "n": ["x": 1]], "removedFields": ["gone"],
                                                          "truncatedArrays": [["field": "arr", "newSize": 3]]]]),
            event("insert", db, 2, ["fullDocument": ["_id": 2, "v": 1]]),
            event("replace", db, 2, ["fullDocument": ["_id": 2, "v": 2, "replaced": true]]),
            event("delete", db, 2),
            // Superseded: at event time `a` was a document; in the copy it is a string already.
            event("update", db, 3, ["updateDescription": ["updatedFields": ["a.deep": 1], "removedFields": []]]),
            event("insert", db, 4, ["fullDocument": ["_id": 4, "later": 1]]),
            // Updates of top-level `$` names, as a 6.0 change stream reports them.
            event("insert", db, 5, ["fullDocument": ["_id": 5, "$price": 5, "$gone": 1, "keep": 1]]),
            event("update", db, 5, ["updateDescription": ["updatedFields": ["$price": 7, "keep": 2], "removedFields": ["$gone"]]]),
        ]
        for round in 0..<2 {
            let applier = EventApplier(client: client, logger: testLogger) { $0 }
            for e in events { try applier.apply(e) }
            try applier.flush()
            XCTAssertEqual(applier.superseded, 1, "round \(round)")
            let docs = try TestEnv.documents(client, ns)
            XCTAssertEqual(docs, [
                Document(["_id": 1, "$price": 5, "a.b": "dotted", "arr": [1, 20, 3], "n": ["x": 1]]),
                Document(["_id": 3, "a": "now a string", "final": true]),
                Document(["_id": 4, "later": 1]),
                Document(["_id": 5, "$price": 7, "keep": 2]),
            ], "round \(round)")
        }
    }

    func testMappingRoutesAndSkipsNamespaces() throws {
        let db = TestEnv.uniqueName("route"), other = TestEnv.uniqueName("route_to")
        defer { dropDatabases(db, other) }
        let client = try TestEnv.client()
        let applier = EventApplier(client: client, logger: testLogger) { ns in
            ns.database == db ? Namespace(database: other, collection: ns.collection) : nil
        }
        try applier.apply(event("insert", db, 1, ["fullDocument": ["_id": 1]]))
        try applier.apply(event("insert", "elsewhere", 1, ["fullDocument": ["_id": 1]]))
        try applier.flush()
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: other, collection: "c")), [Document(["_id": 1])])
        XCTAssertEqual(applier.skipped, 1)
    }
}
