/// Which document of a namespace an event is about: its `_id`, as the `_id` index sees it.
/// Numbers that MongoDB compares as equal (int32 1, int64 1, double 1.0) get one key; any
/// other value is its type and bytes. (Strings under a collection's non-simple collation,
/// and decimals, are compared by their bytes: an `_id` that changes only in those ways
/// between a delete and a re-insert counts as another document.)
public struct DocumentKey: Hashable, Sendable, CustomStringConvertible {
    let bytes: [UInt8]

    init(type: UInt8, value: ArraySlice<UInt8>) {
        func integral(_ v: Int64) -> [UInt8] { [0x12] + withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        switch type {
        case 0x10:
            bytes = integral(Int64(RawBSON.int32(value, at: value.startIndex)))
        case 0x12:
            bytes = integral(value.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) })
        case 0x01:
            let d = value.withUnsafeBytes { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            if d.rounded() == d, d.magnitude < 9.2e18 {
                bytes = integral(Int64(d))
            } else {
                bytes = [0x01] + withUnsafeBytes(of: (d.isNaN ? Double.nan : d).bitPattern.littleEndian) { Array($0) }
            }
        default:
            bytes = [type] + Array(value)
        }
    }

    /// The key of a whole document (its `_id`); nil when it has none.
    public init?(document: [UInt8]) throws {
        guard let id = try RawBSON.idValue(document[...]) else { return nil }
        self.init(type: id.type, value: id.value)
    }

    init?(document: ArraySlice<UInt8>) throws {
        guard let id = try RawBSON.idValue(document) else { return nil }
        self.init(type: id.type, value: id.value)
    }

    /// Type and length only: never a value, which may be personal data.
    public var description: String { "_id of BSON type \(bytes.first ?? 0), \(bytes.count - 1) bytes" }
}
