import Foundation

/// Reads the fields of a Structure that came from a server. Fields are looked up by tag, not
/// position, and fields nobody asks for are ignored: servers add optional ones (Nonce,
/// correlation values, vendor extensions). A wanted field of the wrong type, or repeated
/// where the specification allows one, is a `KMIPMessageError` naming where it was.
struct Fields {
    let items: [TTLV]
    /// Tags from the message down to this structure, for errors.
    let path: [TTLV.Tag]

    init(_ item: TTLV, parent: [TTLV.Tag] = []) throws {
        guard case .structure(let items) = item.value else {
            throw KMIPMessageError(path: parent, problem: .wrongType(item.tag, expected: .structure, found: item.value.type))
        }
        self.items = items
        path = parent + [item.tag]
    }

    func error(_ problem: KMIPMessageError.Problem) -> KMIPMessageError {
        KMIPMessageError(path: path, problem: problem)
    }

    func all(_ tag: TTLV.Tag) -> [TTLV] { items.filter { $0.tag == tag } }

    func optional(_ tag: TTLV.Tag) throws -> TTLV? {
        var found: TTLV?
        for item in items where item.tag == tag {
            guard found == nil else { throw error(.repeated(tag)) }
            found = item
        }
        return found
    }

    func required(_ tag: TTLV.Tag) throws -> TTLV {
        guard let item = try optional(tag) else { throw error(.missing(tag)) }
        return item
    }

    func wrongType(_ item: TTLV, _ expected: TTLV.ItemType) -> KMIPMessageError {
        error(.wrongType(item.tag, expected: expected, found: item.value.type))
    }

    // Typed readers. `optional...` returns nil when the field is absent and throws when it
    // is there with the wrong type.

    func structure(_ tag: TTLV.Tag) throws -> Fields { try Fields(required(tag), parent: path) }

    func optionalStructure(_ tag: TTLV.Tag) throws -> Fields? {
        try optional(tag).map { try Fields($0, parent: path) }
    }

    func text(_ item: TTLV) throws -> String {
        guard case .textString(let s) = item.value else { throw wrongType(item, .textString) }
        return s
    }

    func text(_ tag: TTLV.Tag) throws -> String { try text(required(tag)) }
    func optionalText(_ tag: TTLV.Tag) throws -> String? { try optional(tag).map(text) }

    func integer(_ item: TTLV) throws -> Int32 {
        guard case .integer(let v) = item.value else { throw wrongType(item, .integer) }
        return v
    }

    func integer(_ tag: TTLV.Tag) throws -> Int32 { try integer(required(tag)) }
    func optionalInteger(_ tag: TTLV.Tag) throws -> Int32? { try optional(tag).map(integer) }

    func enumeration<E: KMIPEnumeration>(_ item: TTLV, as _: E.Type = E.self) throws -> E {
        guard case .enumeration(let v) = item.value else { throw wrongType(item, .enumeration) }
        return E(rawValue: v)
    }

    func enumeration<E: KMIPEnumeration>(_ tag: TTLV.Tag, as _: E.Type = E.self) throws -> E {
        try enumeration(required(tag))
    }

    func optionalEnumeration<E: KMIPEnumeration>(_ tag: TTLV.Tag, as _: E.Type = E.self) throws -> E? {
        try optional(tag).map { try enumeration($0) }
    }

    func bytes(_ item: TTLV) throws -> [UInt8] {
        guard case .byteString(let b) = item.value else { throw wrongType(item, .byteString) }
        return b
    }

    func bytes(_ tag: TTLV.Tag) throws -> [UInt8] { try bytes(required(tag)) }
    func optionalBytes(_ tag: TTLV.Tag) throws -> [UInt8]? { try optional(tag).map(bytes) }

    func dateTime(_ item: TTLV) throws -> Int64 {
        guard case .dateTime(let v) = item.value else { throw wrongType(item, .dateTime) }
        return v
    }

    func optionalDateTime(_ tag: TTLV.Tag) throws -> Int64? { try optional(tag).map(dateTime) }
}

// Building requests: short constructors for the items a payload is made of.
extension TTLV {
    static func structure(_ tag: Tag, _ items: [TTLV]) -> TTLV { TTLV(tag, .structure(items)) }
    static func text(_ tag: Tag, _ s: String) -> TTLV { TTLV(tag, .textString(s)) }
    static func integer(_ tag: Tag, _ v: Int32) -> TTLV { TTLV(tag, .integer(v)) }
    static func enumeration(_ tag: Tag, _ e: some KMIPEnumeration) -> TTLV { TTLV(tag, .enumeration(e.rawValue)) }
    static func bytes(_ tag: Tag, _ b: [UInt8]) -> TTLV { TTLV(tag, .byteString(b)) }

    /// The children of a Structure, or nil.
    var children: [TTLV]? {
        if case .structure(let items) = value { return items }
        return nil
    }

    /// The first child with `tag`.
    subscript(_ tag: Tag) -> TTLV? { children?.first { $0.tag == tag } }
}

/// KMIP Date-Time is whole seconds; dates outside Int64's range are clamped, never trapped on.
func kmipSeconds(_ date: Date) -> Int64 {
    let t = date.timeIntervalSince1970.rounded(.down)
    if let s = Int64(exactly: t) { return s }
    return t < 0 ? .min : .max
}

func kmipDate(_ seconds: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(seconds)) }
