/// CRC-64 as mongodump computes the checksum of a namespace's documents: Go's
/// `crc64.New(crc64.MakeTable(crc64.ECMA))`. That is the ECMA-182 polynomial
/// 0x42F0E1EBA9EA3693, reflected (table built from 0xC96C5795D7870F42), with the register
/// complemented before and after each update: init and xorout 0xFFFFFFFFFFFFFFFF. The
/// CRC catalogue calls it CRC-64/XZ; its check value ("123456789") is 0x995DC9BBDF1939FA.
/// Because every update complements in and out, feeding bytes in pieces gives the same
/// value as feeding them at once, as Go's `hash.Hash64` does.
public struct CRC64: Sendable {
    public static let reflectedPolynomial: UInt64 = 0xC96C_5795_D787_0F42

    /// Slicing-by-8 tables: tables[0] is the classic byte table.
    static let tables: [[UInt64]] = {
        var t0 = [UInt64](repeating: 0, count: 256)
        for i in 0..<256 {
            var crc = UInt64(i)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ reflectedPolynomial : crc >> 1 }
            t0[i] = crc
        }
        var all = [t0]
        for k in 1..<8 {
            all.append((0..<256).map { i in (all[k - 1][i] >> 8) ^ t0[Int(all[k - 1][i] & 0xFF)] })
        }
        return all
    }()

    public private(set) var value: UInt64 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        value = CRC64.update(value, bytes)
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    public static func checksum(_ bytes: [UInt8]) -> UInt64 {
        var c = CRC64()
        c.update(bytes)
        return c.value
    }

    static func update(_ start: UInt64, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var crc = ~start
        let n = bytes.count
        var i = 0
        tables.withUnsafeBufferPointer { t in
            let t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7]
            while n - i >= 8 {
                crc ^= UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                crc = t7[Int(crc & 0xFF)] ^ t6[Int((crc >> 8) & 0xFF)] ^ t5[Int((crc >> 16) & 0xFF)]
                    ^ t4[Int((crc >> 24) & 0xFF)] ^ t3[Int((crc >> 32) & 0xFF)] ^ t2[Int((crc >> 40) & 0xFF)]
                    ^ t1[Int((crc >> 48) & 0xFF)] ^ t0[Int(crc >> 56)]
                i += 8
            }
            while i < n {
                crc = t0[Int((crc ^ UInt64(bytes[i])) & 0xFF)] ^ (crc >> 8)
                i += 1
            }
        }
        return ~crc
    }
}
