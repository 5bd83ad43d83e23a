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
        public init(path: String, algorithm: EncryptionAlgorithm) {
            self.path = path
            self.algorithm = algorithm
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
