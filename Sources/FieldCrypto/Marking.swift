import BSON
import Foundation

/// Intent-to-encrypt markings: the FLE 1 placeholders that mongocryptd puts where a value
/// must be encrypted, and that libmongocrypt replaces with ciphertext. ciphertail makes
/// them itself (`make`), puts them into documents in place of the plaintext values, and
/// has `MongoCryptEngine.encryptMarked` encrypt a whole batch of such documents at once.
///
/// Wire format, as libmongocrypt 1.7 parses it (`_mongocrypt_marking_parse_unowned` and
/// `_mongocrypt_marking_parse_fle1_placeholder` in src/mongocrypt-marking.c): BSON binary
/// subtype 6 whose first byte is 0 (FLE1EncryptionPlaceholder), followed by exactly one
/// BSON document with
///   - "a": int32, 1 deterministic or 2 random;
///   - "v": the value to encrypt, any type;
///   - exactly one of "ki" (the data key's id, binary subtype 4, 16 bytes) or "ka" (a
///     keyAltName, string).
/// No other field is allowed. A marking holds the plaintext: it must never leave the process.
public enum Marking {
    /// The marking for `value`. Whether `value` may be encrypted with `algorithm` is checked
    /// by `encryptMarked`, which names the field (deterministic refuses double, decimal128,
    /// bool, document, array and code with scope; nothing encrypts null, undefined, minKey,
    /// maxKey or a value that already is binary subtype 6).
    public static func make(value: BSONValue, key: DataKeySelector, algorithm: EncryptionAlgorithm) -> BSONValue {
        var b = DocumentBuilder()
        b.append("a", .int32(algorithm.markingCode))
        switch key {
        case .id(let id): b.append("ki", .binary(subtype: 4, data: id.keyIdBytes))
        case .altName(let name): b.append("ka", .string(name))
        }
        b.append("v", value)
        var data: [UInt8] = [RawMarking.fle1Placeholder]
        data += b.document.bytes
        return .binary(subtype: 6, data: data)
    }

    /// What a marking asks for.
    public struct Parsed: Equatable, Sendable {
        public let value: BSONValue
        public let key: DataKeySelector
        public let algorithm: EncryptionAlgorithm

        public init(value: BSONValue, key: DataKeySelector, algorithm: EncryptionAlgorithm) {
            self.value = value
            self.key = key
            self.algorithm = algorithm
        }
    }

    /// Reads a marking back. nil when `value` is not a FLE 1 marking at all (not binary
    /// subtype 6, or its first byte is not 0); throws when it is one but malformed.
    public static func parse(_ value: BSONValue) throws -> Parsed? {
        guard case .binary(6, let data) = value, data.first == RawMarking.fle1Placeholder else { return nil }
        return try data.withUnsafeBytes { p in
            let m: RawMarking
            do { m = try RawMarking.parse(p, dataStart: 0, dataEnd: p.count) } catch let problem as MarkingProblem {
                throw FieldCryptoError.invalidArgument("marking: \(problem.why)")
            }
            let inner = Document(trusted: Array(p[1...]))
            guard let v = inner["v"] else { throw FieldCryptoError.invalidArgument("marking: no 'v'") }
            return Parsed(value: v, key: m.key(p), algorithm: m.algorithm)
        }
    }
}

/// Batch sizes for `MongoCryptEngine.encryptMarked`.
///
/// MongoDB caps a command at 16 MiB (plus 16 KiB of overhead), and mongocryptd would refuse
/// a bigger one; libmongocrypt 1.7.2 and libbson themselves do not check (they go up to
/// 2 GiB). ciphertail keeps the same cap so that a batch stays a sane amount of memory:
/// one call briefly holds about five copies of its documents (input, the markings reply,
/// libmongocrypt's copy, its output, the split result).
public enum MarkedBatch {
    /// Hard limit: the total BSON size of the documents of one `encryptMarked` call.
    /// A bigger batch is refused with `FieldCryptoError.invalidArgument`; it is not split.
    public static let maxBytes = 16 << 20
    /// Recommended: batches of up to this many documents ...
    public static let recommendedDocuments = 1_000
    /// ... and up to this many bytes, whichever comes first. Beyond ~100 documents the
    /// per-call cost (one context, one key-cache lookup) is already negligible.
    public static let recommendedBytes = 8 << 20

