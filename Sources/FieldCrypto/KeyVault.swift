import BSON
import Foundation

/// Where data key documents live. MongoDB drivers keep them in a key vault collection
/// (`encryption.__keyVault`); ciphertail can also keep them in a file (`FileKeyVault`).
/// Implementations must be safe to call from several threads.
public protocol KeyVault: AnyObject {
    /// The key documents whose `_id` is in `query.ids` or whose `keyAltNames` contain one of
    /// `query.altNames`, each at most once.
    func keys(matching query: KeyVaultQuery) throws -> [Document]
    /// Stores a new key document; refuses a duplicate `_id` or keyAltName (MongoDB enforces
    /// the same with a unique index on keyAltNames).
    func insert(_ keyDocument: Document) throws
    /// Several keys at once (one durable write where the store allows).
    func insert(contentsOf keyDocuments: [Document]) throws
    /// Every key document, in insertion order.
    func allKeys() throws -> [Document]
    /// The ids of the keys with these keyAltNames; names without a key are absent.
    func keyIds(forAltNames names: [String]) throws -> [String: UUID]
    /// Replaces stored keys by new versions of themselves (same `_id`; master key rotation
    /// rewraps keyMaterial). Every id must exist. All at once where the store allows.
    func replace(_ keyDocuments: [Document]) throws
    /// Destroys the keys with these ids (crypto-shredding); ids not in the vault are skipped.
    /// Returns how many were there. Durable before it returns.
    func delete(ids: [UUID]) throws -> Int
    /// Drops what this handle holds in memory of keys another process may have deleted, so
    /// the next lookup reads the store again.
    func reload() throws
}

/// A key-vault lookup: libmongocrypt's find filter, parsed. libmongocrypt 1.7 always asks
/// `{"$or": [{"_id": {"$in": [UUID, ...]}}, {"keyAltNames": {"$in": [String, ...]}}]}`,
/// with either list possibly empty.
public struct KeyVaultQuery: Equatable, Sendable {
    public private(set) var ids: [UUID] = []
    public private(set) var altNames: [String] = []
    /// The find filter itself, for a vault that is a MongoDB collection and can run it as is.
    public let filter: Document

    /// A query for these ids and names, with its filter in libmongocrypt's shape.
    public init(ids: [UUID] = [], altNames: [String] = []) {
        self.ids = ids
        self.altNames = altNames
        filter = ["$or": [
            ["_id": ["$in": .array(ids.map { .binary(subtype: 4, data: $0.keyIdBytes) })]],
            ["keyAltNames": ["$in": .array(altNames.map { .string($0) })]],
        ]]
    }

    /// Parses a filter of libmongocrypt's shape. Anything else is refused rather than
    /// guessed at: answering a filter wrongly would feed libmongocrypt the wrong keys.
    public init(filter: Document) throws {
        self.filter = filter
        let elements = filter.elements
        if elements.count == 1, elements[0].key == "$or" {
            guard case .array(let clauses) = elements[0].value else {
                throw FieldCryptoError.unsupportedKeyVaultFilter("$or is not an array")
            }
            for clause in clauses {
                guard case .document(let c) = clause else {
                    throw FieldCryptoError.unsupportedKeyVaultFilter("$or clause is not a document")
                }
                try add(clause: c)
            }
        } else {
            try add(clause: filter)
        }
    }

    private mutating func add(clause: Document) throws {
        for (field, condition) in clause.elements {
            guard case .document(let cond) = condition, cond.keys == ["$in"], case .array(let list)? = cond["$in"] else {
                throw FieldCryptoError.unsupportedKeyVaultFilter("condition on \(field) is not {$in: [...]}")
            }
            switch field {
            case "_id":
                for v in list {
                    guard case .binary(4, let bytes) = v, let id = UUID(keyIdBytes: bytes) else {
                        throw FieldCryptoError.unsupportedKeyVaultFilter("_id value is not a UUID (binary subtype 4)")
                    }
                    ids.append(id)
                }
            case "keyAltNames":
                for v in list {
                    guard case .string(let s) = v else {
                        throw FieldCryptoError.unsupportedKeyVaultFilter("keyAltNames value is not a string")
                    }
                    altNames.append(s)
                }
            default:
                throw FieldCryptoError.unsupportedKeyVaultFilter("unknown field \(field)")
            }
        }
    }

    public var isEmpty: Bool { ids.isEmpty && altNames.isEmpty }

    public func matches(_ key: DataKeyInfo) -> Bool {
        ids.contains(key.id) || key.altNames.contains(where: altNames.contains)
    }

    /// The requested ids and names that none of `keys` answers.
    func unanswered(by keys: [DataKeyInfo]) -> (ids: [UUID], altNames: [String]) {
        (ids.filter { id in !keys.contains { $0.id == id } },
         altNames.filter { name in !keys.contains { $0.altNames.contains(name) } })
    }
}

