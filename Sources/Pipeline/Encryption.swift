import FieldCrypto
import Foundation
import Yams

/// The `encryption:` section: where keys live and which fields are encrypted with which key.
public struct Encryption: Codable, Equatable {
    public struct MasterKey: Codable, Equatable {
        public struct Local: Codable, Equatable {
            public var keyFile: String?
        }
        /// A KMIP key manager, with the option names of Percona Server for MongoDB.
        public struct KMIP: Codable, Equatable {
            public init() {}
            /// Comma-separated host names, tried in this order.
            public var serverName: String?
            public var port: Int?
            public var serverCAFile: String?
            /// PEM with the client's private key and certificate chain.
            public var clientCertificateFile: String?
            /// The key's password, never in this file itself: a file holding it, or the name of
            /// an environment variable holding it.
            public var clientCertificatePasswordFile: String?
            public var clientCertificatePasswordEnv: String?
            /// The master key on the server. Empty: `keys init` creates one and the key vault
            /// records it (every data key's masterKey.keyId).
            public var keyIdentifier: String?
            public var rotateMasterKey: Bool?
            public var connectRetries: Int?
            public var connectTimeoutMS: Int?
            /// How often a running pipeline checks that the master key is still Active (0: never).
            public var keyStatePollingSeconds: Int?
            /// Wrap each subject's data key under a KMIP object of its own, so erasing the
            /// subject destroys that object too (one more KMIP object per subject).
            public var perSubjectKeys: Bool?
        }
        public var provider: String?
        public var local: Local?
        public var kmip: KMIP?
    }

    public enum Algorithm: String, Codable, Equatable {
        case deterministic, random
        /// The libmongocrypt algorithm name (the CSFLE spec's).
        public var mongoName: String {
            switch self {
            case .deterministic: return "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic"
            case .random: return "AEAD_AES_256_CBC_HMAC_SHA_512-Random"
            }
        }
    }

    /// What restore, find and export write for an erased subject's value.
    public enum OnErased: String, Codable, Equatable {
        case keep, remove, marker
    }

    public struct Field: Codable, Equatable {
        public var path: String
        public var algorithm: Algorithm
        /// keep (the ciphertext, default), remove (the field), or marker (`erasedMarker`).
        public var onErased: OnErased?
        /// The string `onErased: marker` writes (default "[erased]").
        public var erasedMarker: String?
        /// The BSON type the field holds, when the operator knows it: lets a deterministic rule
        /// on a type the CSFLE spec forbids fail at start-up instead of on the first document.
        public var bsonType: String?
    }

    public enum MissingSubject: String, Codable, Equatable {
        case stop, fallback
    }

    public struct Rule: Codable, Equatable {
        public var namespace: String
        /// A field of the document whose value picks the data key: one key per distinct value.
        public var subject: String?
        /// A named data key for every document of the namespace.
        public var keyAltName: String?
        public var onMissingSubject: MissingSubject?
        public var fallbackKeyAltName: String?
        public var fields: [Field]
    }

    /// A file path, or a mongodb:// URI of the key vault's cluster.
    public var keyVault: String?
    /// With a URI: the key vault collection (drivers' option name; default encryption.__keyVault).
    public var keyVaultNamespace: String?
    public var masterKey: MasterKey?
    public var rules: [Rule]?
    /// The erasure ledger (a file), apart from the key vault and the archives: `erase`
    /// appends to it; restore, find, export, capture and `keys restore` apply it.
    public var erasureLedger: String?
    /// The folder of key-vault backups (`keys backup`); `erase` scrubs the erased keys from them.
    public var keyVaultBackups: String?

    /// BSON types the CSFLE spec does not allow under deterministic encryption (they have no
    /// single canonical encoding or are containers), nor at all where marked.
    public static let deterministicForbidden: Set<String> = [
        "double", "decimal", "decimal128", "bool", "object", "document", "array", "javascriptWithScope",
        "null", "undefined", "minKey", "maxKey",
    ]
    public static let neverEncryptable: Set<String> = ["null", "undefined", "minKey", "maxKey"]

