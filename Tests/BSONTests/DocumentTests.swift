import BSON
import XCTest

final class DocumentTests: XCTestCase {
    func testCanonicalExtendedJSONRoundTripsEveryType() throws {
        let json = #"{"d": {"$numberDouble": "1.5"}, "s": "x", "o": {"a": {"$numberInt": "1"}}, "arr": [{"$numberInt": "1"}, "two"], "bin": {"$binary": {"base64": "AQI=", "subType": "80"}}, "u": {"$undefined": true}, "oid": {"$oid": "5f1a2b3c4d5e6f7a8b9c0d1e"}, "b": true, "dt": {"$date": {"$numberLong": "1"}}, "n": null, "re": {"$regularExpression": {"pattern": "a", "options": "i"}}, "ptr": {"$dbPointer": {"$ref": "c", "$id": {"$oid": "5f1a2b3c4d5e6f7a8b9c0d1e"}}}, "code": {"$code": "f"}, "sym": {"$symbol": "s"}, "cws": {"$code": "g", "$scope": {}}, "i": {"$numberInt": "-1"}, "ts": {"$timestamp": {"t": 5, "i": 6}}, "l": {"$numberLong": "7"}, "dec": {"$numberDecimal": "1.00"}, "min": {"$minKey": 1}, "max": {"$maxKey": 1}}"#
        let doc = try Document(json: json)
        let again = try Document(json: doc.canonicalJSON)
        XCTAssertEqual(doc.bytes, again.bytes)
        XCTAssertEqual(doc.keys.count, 21)
        // Rebuilding from the decoded values gives the same bytes: the value enum loses nothing.
        XCTAssertEqual(Document(elements: doc.elements.map { ($0.key, $0.value) }).bytes, doc.bytes)
        XCTAssertEqual(doc["ts"], .timestamp(Timestamp(t: 5, i: 6)))
        XCTAssertEqual(doc["bin"], .binary(subtype: 0x80, data: [1, 2]))
        XCTAssertEqual(doc.value(atPath: "o.a"), .int32(1))
    }

    func testValidationRejectsBadFramingAndStructure() {
        XCTAssertThrowsError(try Document(bytes: [1, 2, 3]))
        XCTAssertThrowsError(try Document(bytes: [6, 0, 0, 0, 0]))  // length prefix disagrees
        var good = Document(["a": 1]).bytes
        XCTAssertNoThrow(try Document(bytes: good))
        good[4] = 0x55  // unknown element type
        XCTAssertThrowsError(try Document(bytes: good))
        XCTAssertThrowsError(try Document(json: "{not json"))
    }

    func testSettingAndRemovingKeepOrder() {
        let d = Document(["a": 1, "b": 2, "c": 3])
        XCTAssertEqual(d.setting("b", "x").keys, ["a", "b", "c"])
        XCTAssertEqual(d.setting("b", "x")["b"], .string("x"))
        XCTAssertEqual(d.setting("z", 1).keys, ["a", "b", "c", "z"])
        XCTAssertEqual(d.removing(["a", "c"]).keys, ["b"])
    }

    func testStringsWithNulBytesSurvive() throws {
        let d = Document(["s": .string("a\u{0}b")])
        XCTAssertEqual(d["s"], .string("a\u{0}b"))
    }

    func testTimestampParsingAndOrder() {
        XCTAssertEqual(Timestamp(string: "10:2"), Timestamp(t: 10, i: 2))
        XCTAssertNil(Timestamp(string: "10"))
        XCTAssertLessThan(Timestamp(t: 1, i: 9), Timestamp(t: 2, i: 0))
    }
}
