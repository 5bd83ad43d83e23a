import Foundation

/// Everything that can go wrong in field encryption. Errors name keys (by UUID and
/// keyAltName), files (by path) and libmongocrypt's own status message. They never hold a
/// plaintext value, a ciphertext, key material or a master key.
public enum FieldCryptoError: Error, CustomStringConvertible, Equatable {
    /// Which side libmongocrypt blames (its `mongocrypt_status_type_t`).
    public enum Kind: String, Sendable {
        case client, kms, cryptShared, unknown
    }

    /// libmongocrypt refused or failed; `message` is its status message.
    case library(operation: String, kind: Kind, code: UInt32, message: String)
    /// libmongocrypt asked for data keys the key vault does not hold.
    case keyNotFound(ids: [UUID], altNames: [String], message: String)
    /// The configured master key cannot unwrap this data key (another master key made it,
    /// or the key document's keyMaterial is damaged).
    case masterKeyMismatch(keyId: UUID, message: String)
    /// A ciphertext failed its HMAC check: tampered or damaged. No plaintext is returned.
    case authenticationFailed(operation: String, message: String)
    /// `decrypt` was given something that is not BSON binary subtype 6.
    case notEncrypted(bsonType: UInt8)
    /// A KMS provider failed or is not configured.
    case kms(provider: String, message: String)
    /// The key-vault filter libmongocrypt produced has a shape this module does not know.
    case unsupportedKeyVaultFilter(String)
    /// A key document is malformed, or clashes with one already in the vault.
    case invalidKeyDocument(String)
    /// A key vault file is refused (permissions, damage, ...).
    case keyVault(path: String, problem: String)
    /// A master key file or value is refused (size, permissions, ...).
    case masterKey(path: String?, problem: String)
    /// Bad argument from the caller.
    case invalidArgument(String)
    /// The state machine ended somewhere it should not have.
    case unexpectedState(operation: String, state: String)

    public var description: String {
        switch self {
        case let .library(operation, kind, code, message):
            return "\(operation): libmongocrypt \(kind.rawValue) error \(code): \(message)"
        case let .keyNotFound(ids, altNames, message):
            let names = ids.map { "id \($0.uuidString.lowercased())" } + altNames.map { "keyAltName \"\($0)\"" }
            return "data key not found in the key vault: \(names.joined(separator: ", ")) (libmongocrypt: \(message))"
        case let .masterKeyMismatch(keyId, message):
            return "the master key cannot decrypt data key \(keyId.uuidString.lowercased()); "
                + "was the key vault made with another master key? (libmongocrypt: \(message))"
        case let .authenticationFailed(operation, message):
            return "\(operation): ciphertext failed authentication (tampered or damaged; libmongocrypt: \(message))"
        case let .notEncrypted(type):
            return String(format: "decrypt: value is not BSON binary subtype 6 (BSON type 0x%02x)", type)
        case let .kms(provider, message):
            return "KMS provider \(provider): \(message)"
        case let .unsupportedKeyVaultFilter(why):
            return "unsupported key vault filter from libmongocrypt: \(why)"
        case let .invalidKeyDocument(why):
            return "invalid key document: \(why)"
        case let .keyVault(path, problem):
            return "key vault \(path): \(problem)"
        case let .masterKey(path, problem):
            return "master key\(path.map { " \($0)" } ?? ""): \(problem)"
        case let .invalidArgument(why):
            return "invalid argument: \(why)"
        case let .unexpectedState(operation, state):
            return "\(operation): libmongocrypt context reached unexpected state \(state)"
        }
    }
}
