@testable import Export
import XCTest

/// The CRC-64 of mongodump's EOF markers: Go's crc64 with the ECMA table (CRC-64/XZ).
final class CRC64Tests: XCTestCase {
    /// Known answers: the CRC catalogue's check value for CRC-64/XZ, and Go's
    /// hash/crc64 golden values for the ECMA table.
    func testKnownAnswers() {
        let cases: [(String, UInt64)] = [
            ("", 0),
            ("123456789", 0x995D_C9BB_DF19_39FA),
            ("a", 0x3302_8477_2E65_2B05),
            ("ab", 0xBC65_7320_0E84_B046),
            ("abc", 0x2CD8_094A_1A27_7627),
            ("abcd", 0x3C9D_2859_6E59_60BA),
            ("abcde", 0x040B_DF58_FB08_95F2),
            ("abcdef", 0xD08E_9F85_45A7_00F4),
            ("abcdefg", 0xEC20_A3A8_CC71_0E66),
            ("abcdefgh", 0x67B4_F30A_647A_0C59),
            ("abcdefghi", 0x9966_F6C8_9D56_EF8E),
            ("abcdefghij", 0x3209_3A2E_CD57_73F4),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(CRC64.checksum(Array(text.utf8)), expected, "CRC-64 of \"\(text)\"")
        }
    }

    /// Bit by bit, straight from the definition: reflected polynomial, register complemented
    /// before and after.
    static func reference(_ bytes: [UInt8], start: UInt64 = 0) -> UInt64 {
        var crc = ~start
        for b in bytes {
            crc ^= UInt64(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xC96C_5795_D787_0F42 : crc >> 1 }
        }
        return ~crc
    }

    func testTableDrivenMatchesTheBitwiseDefinitionAtEveryLength() {
        var rng = SystemRandomNumberGenerator()
        for n in 0..<200 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            XCTAssertEqual(CRC64.checksum(bytes), Self.reference(bytes), "length \(n)")
        }
    }

    /// mongodump hashes document by document; the result must not depend on the pieces.
    func testUpdatesInPiecesEqualOneUpdate() {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<5000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for _ in 0..<50 {
            var c = CRC64()
            var i = 0
            while i < bytes.count {
                let n = min(Int.random(in: 0...300, using: &rng), bytes.count - i)
                c.update(Array(bytes[i..<i + n]))
                i += n
            }
            XCTAssertEqual(c.value, CRC64.checksum(bytes))
        }
        XCTAssertEqual(Self.reference(Array(bytes[100...]), start: Self.reference(Array(bytes[..<100]))), CRC64.checksum(bytes))
    }
}
