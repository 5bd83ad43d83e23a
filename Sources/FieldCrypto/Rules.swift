import BSON
import Foundation

/// Which fields of which namespaces are encrypted, and under which data key.
public struct ProtectionRule: Sendable {
    public enum KeyChoice: Sendable, Equatable {
        /// One named data key for the whole namespace.
        case named(String)
        /// One data key per distinct value of this field (dotted path): the unit of erasure.
        case perSubject(field: String, onMissing: MissingSubject)
    }

    public enum MissingSubject: Sendable, Equatable {
        /// The run stops, naming the namespace and `_id`.
        case stop
        /// Documents without the field use this named key instead.
        case fallback(String)
    }

    public struct Field: Sendable, Equatable {
        public let path: String
        public let algorithm: EncryptionAlgorithm
        /// `path` split at its dots.
        public let components: [String]
        /// What a restore, find or export writes for this field when its subject was erased.
        public let onErased: ErasedValue
        public init(path: String, algorithm: EncryptionAlgorithm, onErased: ErasedValue = .keep) {
            self.path = path
            self.algorithm = algorithm
            self.onErased = onErased
            components = path.split(separator: ".").map(String.init)
        }
    }

    /// `db.coll`, `db.*`, `*.coll` or `*.*`.
    public var namespace: String
    public var key: KeyChoice
    public var fields: [Field]

    public init(namespace: String, key: KeyChoice, fields: [Field]) {
        self.namespace = namespace
        self.key = key
        self.fields = fields
    }

    public func matches(database: String, collection: String) -> Bool {
        let parts = namespace.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return false }
        return (parts[0] == "*" || parts[0] == database) && (parts[1] == "*" || parts[1] == collection)
    }
}

/// What an erased subject's value becomes when data is read back (restore, find, export):
/// the ciphertext as it was (unreadable forever), nothing, or a marker string. On capture,
/// plaintext of an erased subject is never encrypted under a new key: it is removed, or
/// replaced by the marker.
public enum ErasedValue: Sendable, Equatable {
    case keep
    case remove
    case marker(String)

    public static let defaultMarker = "[erased]"
}

extension ProtectionRule {
    /// The field whose path the value at `path` (dotted, array indices and event prefixes
    /// such as `fullDocument.` included) is: the longest rule path its logical path ends with.
    public func field(at path: String) -> Field? {
        let logical = path.split(separator: ".").map(String.init).filter { Int($0) == nil }
        return fields.filter { logical.count >= $0.components.count && Array(logical.suffix($0.components.count)) == $0.components }
            .max { $0.components.count < $1.components.count }
    }
}

/// A document or event that cannot be protected. Messages name the namespace, `_id`, the
/// field path and key ids; never a value.
public enum ProtectionError: Error, CustomStringConvertible, Equatable {
    case missingSubject(namespace: String, id: String, field: String)
    case forbiddenType(namespace: String, id: String, path: String, type: String, algorithm: String)

    public var description: String {
        switch self {
        case let .missingSubject(ns, id, field):
            return "\(ns) document _id \(id) has no subject field \(field), and its rule has no fallback key (onMissingSubject: stop)"
        case let .forbiddenType(ns, id, path, type, algorithm):
            return "\(ns) document _id \(id): field \(path) holds a \(type), which \(algorithm) encryption does not allow"
        }
    }
}

/// BSON type names, for messages.
enum BSONTypeName {
    static func of(_ v: BSONValue) -> String {
        switch v {
        case .double: return "double"
        case .string: return "string"
        case .document: return "document"
        case .array: return "array"
        case .binary: return "binary"
        case .undefined: return "undefined"
        case .objectId: return "objectId"
        case .bool: return "bool"
        case .datetime: return "date"
        case .null: return "null"
        case .regex: return "regex"
        case .dbPointer: return "dbPointer"
        case .code: return "javascript"
        case .symbol: return "symbol"
        case .codeWithScope: return "javascriptWithScope"
        case .int32: return "int"
        case .timestamp: return "timestamp"
        case .int64: return "long"
        case .decimal128: return "decimal"
        case .minKey: return "minKey"
        case .maxKey: return "maxKey"
        }
    }

    /// Types the CSFLE spec refuses under deterministic encryption, and under any.
    static func allowed(_ v: BSONValue, _ algorithm: EncryptionAlgorithm) -> Bool {
        switch v {
        case .null, .undefined, .minKey, .maxKey: return false
        case .double, .decimal128, .bool, .document, .array, .codeWithScope: return algorithm == .random
        default: return true
        }
    }
}
