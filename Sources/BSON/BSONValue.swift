/// One BSON value. Every type of the BSON spec is representable, deprecated ones included,
/// because a backup must carry whatever the source holds.
public indirect enum BSONValue: Equatable, Hashable, Sendable {
    case double(Double)
    case string(String)
    case document(Document)
    case array([BSONValue])
    case binary(subtype: UInt8, data: [UInt8])
    case undefined
    case objectId(ObjectId)
    case bool(Bool)
    case datetime(Int64)
    case null
    case regex(pattern: String, options: String)
    case dbPointer(collection: String, id: ObjectId)
    case code(String)
    case symbol(String)
    case codeWithScope(code: String, scope: Document)
    case int32(Int32)
    case timestamp(Timestamp)
    case int64(Int64)
    case decimal128(low: UInt64, high: UInt64)
    case minKey
    case maxKey

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var documentValue: Document? { if case .document(let d) = self { return d }; return nil }
    public var arrayValue: [BSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var timestampValue: Timestamp? { if case .timestamp(let t) = self { return t }; return nil }

    /// Any numeric type as Int64 where it is integral.
    public var int64Value: Int64? {
        switch self {
        case .int32(let v): return Int64(v)
        case .int64(let v): return v
        case .double(let v) where v.rounded() == v && abs(v) < 9.0e18: return Int64(v)
        default: return nil
        }
    }

    /// The BSON type byte of the spec.
    public var typeCode: UInt8 {
        switch self {
        case .double: return 0x01
        case .string: return 0x02
        case .document: return 0x03
        case .array: return 0x04
        case .binary: return 0x05
        case .undefined: return 0x06
        case .objectId: return 0x07
        case .bool: return 0x08
        case .datetime: return 0x09
        case .null: return 0x0A
        case .regex: return 0x0B
        case .dbPointer: return 0x0C
        case .code: return 0x0D
        case .symbol: return 0x0E
        case .codeWithScope: return 0x0F
        case .int32: return 0x10
        case .timestamp: return 0x11
        case .int64: return 0x12
        case .decimal128: return 0x13
        case .minKey: return 0xFF
        case .maxKey: return 0x7F
        }
    }
}

/// A 12-byte ObjectId.
public struct ObjectId: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 12, "an ObjectId is 12 bytes")
        self.bytes = bytes
    }
    public var description: String { bytes.map { String(format: "%02x", $0) }.joined() }
}

/// A BSON timestamp: what MongoDB uses for cluster time (seconds, increment).
public struct Timestamp: Comparable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var t: UInt32
    public var i: UInt32
    public init(t: UInt32, i: UInt32) { self.t = t; self.i = i }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { (a.t, a.i) < (b.t, b.i) }
    public var description: String { "\(t):\(i)" }

    /// Parses `T:I`.
    public init?(string: String) {
        let parts = string.split(separator: ":")
        guard parts.count == 2, let t = UInt32(parts[0]), let i = UInt32(parts[1]) else { return nil }
        self.init(t: t, i: i)
    }
}

extension BSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int32) { self = .int32(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: BSONValue...) { self = .array(elements) }
}

extension BSONValue: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, BSONValue)...) { self = .document(Document(elements: elements)) }
}