/// The fields of a data key document that this module reads. Constructing one checks the
/// document's shape; it never exposes keyMaterial.
public struct DataKeyInfo: Equatable, Sendable {
    public let id: UUID
    public let altNames: [String]
    /// `masterKey.provider`: "local", "kmip", ...
    public let provider: String

    public init(_ key: Document) throws {
        guard case .binary(4, let idBytes)? = key["_id"], let id = UUID(keyIdBytes: idBytes) else {
            throw FieldCryptoError.invalidKeyDocument("_id is not a UUID (binary subtype 4)")
        }
        guard case .binary(_, let material)? = key["keyMaterial"], !material.isEmpty else {
            throw FieldCryptoError.invalidKeyDocument("key \(id.keyIdString) has no keyMaterial")
        }
        guard case .document(let mk)? = key["masterKey"], case .string(let provider)? = mk["provider"] else {
            throw FieldCryptoError.invalidKeyDocument("key \(id.keyIdString) has no masterKey.provider")
        }
        var names: [String] = []
        switch key["keyAltNames"] {
        case nil: break
        case .array(let list)?:
            for v in list {
                guard case .string(let s) = v else {
                    throw FieldCryptoError.invalidKeyDocument("key \(id.keyIdString) has a keyAltName that is not a string")
                }
                names.append(s)
            }
        default:
            throw FieldCryptoError.invalidKeyDocument("key \(id.keyIdString) has keyAltNames that is not an array")
        }
        self.id = id
        self.altNames = names
        self.provider = provider
    }
}

extension KeyVault {
    public func reload() throws {}

    public func insert(contentsOf keyDocuments: [Document]) throws {
        for d in keyDocuments { try insert(d) }
    }

    public func keyIds(forAltNames names: [String]) throws -> [String: UUID] {
        guard !names.isEmpty else { return [:] }
        var out: [String: UUID] = [:]
        let wanted = Set(names)
        for key in try keys(matching: KeyVaultQuery(altNames: names)) {
            let info = try DataKeyInfo(key)
            for n in info.altNames where wanted.contains(n) { out[n] = info.id }
        }
        return out
    }
}

/// A key vault held in memory only (tests, or keys loaded from elsewhere).
public final class InMemoryKeyVault: KeyVault, @unchecked Sendable {
    private let lock = NSLock()
    private var keys: [(info: DataKeyInfo, document: Document)] = []

    public init(keys: [Document] = []) throws {
        for k in keys { try insert(k) }
    }

    public func keys(matching query: KeyVaultQuery) throws -> [Document] {
        lock.withLock { keys.filter { query.matches($0.info) }.map(\.document) }
    }

    public func insert(_ keyDocument: Document) throws {
        let info = try DataKeyInfo(keyDocument)
        try lock.withLock {
            try KeyVaultRules.checkNoClash(info, with: keys.map(\.info))
            keys.append((info, keyDocument))
        }
    }

    public func allKeys() throws -> [Document] { lock.withLock { keys.map(\.document) } }

    public func delete(ids: [UUID]) throws -> Int {
        let gone = Set(ids)
        return lock.withLock {
            let before = keys.count
            keys.removeAll { gone.contains($0.info.id) }
            return before - keys.count
        }
    }

    public func replace(_ keyDocuments: [Document]) throws {
        let infos = try keyDocuments.map(DataKeyInfo.init)
        try lock.withLock {
            var next = keys
            for (info, doc) in zip(infos, keyDocuments) {
                guard let i = next.firstIndex(where: { $0.info.id == info.id }) else {
                    throw FieldCryptoError.invalidKeyDocument("no key with id \(info.id.keyIdString) to replace")
                }
                next[i] = (info, doc)
            }
            keys = next
        }
    }
}

enum KeyVaultRules {
    static func checkNoClash(_ new: DataKeyInfo, with existing: [DataKeyInfo]) throws {
        if existing.contains(where: { $0.id == new.id }) {
            throw FieldCryptoError.invalidKeyDocument("a key with id \(new.id.keyIdString) is already in the vault")
        }
        if let name = new.altNames.first(where: { n in existing.contains { $0.altNames.contains(n) } }) {
            throw FieldCryptoError.invalidKeyDocument("keyAltName \"\(name)\" is already used by another key")
        }
        if Set(new.altNames).count != new.altNames.count {
            throw FieldCryptoError.invalidKeyDocument("key \(new.id.keyIdString) lists a keyAltName twice")
        }
    }
}

extension UUID {
    /// A UUID from its 16 bytes in RFC 4122 order (how BSON binary subtype 4 stores it).
    public init?(keyIdBytes bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.init(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                         bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }

    /// The 16 bytes in RFC 4122 order.
    public var keyIdBytes: [UInt8] { withUnsafeBytes(of: uuid) { Array($0) } }

    /// Lower-case form, as MongoDB tools print UUIDs.
    public var keyIdString: String { uuidString.lowercased() }
}
