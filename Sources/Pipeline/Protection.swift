import FieldCrypto
import Foundation
import Mongo

/// Turns the `encryption:` section into the runtime pieces: the key vault, the master key,
/// the libmongocrypt engine and the protection rules.
public struct KeySettings {
    public var keyVault: KeySource
    public var masterKeyFile: String

    public init(keyVault: KeySource, masterKeyFile: String) {
        self.keyVault = keyVault
        self.masterKeyFile = masterKeyFile
    }

    /// Flags over the pipeline file; nil when neither names a key vault.
    public static func resolve(_ encryption: Encryption?, keyVault: String?, masterKeyFile: String?) throws -> KeySettings? {
        guard let vault = keyVault ?? encryption?.keyVault,
              let key = masterKeyFile ?? encryption?.masterKey?.local?.keyFile else { return nil }
        return KeySettings(keyVault: try KeySource.parse(vault, namespace: encryption?.keyVaultNamespace), masterKeyFile: key)
    }

    /// The key vault collection when it is one: backups leave it out.
    public var excludedNamespace: Namespace? { keyVault.collectionNamespace }

    /// Opens the master key and the key vault (both must exist; `keys init` makes them), and
    /// proves the master key fits the vault by unwrapping one of its keys, so a wrong master
    /// key fails here, before anything is read or written.
    public func openEngine() throws -> MongoCryptEngine {
        let master = try LocalMasterKey.load(from: masterKeyFile)
        let vault = try keyVault.open()
        let engine = try MongoCryptEngine(localMasterKey: master, keyVault: vault)
        if let probe = try vault.keys(matching: KeyVaultQuery(altNames: [DocumentProtector.subjectHashKeyName])).first ?? vault.allKeys().first {
            _ = try engine.encrypt(.string("probe"), keyId: try DataKeyInfo(probe).id, algorithm: .random)
        }
        return engine
    }

    /// Creates what is missing: the master key file (0600), the key vault (0600) and the key
    /// that hashes subject ids. Returns what it created.
    @discardableResult
    public func initialize() throws -> [String] {
        var created: [String] = []
        if !FileManager.default.fileExists(atPath: masterKeyFile) {
            _ = try LocalMasterKey.create(at: masterKeyFile)
            created.append(masterKeyFile)
        }
        if case .file(let path) = keyVault, !FileManager.default.fileExists(atPath: path) {
            _ = try FileKeyVault.create(at: path)
            created.append(path)
        }
        let protector = DocumentProtector(rules: [], engine: try openEngine())
        try protector.ensureKey(DocumentProtector.subjectHashKeyName)
        return created
    }
}

extension Encryption {
    /// The rules as FieldCrypto takes them.
    public func protectionRules() -> [ProtectionRule] {
        (rules ?? []).map { r in
            let key: ProtectionRule.KeyChoice
            if let subject = r.subject {
                let onMissing: ProtectionRule.MissingSubject =
                    r.onMissingSubject == .fallback ? .fallback(r.fallbackKeyAltName ?? "") : .stop
                key = .perSubject(field: subject, onMissing: onMissing)
            } else {
                key = .named(r.keyAltName ?? "")
            }
            return ProtectionRule(namespace: r.namespace, key: key, fields: r.fields.map {
                ProtectionRule.Field(path: $0.path, algorithm: $0.algorithm == .deterministic ? .deterministic : .random)
            })
        }
    }
}