    /// The private namespace whose schema (in the schema map) makes libmongocrypt ask for
    /// markings. Nothing is ever sent to it.
    static let database = "ciphertail_fle"
    static let collection = "marked"
    static var namespace: String { "\(database).\(collection)" }

    /// A schema map entry that requires encryption, so that libmongocrypt goes to
    /// NEED_MONGO_MARKINGS. libmongocrypt 1.7.2 only hands the schema to mongocryptd or
    /// crypt_shared (neither is used), so its content is never interpreted.
    static var schemaMap: Document {
        [namespace: [
            "bsonType": "object",
            "properties": ["value": ["encrypt": [
                "keyId": [.binary(subtype: 4, data: [UInt8](repeating: 0, count: 16))],
                "bsonType": "string",
                "algorithm": .string(EncryptionAlgorithm.random.rawValue),
            ]]],
        ]]
    }

    /// The command handed to `mongocrypt_ctx_encrypt_init`. libmongocrypt only reads its
    /// name and collection; the documents come from the markings reply.
    static var command: Document { ["insert": .string(collection), "documents": []] }
}

extension EncryptionAlgorithm {
    /// libmongocrypt's `mongocrypt_encryption_algorithm_t`, as "a" of a marking.
    var markingCode: Int32 { self == .deterministic ? 1 : 2 }
}

// MARK: - Raw BSON

/// A problem found while walking a document: `path` is filled in on the way out.
struct MarkingProblem: Error {
    var path: [String] = []
    let why: String

    func message(document index: Int) -> String {
        let field = path.isEmpty ? "" : ", field \"\(path.joined(separator: "."))\""
        return "document \(index)\(field): \(why)"
    }
}

/// Walking BSON bytes without decoding them, with bounds checks (a malformed document is a
/// thrown `MarkingProblem`, never a crash).
enum RawBSON {
    struct Element {
        var type: UInt8
        /// Offset of the type byte.
        var start: Int
        var keyStart: Int
        /// Offset of the key's terminating NUL.
        var keyEnd: Int
        var valueStart: Int
        var valueEnd: Int

