/// How the key material of a 256-bit master key from Get is stored. Percona Server for
/// MongoDB before 6.0.6-5 registered the base64 text of its master key as the Symmetric
/// Key's material; later versions register the 32 raw bytes. Keys from either must open
/// the same data, so a reader classifies before use.
public enum KeyMaterialFormat: Equatable, Sendable {
    /// Exactly 32 bytes: the key itself.
    case raw
    /// 44 ASCII characters, the canonical standard base64 (with its one "=") of 32 bytes.
    case legacyBase64
    /// Anything else: not a 256-bit key in a known form.
    case other

    public static func classify(_ material: [UInt8]) -> KeyMaterialFormat {
        if material.count == 32 { return .raw }
        return decodeBase64Key(material) == nil ? .other : .legacyBase64
    }

    /// The 32-byte key in either known format, or nil.
    public static func key(from material: [UInt8]) -> [UInt8]? {
        material.count == 32 ? material : decodeBase64Key(material)
    }

    /// Strict: 43 alphabet characters then "=", and the unused low 2 bits of the last
    /// character zero (what every encoder writes), so one key has exactly one text form.
    private static func decodeBase64Key(_ text: [UInt8]) -> [UInt8]? {
        guard text.count == 44, text[43] == UInt8(ascii: "=") else { return nil }
        var bits: UInt32 = 0
        var bitCount = 0
        var key: [UInt8] = []
        key.reserveCapacity(32)
        for c in text[0..<43] {
            guard let v = sextet(c) else { return nil }
            bits = bits << 6 | UInt32(v)
            bitCount += 6
            if bitCount >= 8 {
                bitCount -= 8
                key.append(UInt8(truncatingIfNeeded: bits >> UInt32(bitCount)))
                bits &= (1 << UInt32(bitCount)) - 1
            }
        }
        guard key.count == 32, bitCount == 2, bits == 0 else { return nil }
        return key
    }

    private static func sextet(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
