/// One KMIP TTLV item (KMIP 1.x, section 9.1): a 3-byte tag, a 1-byte type, a 4-byte
/// big-endian length and the value, padded with zeros to a multiple of 8 bytes (the
/// padding is not counted in the length).
///
/// `decode` reads bytes from a KMIP server, so it trusts nothing: every length is checked
/// against the bytes that are there before anything is read or allocated, fixed-size types
/// must have their size, padding must be zero, text must be UTF-8, booleans 0 or 1, and
/// nesting and total size are bounded. It throws `TTLVError` (what, at which byte offset,
/// inside which tag) and never traps. What it accepts re-encodes to the same bytes.
public struct TTLV: Hashable, Sendable, CustomStringConvertible {
    public var tag: Tag
    public var value: Value

    public init(_ tag: Tag, _ value: Value) {
        self.tag = tag
        self.value = value
    }

    public enum ItemType: UInt8, Sendable, CustomStringConvertible {
        case structure = 0x01
        case integer = 0x02
        case longInteger = 0x03
        case bigInteger = 0x04
        case enumeration = 0x05
        case boolean = 0x06
        case textString = 0x07
        case byteString = 0x08
        case dateTime = 0x09
        case interval = 0x0A

        public var description: String {
            switch self {
            case .structure: "Structure"
            case .integer: "Integer"
            case .longInteger: "Long Integer"
            case .bigInteger: "Big Integer"
            case .enumeration: "Enumeration"
            case .boolean: "Boolean"
            case .textString: "Text String"
            case .byteString: "Byte String"
            case .dateTime: "Date-Time"
            case .interval: "Interval"
            }
        }
    }

    public enum Value: Hashable, Sendable {
        case structure([TTLV])
        case integer(Int32)
        case longInteger(Int64)
        /// Two's complement, big-endian. Encoding sign-extends to a multiple of 8 bytes
        /// (an empty array encodes as zero); decoding keeps the bytes as sent.
        case bigInteger([UInt8])
        case enumeration(UInt32)
        case boolean(Bool)
        case textString(String)
        case byteString([UInt8])
        /// Seconds since 1970-01-01 00:00 UTC.
        case dateTime(Int64)
        /// Seconds.
        case interval(UInt32)

        public var type: ItemType {
            switch self {
            case .structure: .structure
            case .integer: .integer
            case .longInteger: .longInteger
            case .bigInteger: .bigInteger
            case .enumeration: .enumeration
            case .boolean: .boolean
            case .textString: .textString
            case .byteString: .byteString
            case .dateTime: .dateTime
            case .interval: .interval
            }
        }
    }

    /// Bounds for `decode` and `messageLength`.
    public struct Limits: Sendable {
        /// Largest accepted item, header included.
        public var maximumLength: Int
        /// Deepest accepted nesting; the outermost item is at depth 1. KMIP 1.x messages
        /// need about 8 (message, batch item, payload, object, key block, key value, ...).
        /// Decoding recurses once per level, so keep this small.
        public var maximumDepth: Int

        public init(maximumLength: Int = 4 << 20, maximumDepth: Int = 32) {
            self.maximumLength = maximumLength
            self.maximumDepth = maximumDepth
        }

        public static let `default` = Limits()
    }