        func key(_ p: UnsafeRawBufferPointer) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: p[keyStart..<keyEnd]), as: UTF8.self)
        }

        func keyIs(_ p: UnsafeRawBufferPointer, _ name: StaticString) -> Bool {
            let n = name.utf8CodeUnitCount
            guard keyEnd - keyStart == n else { return false }
            let s = name.utf8Start
            for i in 0..<n where p[keyStart + i] != s[i] { return false }
            return true
        }
    }

    @inline(__always)
    static func int32(_ p: UnsafeRawBufferPointer, _ at: Int) -> Int {
        Int(Int32(littleEndian: p.loadUnaligned(fromByteOffset: at, as: Int32.self)))
    }

    static func malformed(_ why: String) -> MarkingProblem { MarkingProblem(why: "malformed BSON: \(why)") }

    /// Checks the framing of the document at `start` (which must end by `limit`), then
    /// calls `body` for each element. Returns the document's end offset.
    @discardableResult
    static func forEachElement(_ p: UnsafeRawBufferPointer, document start: Int, limit: Int,
                               _ body: (Element) throws -> Void) throws -> Int {
        guard limit - start >= 5 else { throw malformed("document shorter than 5 bytes") }
        let length = int32(p, start)
        guard length >= 5, length <= limit - start else { throw malformed("bad document length") }
        let end = start + length
        guard p[end - 1] == 0 else { throw malformed("document does not end with 0") }
        var at = start + 4
        while at < end - 1 {
            let type = p[at]
            let keyStart = at + 1
            var keyEnd = keyStart
            while keyEnd < end - 1 && p[keyEnd] != 0 { keyEnd += 1 }
            guard keyEnd < end - 1 else { throw malformed("key runs past the document") }
            let valueStart = keyEnd + 1
            let valueEnd = valueStart + (try valueSize(type, p, at: valueStart, limit: end - 1))
            try body(Element(type: type, start: at, keyStart: keyStart, keyEnd: keyEnd,
                             valueStart: valueStart, valueEnd: valueEnd))
            at = valueEnd
        }
        guard at == end - 1 else { throw malformed("elements overrun the document") }
        return end
    }

    /// Size of a value of BSON type `type` at `at`, checked against `limit`.
    static func valueSize(_ type: UInt8, _ p: UnsafeRawBufferPointer, at: Int, limit: Int) throws -> Int {
        func need(_ n: Int) throws -> Int {
            guard n >= 0, n <= limit - at else { throw malformed("value of type \(type) runs past its document") }
            return n
        }
        func lengthPrefixed(extra: Int, min: Int) throws -> Int {
            _ = try need(4)
            let n = int32(p, at)
            guard n >= min else { throw malformed("bad length in a value of type \(type)") }
            return try need(4 + n + extra)
        }
        func cstring(from: Int) throws -> Int {
            var i = from
            while i < limit && p[i] != 0 { i += 1 }
            guard i < limit else { throw malformed("unterminated regex") }
            return i + 1
        }
        switch type {
        case 0x01, 0x09, 0x11, 0x12: return try need(8)
        case 0x02, 0x0D, 0x0E: return try lengthPrefixed(extra: 0, min: 1)
        case 0x03, 0x04:
            _ = try need(4)
            let n = int32(p, at)
            guard n >= 5 else { throw malformed("bad subdocument length") }
            return try need(n)
        case 0x05: return try lengthPrefixed(extra: 1, min: 0)
        case 0x06, 0x0A, 0x7F, 0xFF: return 0
        case 0x07: return try need(12)
        case 0x08: return try need(1)
        case 0x0B: return try cstring(from: cstring(from: at)) - at
        case 0x0C: return try lengthPrefixed(extra: 12, min: 1)
        case 0x0F:
            _ = try need(4)
            let n = int32(p, at)
            guard n >= 14 else { throw malformed("bad code-with-scope length") }
            return try need(n)
        case 0x10: return try need(4)
        case 0x13: return try need(16)
        default: throw malformed(String(format: "unknown BSON type 0x%02x", type))
        }
    }

    /// For a binary element: (subtype, data start, data end).
    @inline(__always)
    static func binary(_ p: UnsafeRawBufferPointer, _ e: Element) -> (subtype: UInt8, start: Int, end: Int) {
        (p[e.valueStart + 4], e.valueStart + 5, e.valueEnd)
    }

    static func appendInt32(_ out: inout [UInt8], _ v: Int) {
        withUnsafeBytes(of: Int32(truncatingIfNeeded: v).littleEndian) { out.append(contentsOf: $0) }
    }

    static func patchInt32(_ out: inout [UInt8], at: Int, _ v: Int) {
        withUnsafeBytes(of: Int32(truncatingIfNeeded: v).littleEndian) { b in
            for i in 0..<4 { out[at + i] = b[i] }
        }
    }

    static func appendKey(_ out: inout [UInt8], _ type: UInt8, _ key: String) {
        out.append(type)
        out.append(contentsOf: key.utf8)
        out.append(0)
    }
}

// MARK: - Markings in raw documents

/// One FLE 1 marking, parsed in place.
struct RawMarking {
    static let fle1Placeholder: UInt8 = 0
    static let fle2Placeholder: UInt8 = 3

    var algorithm: EncryptionAlgorithm
    /// "ki" data (16 bytes) or "ka" string bytes (without the NUL).
    var keyIsId: Bool
    var keyStart: Int
    var keyEnd: Int
    /// The "v" element.
    var value: RawBSON.Element