    func validate(file: String, node: Node) throws {
        func fail(_ path: [String], _ field: String, _ reason: String) -> PipelineError {
            PipelineError(file: file, line: PipelineFile.line(of: path, in: node), field: field, reason: reason)
        }
        if let p = masterKey?.provider, p != "local", p != "kmip" {
            throw fail(["encryption", "masterKey", "provider"], "encryption.masterKey.provider", "'\(p)' is not local or kmip")
        }
        if masterKey?.provider == "kmip" {
            // Never fall back to another key silently: a KMIP pipeline must not run on a local key.
            guard let k = masterKey?.kmip else {
                throw fail(["encryption", "masterKey"], "encryption.masterKey.kmip", "provider kmip needs a kmip: section")
            }
            let at = ["encryption", "masterKey", "kmip"]
            func bad(_ key: String, _ reason: String) -> PipelineError { fail(at + [key], "encryption.masterKey.kmip.\(key)", reason) }
            let servers = (k.serverName ?? "").split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            if servers.isEmpty || servers.contains(where: \.isEmpty) { throw bad("serverName", "give one or more host names, comma-separated") }
            if let p = k.port, !(1...65535).contains(p) { throw bad("port", "\(p) is not a TCP port") }
            if k.clientCertificateFile?.isEmpty ?? true { throw bad("clientCertificateFile", "KMIP needs a client certificate (PEM with key and chain)") }
            if k.clientCertificatePasswordFile != nil && k.clientCertificatePasswordEnv != nil {
                throw bad("clientCertificatePasswordFile", "give the password in a file or in an environment variable, not both")
            }
            if let r = k.connectRetries, r < 0 { throw bad("connectRetries", "\(r) is negative") }
            if let t = k.connectTimeoutMS, t < 1000 { throw bad("connectTimeoutMS", "\(t) is below the minimum of 1000") }
            if let s = k.keyStatePollingSeconds, s < 0 { throw bad("keyStatePollingSeconds", "\(s) is negative") }
        } else if masterKey?.kmip != nil {
            throw fail(["encryption", "masterKey", "kmip"], "encryption.masterKey.kmip", "a kmip: section needs provider: kmip")
        }
        if let v = keyVault {
            do { _ = try KeySource.parse(v, namespace: keyVaultNamespace) } catch {
                throw fail(["encryption", "keyVault"], "encryption.keyVault", "\(error)")
            }
        } else if keyVaultNamespace != nil {
            throw fail(["encryption", "keyVaultNamespace"], "encryption.keyVaultNamespace", "keyVaultNamespace needs keyVault: mongodb://...")
        }
        if (masterKey?.provider ?? "local") == "local" && rules?.isEmpty == false && masterKey?.local?.keyFile == nil {
            throw fail(["encryption", "masterKey"], "encryption.masterKey.local.keyFile", "the local master key needs a keyFile")
        }
        for (i, rule) in (rules ?? []).enumerated() {
            let at = ["encryption", "rules", String(i)]
            let name = "encryption.rules[\(i)] (\(rule.namespace))"
            guard rule.namespace.split(separator: ".", maxSplits: 1).count == 2 else {
                throw fail(at + ["namespace"], name, "namespace must be db.coll or db.*")
            }
            if (rule.subject == nil) == (rule.keyAltName == nil) {
                throw fail(at, name, "give exactly one of subject (a key per subject) or keyAltName (one named key)")
            }
            if rule.subject == "_id" || rule.subject?.isEmpty == true {
                throw fail(at + ["subject"], name, "the subject must be a field other than _id")
            }
            if rule.onMissingSubject == .fallback && rule.fallbackKeyAltName == nil {
                throw fail(at + ["onMissingSubject"], name, "onMissingSubject: fallback needs fallbackKeyAltName")
            }
            if rule.fields.isEmpty { throw fail(at + ["fields"], name, "no fields to encrypt") }
            var seen = Set<String>()
            for (j, f) in rule.fields.enumerated() {
                let fieldAt = at + ["fields", String(j)]
                if f.path == "_id" || f.path.hasPrefix("_id.") {
                    throw fail(fieldAt + ["path"], "\(name).fields[\(j)]", "_id cannot be encrypted (the server needs it to find the document)")
                }
                if f.path == rule.subject {
                    throw fail(fieldAt + ["path"], "\(name).fields[\(j)]", "the subject field \(f.path) picks the key; it cannot also be encrypted")
                }
                if f.erasedMarker != nil && f.onErased != .marker {
                    throw fail(fieldAt + ["erasedMarker"], "\(name).fields[\(j)]", "erasedMarker needs onErased: marker")
                }
                if !seen.insert(f.path).inserted {
                    throw fail(fieldAt + ["path"], "\(name).fields[\(j)]", "path \(f.path) is listed twice")
                }
                if let t = f.bsonType {
                    if Encryption.neverEncryptable.contains(t) {
                        throw fail(fieldAt + ["bsonType"], "\(name).fields[\(j)] \(f.path)", "values of type \(t) cannot be encrypted")
                    }
                    if f.algorithm == .deterministic && Encryption.deterministicForbidden.contains(t) {
                        throw fail(fieldAt + ["algorithm"], "\(name).fields[\(j)] \(f.path)",
                                   "deterministic encryption is not allowed for type \(t) (the CSFLE spec forbids it); use random")
                    }
                }
            }
        }
    }
}