    // MARK: Encoding

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        append(to: &out)
        return out
    }

    func append(to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 16))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 8))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue))
        out.append(value.type.rawValue)
        let lengthAt = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        switch value {
        case .structure(let items):
            for item in items { item.append(to: &out) }
        case .integer(let v): out.appendBigEndian(UInt32(bitPattern: v))
        case .longInteger(let v): out.appendBigEndian(UInt64(bitPattern: v))
        case .bigInteger(let bytes):
            let negative = (bytes.first ?? 0) & 0x80 != 0
            let extra = bytes.isEmpty ? 8 : (8 - bytes.count % 8) % 8
            out.append(contentsOf: repeatElement(negative ? 0xFF : 0x00, count: extra))
            out.append(contentsOf: bytes)
        case .enumeration(let v): out.appendBigEndian(v)
        case .boolean(let v): out.appendBigEndian(UInt64(v ? 1 : 0))
        case .textString(let s): out.append(contentsOf: s.utf8)
        case .byteString(let bytes): out.append(contentsOf: bytes)
        case .dateTime(let v): out.appendBigEndian(UInt64(bitPattern: v))
        case .interval(let v): out.appendBigEndian(v)
        }
        let length = out.count - lengthAt - 4
        // Our own values: only a caller building a 4 GiB item gets here.
        precondition(length <= Int(UInt32.max), "TTLV item longer than 4 GiB")
        out.writeBigEndian(UInt32(length), at: lengthAt)
        out.append(contentsOf: repeatElement(0, count: (8 - length % 8) % 8))
    }

    // MARK: Decoding

    /// Decodes exactly one item that fills `bytes` (padding included).
    public static func decode(_ bytes: some Collection<UInt8>, limits: Limits = .default) throws -> TTLV {
        let count = bytes.count
        guard count <= limits.maximumLength else {
            throw TTLVError(offset: 0, tag: nil, problem: .tooLarge(length: UInt64(count), limit: limits.maximumLength))
        }
        var reader = Reader(bytes: Array(bytes), limits: limits)
        let item = try reader.item(end: reader.bytes.count, depth: 1)
        guard reader.offset == reader.bytes.count else {
            throw TTLVError(offset: reader.offset, tag: nil, problem: .trailingBytes(reader.bytes.count - reader.offset))
        }
        return item
    }

    /// Reads the 8-byte header of a message (only the first 8 bytes of `header` are looked
    /// at) and returns the whole message's length, header included, so a transport knows
    /// how many bytes to read. The item must be a Structure within `limits.maximumLength`.
    public static func messageLength(header: some Collection<UInt8>, limits: Limits = .default) throws -> Int {
        let head = Array(header.prefix(8))
        guard head.count == 8 else {
            throw TTLVError(offset: 0, tag: nil, problem: .truncated(needed: 8, available: head.count))
        }
        let tag = Tag(rawValue: UInt32(head[0]) << 16 | UInt32(head[1]) << 8 | UInt32(head[2]))
        guard let type = ItemType(rawValue: head[3]) else {
            throw TTLVError(offset: 3, tag: tag, problem: .unknownType(head[3]))
        }
        guard type == .structure else { throw TTLVError(offset: 3, tag: tag, problem: .notAStructure(type)) }
        let length = UInt64(head.readBigEndianUInt32(at: 4))
        guard length % 8 == 0 else {
            throw TTLVError(offset: 4, tag: tag, problem: .invalidLength(type, length))
        }
        guard length + 8 <= UInt64(max(limits.maximumLength, 0)) else {
            throw TTLVError(offset: 4, tag: tag, problem: .tooLarge(length: length + 8, limit: limits.maximumLength))
        }
        return Int(length) + 8
    }

    /// One line per item, indented by depth. Byte strings and big integers (key material,
    /// private key parts) are shown as their length only.
    public var description: String {
        var lines: [String] = []
        func walk(_ item: TTLV, _ indent: String) {
            let shown: String
            switch item.value {
            case .structure(let items):
                lines.append("\(indent)\(item.tag): Structure")
                for child in items { walk(child, indent + "  ") }
                return
            case .integer(let v): shown = String(v)
            case .longInteger(let v): shown = String(v)
            case .bigInteger(let b): shown = "<\(b.count) bytes>"
            case .enumeration(let v): shown = "0x" + String(v, radix: 16, uppercase: true)
            case .boolean(let v): shown = String(v)
            case .textString(let s): shown = String(reflecting: s)
            case .byteString(let b): shown = "<\(b.count) bytes>"
            case .dateTime(let v): shown = String(v)
            case .interval(let v): shown = String(v)
            }
            lines.append("\(indent)\(item.tag): \(item.value.type) \(shown)")
        }
        walk(self, "")
        return lines.joined(separator: "\n")
    }

    private struct Reader {
        let bytes: [UInt8]
        let limits: Limits
        var offset = 0

        init(bytes: [UInt8], limits: Limits) {
            self.bytes = bytes
            self.limits = limits
        }

        /// Reads the item at `offset`, which must end by `end` (its parent's end).
        mutating func item(end: Int, depth: Int) throws -> TTLV {
            let start = offset
            guard end - start >= 8 else {
                throw TTLVError(offset: start, tag: nil, problem: .truncated(needed: 8, available: end - start))
            }
            let tag = Tag(rawValue: UInt32(bytes[start]) << 16 | UInt32(bytes[start + 1]) << 8 | UInt32(bytes[start + 2]))
            func fail(_ at: Int, _ problem: TTLVError.Problem) -> TTLVError {
                TTLVError(offset: at, tag: tag, problem: problem)
            }
            guard let type = ItemType(rawValue: bytes[start + 3]) else {
                throw fail(start + 3, .unknownType(bytes[start + 3]))
            }
            let length = bytes.readBigEndianUInt32(at: start + 4)
            let valueAt = start + 8
            let available = end - valueAt
            // Compared as UInt64 first, so no length can overflow the arithmetic below.
            guard UInt64(length) <= UInt64(available), let count = Int(exactly: length) else {
                throw fail(start + 4, .truncated(needed: Int(exactly: length) ?? Int.max, available: available))
            }
            let padded = count + (8 - count % 8) % 8
            guard padded <= available else {
                throw fail(valueAt + count, .truncated(needed: padded, available: available))
            }

            func fixed(_ size: Int) throws {
                guard count == size else { throw fail(start + 4, .invalidLength(type, UInt64(length))) }
            }
            let value: Value
            switch type {
            case .structure:
                guard depth <= limits.maximumDepth else { throw fail(start, .tooDeep(limit: limits.maximumDepth)) }
                guard count % 8 == 0 else { throw fail(start + 4, .invalidLength(type, UInt64(length))) }
                var items: [TTLV] = []
                offset = valueAt
                let valueEnd = valueAt + count
                while offset < valueEnd {
                    do {
                        items.append(try item(end: valueEnd, depth: depth + 1))
                    } catch var error as TTLVError {
                        if error.tag == nil { error.tag = tag }
                        throw error
                    }
                }
                value = .structure(items)
            case .integer:
                try fixed(4)
                value = .integer(Int32(bitPattern: bytes.readBigEndianUInt32(at: valueAt)))
            case .longInteger:
                try fixed(8)
                value = .longInteger(Int64(bitPattern: bytes.readBigEndianUInt64(at: valueAt)))
            case .bigInteger:
                guard count > 0, count % 8 == 0 else { throw fail(start + 4, .invalidLength(type, UInt64(length))) }
                value = .bigInteger(Array(bytes[valueAt..<valueAt + count]))
            case .enumeration:
                try fixed(4)
                value = .enumeration(bytes.readBigEndianUInt32(at: valueAt))
            case .boolean:
                try fixed(8)
                let raw = bytes.readBigEndianUInt64(at: valueAt)
                guard raw <= 1 else { throw fail(valueAt, .invalidBoolean(raw)) }
                value = .boolean(raw == 1)
            case .textString:
                guard let text = String(validating: bytes[valueAt..<valueAt + count], as: UTF8.self) else {
                    throw fail(valueAt, .invalidUTF8)
                }
                value = .textString(text)
            case .byteString:
                value = .byteString(Array(bytes[valueAt..<valueAt + count]))
            case .dateTime:
                try fixed(8)
                value = .dateTime(Int64(bitPattern: bytes.readBigEndianUInt64(at: valueAt)))
            case .interval:
                try fixed(4)
                value = .interval(bytes.readBigEndianUInt32(at: valueAt))
            }
            // Zero padding only: any other byte would be lost on re-encoding.
            for i in (valueAt + count)..<(valueAt + padded) where bytes[i] != 0 {
                throw fail(i, .nonZeroPadding)
            }
            offset = valueAt + padded
            return TTLV(tag, value)
        }
    }
}

