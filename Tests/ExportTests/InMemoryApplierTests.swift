import BSON
@testable import Export
import XCTest

/// The in-memory replay, pure: what `EventApplier` gets from a server, without one.
/// (IntegrationTests/ExportTests.swift checks the same events against a real mongod.)
final class InMemoryApplierTests: XCTestCase {
    func event(_ type: String, _ id: BSONValue, _ extra: KeyValuePairs<String, BSONValue> = [:]) -> Document {
        var b = DocumentBuilder()
        b.append("operationType", .string(type))
        b.append("ns", ["db": "d", "coll": "c"])
        b.append("documentKey", ["_id": id])
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func update(_ id: BSONValue, set: Document = Document(), unset: [String] = [], truncate: [(String, Int32)] = []) -> Document {
        var desc = DocumentBuilder()
        desc.append("updatedFields", .document(set))
        desc.append("removedFields", .array(unset.map { .string($0) }))
        if !truncate.isEmpty { desc.append("truncatedArrays", .array(truncate.map { ["field": .string($0.0), "newSize": .int32($0.1)] })) }
        return event("update", id, ["updateDescription": .document(desc.document)])
    }

    func docs(_ a: InMemoryApplier) -> [Document] { a.survivors().map { Document(trusted: $0.bytes) } }

    func testDottedPathsIntoSubdocumentsAndArrays() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "a": ["b": 1, "c": [1, 2, 3]], "arr": [["x": 1], ["x": 2]], "tail": true]).bytes)
        XCTAssertEqual(try a.apply(update(1, set: ["a.b": 5, "a.c.1": 20, "arr.1.x": 9, "arr.0.y": "new", "a.new.deep": true])), .applied)
        XCTAssertEqual(docs(a), [Document(["_id": 1, "a": ["b": 5, "c": [1, 20, 3], "new": ["deep": true]],
                                           "arr": [["x": 1, "y": "new"], ["x": 9]], "tail": true])])
    }

    /// New fields go at the end of their document, in the order the server applies paths:
    /// by name, with numeric names by value; a missing path is created as documents, even
    /// where a part is a number.
    func testNewFieldsComeInNameOrder() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "m": 0]).bytes)
        try a.apply(update(1, set: ["z": 1, "b": 2, "10": 3, "9": 4, "m": 5, "n.0.x": 6]))
        XCTAssertEqual(docs(a), [Document(["_id": 1, "m": 5, "9": 4, "10": 3, "b": 2, "n": ["0": ["x": 6]], "z": 1])])
    }

    func testArrayPositionsPastTheEndAreFilledWithNull() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "arr": [1]]).bytes)
        try a.apply(update(1, set: ["arr.4": "e", "arr.2.k": true]))
        XCTAssertEqual(docs(a), [Document(["_id": 1, "arr": [1, .null, ["k": true], .null, "e"]])])
    }

    func testUnsetRemovesFieldsNullsArrayElementsAndIgnoresWhatIsNotThere() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "a": ["b": 1, "c": 2], "arr": [1, 2, 3], "s": "scalar", "gone": 1]).bytes)
        XCTAssertEqual(try a.apply(update(1, unset: ["a.b", "arr.1", "missing", "s.x", "arr.7", "gone"])), .applied)
        XCTAssertEqual(docs(a), [Document(["_id": 1, "a": ["c": 2], "arr": [1, .null, 3], "s": "scalar"])])
    }

    /// As the restore sends them: truncations first, then the `$set`.
    func testTruncationComesBeforeTheSet() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "arr": [1, 2, 3, 4, 5], "in": ["list": [1, 2, 3]]]).bytes)
        try a.apply(update(1, set: ["arr.1": 20], truncate: [("arr", 3), ("in.list", 1), ("fresh", 2)]))
        // `$push` with `$each: []` creates an empty array where there is none.
        XCTAssertEqual(docs(a), [Document(["_id": 1, "arr": [1, 20, 3], "in": ["list": [1]], "fresh": []])])
    }

    func testInsertReplaceDelete() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "v": 1]).bytes)
        XCTAssertEqual(try a.apply(event("insert", 2, ["fullDocument": ["_id": 2, "v": 2]])), .applied)
        XCTAssertEqual(try a.apply(event("replace", 1, ["fullDocument": ["_id": 1, "replaced": true]])), .applied)
        // A replacement that does not start with _id is stored with _id first, as the server does.
        XCTAssertEqual(try a.apply(event("replace", 3, ["fullDocument": ["v": 3, "_id": 3]])), .applied)
        XCTAssertEqual(try a.apply(event("delete", 2)), .applied)
        XCTAssertEqual(try a.apply(event("delete", 2)), .ignored)
        XCTAssertEqual(docs(a), [Document(["_id": 1, "replaced": true]), Document(["_id": 3, "v": 3])])
        // An insert without its fullDocument is skipped, as the restore skips it.
        XCTAssertEqual(try a.apply(event("insert", 4)), .ignored)
    }

    func testUpdateOfAMissingDocumentIsIgnored() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "v": 1]).bytes)
        XCTAssertEqual(try a.apply(update(99, set: ["v": 2])), .ignored)
        try a.apply(event("delete", 1))
        XCTAssertEqual(try a.apply(update(1, set: ["v": 3])), .ignored)
        XCTAssertEqual(docs(a), [])
        XCTAssertEqual(a.superseded, 0)
    }

    /// A step the server would refuse (a path through a string, a truncation of a number)
    /// is skipped whole and counted; the event's other steps still apply.
    func testSupersededStepsAreSkippedWhole() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "a": "now a string", "n": 5, "arr": [1, 2, 3], "v": 0]).bytes)
        XCTAssertEqual(try a.apply(update(1, set: ["a.deep": 1, "v": 1], truncate: [("n", 1), ("arr", 2)])), .partlySuperseded(steps: 2))
        XCTAssertEqual(docs(a), [Document(["_id": 1, "a": "now a string", "n": 5, "arr": [1, 2], "v": 0])])
        XCTAssertEqual(a.superseded, 2)
        // A named field cannot be created inside an array.
        XCTAssertEqual(try a.apply(update(1, set: ["arr.name": 1])), .partlySuperseded(steps: 1))
    }

    /// Top-level names that start with `$` are literals ($setField/$unsetField), set in place.
    func testDollarPrefixedTopLevelNames() throws {
        let a = InMemoryApplier()
        try a.apply(event("insert", 5, ["fullDocument": ["_id": 5, "$price": 5, "$gone": 1, "keep": 1, "a.b": "dotted"]]))
        try a.apply(update(5, set: ["$price": 7, "keep": 2, "$new": true], unset: ["$gone"]))
        XCTAssertEqual(docs(a), [Document(["_id": 5, "$price": 7, "keep": 2, "a.b": "dotted", "$new": true])])
    }

    func testConflictingPathsCannotBeReplayed() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": 1, "a": ["b": 1]]).bytes)
        XCTAssertThrowsError(try a.apply(update(1, set: ["a": 1], unset: ["a.b"]))) { XCTAssertTrue($0 is InMemoryApplier.Unreplayable) }
    }

    /// The `_id` index compares numbers by value: int32 1, int64 1 and double 1.0 are one document.
    func testNumericIdsAreOneDocument() throws {
        let a = InMemoryApplier()
        try a.hold(Document(["_id": .int32(1), "v": 0]).bytes)
        try a.apply(update(.int64(1), set: ["v": 1]))
        try a.apply(update(.double(1.0), set: ["w": 2]))
        XCTAssertEqual(docs(a), [Document(["_id": .int32(1), "v": 1, "w": 2])])
        XCTAssertEqual(try a.apply(update(.string("1"), set: ["x": 3])), .ignored)
    }

    /// Elements no event touches keep their bytes, even where libbson would write them
    /// differently (regex options in an unusual order).
    func testUntouchedElementsKeepTheirBytes() throws {
        // {_id: 1, r: /a/mi, v: 0}, built by hand: libbson sorts regex options when it builds one.
        var body: [UInt8] = [0x10] + Array("_id".utf8) + [0, 1, 0, 0, 0]
        body += [0x0B] + Array("r".utf8) + [0] + Array("a".utf8) + [0] + Array("mi".utf8) + [0]
        body += [0x10] + Array("v".utf8) + [0, 0, 0, 0, 0]
        let original = RawBSON.document(body)
        let a = InMemoryApplier()
        try a.hold(original)
        try a.apply(update(1, set: ["v": 7]))
        var expected = original
        expected[expected.count - 5] = 7
        XCTAssertEqual(a.survivors().first?.bytes, expected)
    }

    /// Held documents keep their place (capped collections); a document deleted and
    /// inserted again, and new ones, come after, in insert order.
    func testSurvivorsKeepNaturalOrder() throws {
        let a = InMemoryApplier()
        for i: Int32 in 1...3 { try a.hold(Document(["_id": .int32(i)]).bytes) }
        try a.apply(event("delete", 2))
        try a.apply(event("insert", 4, ["fullDocument": ["_id": 4]]))
        try a.apply(event("insert", 2, ["fullDocument": ["_id": 2, "again": true]]))
        try a.apply(event("replace", 3, ["fullDocument": ["_id": 3, "replaced": true]]))
        XCTAssertEqual(docs(a), [Document(["_id": 1]), Document(["_id": 3, "replaced": true]), Document(["_id": 4]), Document(["_id": 2, "again": true])])
        XCTAssertEqual(a.survivors().map(\.keepsSnapshotPosition), [true, true, false, false])
    }
}