    func key(_ p: UnsafeRawBufferPointer) -> DataKeySelector {
        let bytes = UnsafeRawBufferPointer(rebasing: p[keyStart..<keyEnd])
        return keyIsId ? .id(UUID(keyIdBytes: Array(bytes))!) : .altName(String(decoding: bytes, as: UTF8.self))
    }

    /// `{"v": <value>}`: what explicit encryption takes.
    func valueDocument(_ p: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = [0, 0, 0, 0, value.type, 0x76, 0]  // type, "v", NUL
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[value.valueStart..<value.valueEnd]))
        out.append(0)
        RawBSON.patchInt32(&out, at: 0, out.count)
        return out
    }

    /// Parses the binary data `p[dataStart..<dataEnd]` whose first byte is 0, following
    /// libmongocrypt's rules, then checks the value may be encrypted with the algorithm
    /// (libmongocrypt trusts mongocryptd for that and does not check it for markings).
    static func parse(_ p: UnsafeRawBufferPointer, dataStart: Int, dataEnd: Int) throws -> RawMarking {
        func bad(_ why: String) -> MarkingProblem { MarkingProblem(why: "invalid marking: \(why)") }
        guard dataEnd - dataStart >= 6 else { throw bad("shorter than 6 bytes") }
        let docStart = dataStart + 1
        guard RawBSON.int32(p, docStart) == dataEnd - docStart else {
            throw bad("its document does not fill the binary exactly")
        }
        var algorithm: EncryptionAlgorithm?
        var key: (isId: Bool, start: Int, end: Int)?
        var value: RawBSON.Element?
        do {
            try RawBSON.forEachElement(p, document: docStart, limit: dataEnd) { e in
                if e.keyIs(p, "a") {
                    guard e.type == 0x10 else { throw bad("'a' must be an int32") }
                    switch RawBSON.int32(p, e.valueStart) {
                    case 1: algorithm = .deterministic
                    case 2: algorithm = .random
                    case let other: throw bad("invalid algorithm value \(other)")
                    }
                } else if e.keyIs(p, "v") {
                    value = e
                } else if e.keyIs(p, "ki") {
                    guard e.type == 0x05 else { throw bad("key id must be a UUID") }
                    let b = RawBSON.binary(p, e)
                    guard b.subtype == 4, b.end - b.start == 16 else { throw bad("key id must be a UUID") }
                    if let key, !key.isId { throw bad("both 'ki' and 'ka' specified") }
                    key = (true, b.start, b.end)
                } else if e.keyIs(p, "ka") {
                    guard e.type == 0x02 else { throw bad("key alt name must be a string") }
                    if let key, key.isId { throw bad("both 'ki' and 'ka' specified") }
                    key = (false, e.valueStart + 4, e.valueEnd - 1)
                } else {
                    throw bad("unrecognized field '\(e.key(p))'")
                }
            }
        } catch let problem as MarkingProblem where problem.why.hasPrefix("malformed") {
            throw bad(problem.why)
        }
        guard let value else { throw bad("no 'v' specified") }
        guard let key else { throw bad("neither 'ki' nor 'ka' specified") }
        guard let algorithm else { throw bad("no 'a' specified") }
        try checkPermitted(p, value, algorithm)
        return RawMarking(algorithm: algorithm, keyIsId: key.isId, keyStart: key.start, keyEnd: key.end, value: value)
    }

    /// libmongocrypt's `_permitted_for_encryption` (explicit encryption), applied to markings.
    static func checkPermitted(_ p: UnsafeRawBufferPointer, _ v: RawBSON.Element, _ algorithm: EncryptionAlgorithm) throws {
        func name(_ t: UInt8) -> String {
            switch t {
            case 0x01: return "double"
            case 0x03: return "document"
            case 0x04: return "array"
            case 0x08: return "bool"
            case 0x0F: return "code with scope"
            case 0x13: return "decimal128"
            case 0x0A: return "null"
            case 0x06: return "undefined"
            case 0xFF: return "minKey"
            case 0x7F: return "maxKey"
            default: return String(format: "BSON type 0x%02x", t)
            }
        }
        switch v.type {
        case 0x0A, 0x06, 0xFF, 0x7F:
            throw MarkingProblem(why: "the marked value is \(name(v.type)), which cannot be encrypted")
        case 0x05 where RawBSON.binary(p, v).subtype == 6:
            throw MarkingProblem(why: "the marked value is already binary subtype 6 (encrypted or a marking); it cannot be encrypted again")
        case 0x01, 0x03, 0x04, 0x08, 0x0F, 0x13:
            // (A `where` after several patterns would guard only the last one.)
            if algorithm == .deterministic {
                throw MarkingProblem(why: "the marked value is a \(name(v.type)), which deterministic encryption refuses "
                    + "(double, decimal128, bool, document, array and code with scope need random)")
            }
        default:
            break
        }
    }
}

