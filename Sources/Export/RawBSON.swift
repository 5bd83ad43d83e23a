/// A minimal walker over raw BSON bytes. The replay edits documents element by element and
/// must keep every element it does not touch byte for byte (no decode and re-encode through
/// libbson, which would, for example, reorder regex options), so it works on the bytes.
enum RawBSON {
    struct Malformed: Error, CustomStringConvertible {
        let reason: String
        var description: String { "malformed BSON: \(reason)" }
    }

    /// One element: its type byte, key bytes, and value bytes (without type and key).
    struct Element {
        var type: UInt8
        var key: [UInt8]
        var value: ArraySlice<UInt8>
    }

    static func int32(_ b: ArraySlice<UInt8>, at i: Int) -> Int {
        Int(Int32(bitPattern: UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24))
    }

    /// The elements of one document (or array), with its framing checked.
    static func elements(_ doc: ArraySlice<UInt8>) throws -> [Element] {
        var out: [Element] = []
        try walk(doc) { type, keyRange, value in
            out.append(Element(type: type, key: Array(doc[keyRange]), value: value))
            return true
        }
        return out
    }

    /// Visits the elements in order until `body` returns false.
    static func walk(_ doc: ArraySlice<UInt8>, _ body: (UInt8, Range<Int>, ArraySlice<UInt8>) throws -> Bool) throws {
        let start = doc.startIndex
        guard doc.count >= 5 else { throw Malformed(reason: "document of \(doc.count) bytes") }
        let length = int32(doc, at: start)
        guard length == doc.count, doc[doc.endIndex - 1] == 0 else {
            throw Malformed(reason: "length prefix \(length) for \(doc.count) bytes")
        }
        var i = start + 4
        let end = doc.endIndex - 1
        while i < end {
            let type = doc[i]
            i += 1
            guard let nul = doc[i..<end].firstIndex(of: 0) else { throw Malformed(reason: "unterminated key") }
            let key = i..<nul
            i = nul + 1
            let size = try valueSize(type, doc, at: i, end: end)
            if try !body(type, key, doc[i..<i + size]) { return }
            i += size
        }
        guard i == end else { throw Malformed(reason: "elements run past the document") }
    }

    /// Size of the value of `type` starting at `i`, checked against `end`.
    static func valueSize(_ type: UInt8, _ b: ArraySlice<UInt8>, at i: Int, end: Int) throws -> Int {
        func need(_ n: Int) throws -> Int {
            guard n >= 0, i + n <= end else { throw Malformed(reason: "value of type \(type) runs past the document") }
            return n
        }
        func lengthPrefixed(extra: Int) throws -> Int {
            _ = try need(4)
            let n = int32(b, at: i)
            guard n >= 0 else { throw Malformed(reason: "negative length") }
            return try need(4 + extra + n)
        }
        func cstring(from j: Int) throws -> Int {
            guard let nul = b[j..<end].firstIndex(of: 0) else { throw Malformed(reason: "unterminated string") }
            return nul + 1 - j
        }
        switch type {
        case 0x01, 0x09, 0x11, 0x12: return try need(8)
        case 0x02, 0x0D, 0x0E: return try lengthPrefixed(extra: 0)
        case 0x03, 0x04, 0x0F:
            _ = try need(4)
            return try need(int32(b, at: i))
        case 0x05: return try lengthPrefixed(extra: 1)
        case 0x06, 0x0A, 0x7F, 0xFF: return 0
        case 0x07: return try need(12)
        case 0x08: return try need(1)
        case 0x0B:
            let p = try cstring(from: i)
            return try need(p + cstring(from: i + p))
        case 0x0C: return try need(try lengthPrefixed(extra: 0) + 12)
        case 0x10: return try need(4)
        case 0x13: return try need(16)
        default: throw Malformed(reason: "unknown element type \(type)")
        }
    }

    /// Appends one element.
    static func append(_ type: UInt8, _ key: [UInt8], _ value: some Collection<UInt8>, to out: inout [UInt8]) {
        out.append(type)
        out.append(contentsOf: key)
        out.append(0)
        out.append(contentsOf: value)
    }

    /// Wraps element bytes into a document: length prefix and terminator.
    static func document(_ body: [UInt8]) -> [UInt8] {
        let n = UInt32(body.count + 5)
        return [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)] + body + [0]
    }

    /// The `_id` value of a document, found without reading past it (it is almost always first).
    static func idValue(_ doc: ArraySlice<UInt8>) throws -> (type: UInt8, value: ArraySlice<UInt8>)? {
        var found: (UInt8, ArraySlice<UInt8>)?
        try walk(doc) { type, key, value in
            guard key.count == 3, doc[key.lowerBound] == 0x5F, doc[key.lowerBound + 1] == 0x69, doc[key.lowerBound + 2] == 0x64 else { return true }
            found = (type, value)
            return false
        }
        return found
    }

    static let idKey: [UInt8] = Array("_id".utf8)
}
