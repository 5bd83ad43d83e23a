import Foundation
import KMIP
import XCTest

final class KeyMaterialFormatTests: XCTestCase {
    let key = (0..<32).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }

    func testRawThirtyTwoBytes() {
        XCTAssertEqual(KeyMaterialFormat.classify(key), .raw)
        XCTAssertEqual(KeyMaterialFormat.key(from: key), key)
        // 32 bytes are raw even when they happen to be printable.
        let printable = Array("0123456789abcdef0123456789abcdef".utf8)
        XCTAssertEqual(KeyMaterialFormat.classify(printable), .raw)
    }

    func testLegacyBase64Text() {
        let text = Array(Data(key).base64EncodedString().utf8)
        XCTAssertEqual(text.count, 44)
        XCTAssertEqual(KeyMaterialFormat.classify(text), .legacyBase64)
        XCTAssertEqual(KeyMaterialFormat.key(from: text), key)
        // Known answer: 32 zero bytes, and 32 bytes of 0xFF.
        let zeros = Array("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".utf8)
        XCTAssertEqual(KeyMaterialFormat.key(from: zeros), [UInt8](repeating: 0, count: 32))
        let ones = Array("//////////////////////////////////////////8=".utf8)
        XCTAssertEqual(KeyMaterialFormat.key(from: ones), [UInt8](repeating: 0xFF, count: 32))
    }

    func testEverythingElseIsOther() {
        let text = Array(Data(key).base64EncodedString().utf8)
        var cases: [[UInt8]] = [
            [], Array(key.prefix(31)), key + [0], Array(repeating: 0x41, count: 44), // no "="
            Array(text.prefix(43)) + [UInt8(ascii: "\n")],
            text + [UInt8(ascii: "\n")], // 45 bytes
            Array(Data(key.prefix(31)).base64EncodedString().utf8), // base64 of 31 bytes (44 chars, "==")
            Array(Data(key + key).base64EncodedString().utf8),
        ]
        // Non-alphabet characters, URL-safe alphabet, and a non-canonical last character.
        for (i, c) in [UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: " "), UInt8(ascii: "="), 0xC3].enumerated() {
            var bad = text
            bad[i * 7] = c
            cases.append(bad)
        }
        var nonCanonical = Array("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=".utf8)
        cases.append(nonCanonical)
        nonCanonical[42] = UInt8(ascii: "D")
        cases.append(nonCanonical)
        for bytes in cases {
            XCTAssertEqual(KeyMaterialFormat.classify(bytes), .other, String(decoding: bytes, as: UTF8.self))
            XCTAssertNil(KeyMaterialFormat.key(from: bytes))
        }
    }

    func testAgreesWithFoundationOnRandomKeys() {
        var rng = SeededRandom(seed: 5)
        for _ in 0..<500 {
            let k = rng.bytes(32)
            let text = Array(Data(k).base64EncodedString().utf8)
            XCTAssertEqual(KeyMaterialFormat.classify(text), .legacyBase64)
            XCTAssertEqual(KeyMaterialFormat.key(from: text), k)
        }
    }
}