enum MarkingWalk {
    /// Is this element a marking? Throws for a FLE 2 placeholder, which ciphertail does not make.
    @inline(__always)
    static func markingData(_ p: UnsafeRawBufferPointer, _ e: RawBSON.Element) throws -> (start: Int, end: Int)? {
        guard e.type == 0x05 else { return nil }
        let b = RawBSON.binary(p, e)
        guard b.subtype == 6, b.end > b.start else { return nil }
        switch p[b.start] {
        case RawMarking.fle1Placeholder: return (b.start, b.end)
        case RawMarking.fle2Placeholder:
            throw MarkingProblem(why: "a Queryable Encryption (FLE 2) placeholder; only FLE 1 markings are supported")
        default: return nil  // ciphertext: left alone
        }
    }

    /// Checks every marking of one document (at any depth, in subdocuments and arrays, as
    /// libmongocrypt traverses) and returns how many there are. A marking inside a
    /// code-with-scope scope is refused: libmongocrypt would leave it, plaintext, in place.
    static func check(_ p: UnsafeRawBufferPointer, document start: Int, limit: Int) throws -> Int {
        var count = 0
        try RawBSON.forEachElement(p, document: start, limit: limit) { e in
            do {
                if let data = try markingData(p, e) {
                    _ = try RawMarking.parse(p, dataStart: data.start, dataEnd: data.end)
                    count += 1
                } else if e.type == 0x03 || e.type == 0x04 {
                    count += try check(p, document: e.valueStart, limit: e.valueEnd)
                } else if e.type == 0x0F {
                    try refuseMarkingsInScope(p, e)
                }
            } catch var problem as MarkingProblem {
                problem.path.insert(e.key(p), at: 0)
                throw problem
            }
        }
        return count
    }

    /// libmongocrypt does not look into code-with-scope scopes: a marking there would stay
    /// in place, plaintext included.
    static func refuseMarkingsInScope(_ p: UnsafeRawBufferPointer, _ e: RawBSON.Element) throws {
        // int32 total, string (int32 length, bytes), scope document.
        let scope = e.valueStart + 8 + RawBSON.int32(p, e.valueStart + 4)
        guard scope > e.valueStart + 8, scope < e.valueEnd else { throw RawBSON.malformed("bad code with scope") }
        if try check(p, document: scope, limit: e.valueEnd) > 0 {
            throw MarkingProblem(why: "a marking inside a code-with-scope scope (libmongocrypt would leave it unencrypted)")
        }
    }