/// Why bytes are not a valid TTLV item: the problem, the byte offset from the start of
/// the decoded bytes, and the tag of the innermost item concerned (nil when not even its
/// header could be read at the top level).
public struct TTLVError: Error, Equatable, CustomStringConvertible {
    public var offset: Int
    public var tag: TTLV.Tag?
    public var problem: Problem

    public enum Problem: Equatable, Sendable {
        /// The item or header needs `needed` bytes, and its enclosing item or the buffer has `available`.
        case truncated(needed: Int, available: Int)
        case unknownType(UInt8)
        /// A fixed-size type with another length, a Big Integer not a positive multiple of
        /// 8 bytes, or a Structure not a multiple of 8 bytes.
        case invalidLength(TTLV.ItemType, UInt64)
        case nonZeroPadding
        case invalidUTF8
        case invalidBoolean(UInt64)
        case tooDeep(limit: Int)
        case tooLarge(length: UInt64, limit: Int)
        case trailingBytes(Int)
        case notAStructure(TTLV.ItemType)
    }

    public var description: String {
        let what: String
        switch problem {
        case .truncated(let needed, let available):
            what = "truncated: \(needed == Int.max ? "more" : String(needed)) bytes needed, \(available) available"
        case .unknownType(let t): what = "unknown item type 0x" + String(t, radix: 16)
        case .invalidLength(let type, let length): what = "invalid length \(length) for \(type)"
        case .nonZeroPadding: what = "non-zero padding byte"
        case .invalidUTF8: what = "text string is not valid UTF-8"
        case .invalidBoolean(let v): what = "boolean value \(v) is neither 0 nor 1"
        case .tooDeep(let limit): what = "structures nested deeper than \(limit)"
        case .tooLarge(let length, let limit): what = "\(length) bytes exceed the limit of \(limit)"
        case .trailingBytes(let n): what = "\(n) bytes after the item"
        case .notAStructure(let type): what = "message is a \(type), not a Structure"
        }
        return "TTLV: \(what) at byte \(offset)" + (tag.map { " (tag \($0))" } ?? "")
    }
}

extension [UInt8] {
    mutating func appendBigEndian(_ v: UInt32) {
        append(contentsOf: [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16),
                            UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)])
    }

    mutating func appendBigEndian(_ v: UInt64) {
        appendBigEndian(UInt32(truncatingIfNeeded: v >> 32))
        appendBigEndian(UInt32(truncatingIfNeeded: v))
    }

    mutating func writeBigEndian(_ v: UInt32, at i: Int) {
        self[i] = UInt8(truncatingIfNeeded: v >> 24)
        self[i + 1] = UInt8(truncatingIfNeeded: v >> 16)
        self[i + 2] = UInt8(truncatingIfNeeded: v >> 8)
        self[i + 3] = UInt8(truncatingIfNeeded: v)
    }

    /// Callers have checked that 4 (or 8) bytes are there.
    func readBigEndianUInt32(at i: Int) -> UInt32 {
        UInt32(self[i]) << 24 | UInt32(self[i + 1]) << 16 | UInt32(self[i + 2]) << 8 | UInt32(self[i + 3])
    }

    func readBigEndianUInt64(at i: Int) -> UInt64 {
        UInt64(readBigEndianUInt32(at: i)) << 32 | UInt64(readBigEndianUInt32(at: i + 4))
    }
}
