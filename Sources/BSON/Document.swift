import CBSON

/// Errors from BSON parsing and building. They describe position and cause, never values.
public enum BSONError: Error, CustomStringConvertible, Equatable {
    case invalidDocument(String)
    case invalidJSON(String)

    public var description: String {
        switch self {
        case .invalidDocument(let why): return "invalid BSON document: \(why)"
        case .invalidJSON(let why): return "invalid extended JSON: \(why)"
        }
    }
}

/// A BSON document held as its raw bytes. Raw bytes are the unit ciphertail moves around
/// (cursor to archive to bulk insert) so that a document is never re-encoded and stays
/// byte-for-byte the same. Parsing and building go through libbson.
public struct Document: Equatable, Hashable, @unchecked Sendable, CustomStringConvertible {
    public private(set) var bytes: [UInt8]

    /// The empty document `{}`.
    public init() { bytes = [5, 0, 0, 0, 0] }

    /// Takes raw BSON and checks its framing and structure with libbson.
    public init(bytes: [UInt8]) throws {
        try Document.validate(bytes)
        self.bytes = bytes
    }

    /// Takes raw BSON that came from a trusted producer (libbson itself) without re-validating.
    public init(trusted bytes: [UInt8]) { self.bytes = bytes }

    /// Parses canonical or relaxed extended JSON (v2) with libbson.
    public init(json: String) throws {
        var error = bson_error_t()
        let utf8 = Array(json.utf8)
        guard let b = utf8.withUnsafeBufferPointer({ bson_new_from_json($0.baseAddress, $0.count, &error) }) else {
            throw BSONError.invalidJSON(LibBSON.message(error))
        }
        defer { bson_destroy(b) }
        bytes = LibBSON.copyBytes(b)
    }

    /// Builds a document from ordered key/value pairs.
    public init(_ pairs: KeyValuePairs<String, BSONValue>) {
        var builder = DocumentBuilder()
        for (k, v) in pairs { builder.append(k, v) }
        self = builder.document
    }

    public init(elements: [(String, BSONValue)]) {
        var builder = DocumentBuilder()
        for (k, v) in elements { builder.append(k, v) }
        self = builder.document
    }

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.count <= 5 }

    /// Canonical extended JSON: exact, round-trips every BSON type.
    public var canonicalJSON: String { LibBSON.withStatic(bytes) { LibBSON.json($0, canonical: true) } }
    /// Relaxed extended JSON: for people.
    public var relaxedJSON: String { LibBSON.withStatic(bytes) { LibBSON.json($0, canonical: false) } }
    public var description: String { relaxedJSON }

    /// Top-level elements in order.
    public var elements: [(key: String, value: BSONValue)] {
        LibBSON.withStatic(bytes) { LibBSON.elements($0) }
    }

    public var keys: [String] { elements.map(\.key) }

    /// True when a binary value of this subtype (or, if asked, JavaScript code with scope)
    /// appears anywhere in the document.
    public func contains(binarySubtype: UInt8, orScopedCode: Bool = false) -> Bool {
        LibBSON.withStatic(bytes) { LibBSON.contains($0, binarySubtype: binarySubtype, orScopedCode: orScopedCode) }
    }

    public subscript(key: String) -> BSONValue? {
        LibBSON.withStatic(bytes) { LibBSON.find($0, key) }
    }

    /// Value at a dotted path through subdocuments (not arrays).
    public func value(atPath path: String) -> BSONValue? {
        var current: BSONValue = .document(self)
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard case .document(let d) = current, let next = d[String(part)] else { return nil }
            current = next
        }
        return current
    }

    /// A copy with `key` set (replaced in place when present, appended otherwise).
    public func setting(_ key: String, _ value: BSONValue) -> Document {
        var out = DocumentBuilder()
        var seen = false
        for (k, v) in elements {
            if k == key { out.append(k, value); seen = true } else { out.append(k, v) }
        }
        if !seen { out.append(key, value) }
        return out.document
    }

    /// A copy without the given top-level keys.
    public func removing(_ keys: Set<String>) -> Document {
        var out = DocumentBuilder()
        for (k, v) in elements where !keys.contains(k) { out.append(k, v) }
        return out.document
    }

    /// Checks that `bytes` is exactly one well-formed BSON document.
    public static func validate(_ bytes: [UInt8]) throws {
        guard bytes.count >= 5 else { throw BSONError.invalidDocument("\(bytes.count) bytes is shorter than the 5-byte minimum") }
        let declared = Int(UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
        guard declared == bytes.count else {
            throw BSONError.invalidDocument("length prefix says \(declared) bytes, have \(bytes.count)")
        }
        try bytes.withUnsafeBufferPointer { buf in
            try validate(UnsafeRawBufferPointer(buf))
        }
    }

    /// Checks one well-formed BSON document in place (no copy).
    public static func validate(_ raw: UnsafeRawBufferPointer) throws {
        var offset = 0
        let ok = raw.withMemoryRebound(to: UInt8.self) { buf -> Bool in
            guard let reader = bson_reader_new_from_data(buf.baseAddress, buf.count) else { return false }
            defer { bson_reader_destroy(reader) }
            var eof = false
            guard let b = bson_reader_read(reader, &eof) else { return false }
            var invalidAt = 0
            let valid = bson_validate(b, BSON_VALIDATE_NONE, &invalidAt)
            offset = invalidAt
            return valid && bson_reader_read(reader, &eof) == nil && Int(bson_reader_tell(reader)) == buf.count
        }
        if !ok { throw BSONError.invalidDocument("malformed structure near byte \(offset)") }
    }
}

/// Appends elements with libbson; `document` yields the finished bytes.
public struct DocumentBuilder {
    private final class Storage {
        let b: OpaquePointer
        init() { b = bson_new() }
        deinit { bson_destroy(b) }
    }
    private var storage = Storage()

    public init() {}

    private mutating func unique() {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = Storage()
            bson_concat(copy.b, storage.b)
            storage = copy
        }
    }

    public mutating func append(_ key: String, _ value: BSONValue) {
        unique()
        LibBSON.append(storage.b, key, value)
    }

    public mutating func append(_ key: String, document: Document) { append(key, .document(document)) }

    public var document: Document { Document(trusted: LibBSON.copyBytes(storage.b)) }
}

extension Document: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, BSONValue)...) {
        self.init(elements: elements)
    }
}

// Package-internal bridge for the other C wrapper modules (Mongo, FieldCrypto); the
// domain modules never see a pointer.
extension Document {
    package func withUnsafeBSON<R>(_ body: (OpaquePointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBufferPointer { buf in
            guard let b = ct_bson_static_new(buf.baseAddress!, buf.count) else {
                preconditionFailure("bson_init_static refused a validated document")
            }
            defer { bson_free(UnsafeMutableRawPointer(b)) }
            return try body(b)
        }
    }

    package init(copying b: OpaquePointer) { self.init(trusted: LibBSON.copyBytes(b)) }

    /// Views raw bytes (a record inside a decompressed block) as a bson_t without copying.
    package static func withUnsafeBSON<R>(raw: UnsafeRawBufferPointer, _ body: (OpaquePointer) throws -> R) rethrows -> R {
        guard let b = ct_bson_static_new(raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count) else {
            preconditionFailure("bson_init_static refused a record")
        }
        defer { bson_free(UnsafeMutableRawPointer(b)) }
        return try body(b)
    }

    package static func message(of error: bson_error_t) -> String { LibBSON.message(error) }
}