    /// Copies the document at `start` to `out`, replacing every marking with
    /// `encrypt(marking)` (the data of a binary subtype 6) and copying every other byte.
    static func rewrite(_ p: UnsafeRawBufferPointer, document start: Int, limit: Int, into out: inout [UInt8],
                        _ encrypt: (RawMarking) throws -> [UInt8]) throws {
        let header = out.count
        RawBSON.appendInt32(&out, 0)
        try RawBSON.forEachElement(p, document: start, limit: limit) { e in
            do {
                if let data = try markingData(p, e) {
                    let ciphertext = try encrypt(try RawMarking.parse(p, dataStart: data.start, dataEnd: data.end))
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[e.start...e.keyEnd]))  // type 0x05, key
                    RawBSON.appendInt32(&out, ciphertext.count)
                    out.append(6)
                    out.append(contentsOf: ciphertext)
                } else if e.type == 0x03 || e.type == 0x04 {
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[e.start...e.keyEnd]))
                    try rewrite(p, document: e.valueStart, limit: e.valueEnd, into: &out, encrypt)
                } else {
                    if e.type == 0x0F { try refuseMarkingsInScope(p, e) }
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[e.start..<e.valueEnd]))
                }
            } catch var problem as MarkingProblem {
                problem.path.insert(e.key(p), at: 0)
                throw problem
            }
        }
        out.append(0)
        RawBSON.patchInt32(&out, at: header, out.count - header)
    }

    /// mongocryptd's reply to the markings command, with `documents` as the marked insert:
    /// {hasEncryptionPlaceholders: true, schemaRequiresEncryption: true,
    ///  result: {insert: <collection>, documents: [...]}, ok: 1.0}
    /// libmongocrypt 1.7.2 reads only "schemaRequiresEncryption" and "result" (it looks for
    /// "hasEncryptedPlaceholders", not mongocryptd's "hasEncryptionPlaceholders"), and takes
    /// "result" as the command to encrypt without comparing it with the original one.
    static func markingsReply(collection: String, documents: [Document], totalBytes: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(totalBytes + documents.count * 8 + 128)
        RawBSON.appendInt32(&out, 0)
        RawBSON.appendKey(&out, 0x08, "hasEncryptionPlaceholders"); out.append(1)
        RawBSON.appendKey(&out, 0x08, "schemaRequiresEncryption"); out.append(1)
        RawBSON.appendKey(&out, 0x03, "result")
        let result = out.count
        RawBSON.appendInt32(&out, 0)
        RawBSON.appendKey(&out, 0x02, "insert")
        RawBSON.appendInt32(&out, collection.utf8.count + 1)
        out.append(contentsOf: collection.utf8); out.append(0)
        RawBSON.appendKey(&out, 0x04, "documents")
        let array = out.count
        RawBSON.appendInt32(&out, 0)
        for (i, d) in documents.enumerated() {
            RawBSON.appendKey(&out, 0x03, String(i))
            out.append(contentsOf: d.bytes)
        }
        out.append(0)
        RawBSON.patchInt32(&out, at: array, out.count - array)
        out.append(0)
        RawBSON.patchInt32(&out, at: result, out.count - result)
        RawBSON.appendKey(&out, 0x01, "ok")
        withUnsafeBytes(of: (1.0 as Double).bitPattern.littleEndian) { out.append(contentsOf: $0) }
        out.append(0)
        RawBSON.patchInt32(&out, at: 0, out.count)
        return out
    }

    /// The elements of the "documents" array of a finalized insert command.
    static func documents(ofCommand bytes: [UInt8]) throws -> [Document] {
        try bytes.withUnsafeBytes { p in
            var docs: [Document]?
            try RawBSON.forEachElement(p, document: 0, limit: p.count) { e in
                guard e.keyIs(p, "documents") else { return }
                guard e.type == 0x04 else { throw RawBSON.malformed("'documents' is not an array") }
                var list: [Document] = []
                try RawBSON.forEachElement(p, document: e.valueStart, limit: e.valueEnd) { d in
                    guard d.type == 0x03 else { throw RawBSON.malformed("a document is not a document") }
                    list.append(Document(trusted: Array(UnsafeRawBufferPointer(rebasing: p[d.valueStart..<d.valueEnd]))))
                }
                docs = list
            }
            guard let docs else { throw RawBSON.malformed("no 'documents' in the encrypted command") }
            return docs
        }
    }
}
