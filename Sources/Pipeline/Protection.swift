import BSON
import Durable
import FieldCrypto
import Foundation
import KMIPClient
import Logging
import Mongo

/// Turns the `encryption:` section into the runtime pieces: the key vault, the master key,
/// the libmongocrypt engine and the protection rules.
public struct KeySettings {
    public enum MasterKey {
        /// A 96-byte local key file.
        case local(keyFile: String)
        /// A KMIP key manager; `keyIdentifier` nil: the one the key vault's keys use.
        case kmip(KMIPOptions, keyStatePollingSeconds: Int)
    }

    public var keyVault: KeySource
    public var masterKey: MasterKey

    public init(keyVault: KeySource, masterKey: MasterKey) {
        self.keyVault = keyVault
        self.masterKey = masterKey
    }

    public init(keyVault: KeySource, masterKeyFile: String) {
        self.init(keyVault: keyVault, masterKey: .local(keyFile: masterKeyFile))
    }

    /// Flags over the pipeline file; nil when neither names a key vault.
    public static func resolve(_ encryption: Encryption?, keyVault: String?, masterKeyFile: String?,
                               kmip flags: Encryption.MasterKey.KMIP? = nil) throws -> KeySettings? {
        guard let vault = keyVault ?? encryption?.keyVault else { return nil }
        let source = try KeySource.parse(vault, namespace: encryption?.keyVaultNamespace)
        if let file = masterKeyFile { return KeySettings(keyVault: source, masterKey: .local(keyFile: file)) }
        if encryption?.masterKey?.provider == "kmip" || flags?.serverName != nil {
            let k = (encryption?.masterKey?.kmip ?? Encryption.MasterKey.KMIP()).overridden(by: flags)
            return KeySettings(keyVault: source, masterKey: .kmip(try k.options(), keyStatePollingSeconds: k.keyStatePollingSeconds ?? 900))
        }
        guard let file = encryption?.masterKey?.local?.keyFile else { return nil }
        return KeySettings(keyVault: source, masterKey: .local(keyFile: file))
    }

    /// The key vault collection when it is one: backups leave it out.
    public var excludedNamespace: Namespace? { keyVault.collectionNamespace }

    /// The master key, for messages: the local file, or the KMIP servers and key.
    public var masterKeyDescription: String {
        switch masterKey {
        case .local(let f): return f
        case .kmip(let o, _): return "KMIP \(o.serverName)" + (o.keyIdentifier.map { " key \($0)" } ?? "")
        }
    }

    /// The local key file, when the master key is local.
    public var masterKeyFile: String? {
        if case .local(let f) = masterKey { return f }
        return nil
    }

    /// Opens the master key and the key vault (both must exist; `keys init` makes them), and
    /// proves the master key fits the vault by unwrapping one of its keys, so a wrong master
    /// key fails here, before anything is read or written. With KMIP, the master key must be
    /// Active; with `rotateMasterKey`, the rotation runs first and `MasterKeyRotated` is thrown
    /// (the command stops there, as mongod does with kmipRotateMasterKey).
    public func openEngine() throws -> MongoCryptEngine {
        let vault = try keyVault.open()
        let engine: MongoCryptEngine
        switch masterKey {
        case .local(let file):
            engine = try MongoCryptEngine(localMasterKey: try LocalMasterKey.load(from: file), keyVault: vault)
        case .kmip(let options, _):
            let provider = try kmipProvider(options, vault: vault, creating: false)
            engine = try MongoCryptEngine(kmsProviders: [provider], keyVault: vault)
            if options.rotateMasterKey {
                let (old, new) = try rotate(engine, provider: provider, toKeyId: nil, revokeOld: false)
                throw MasterKeyRotated(oldKeyIdentifier: old, newKeyIdentifier: new, keys: try vault.allKeys().count)
            }
        }
        if let probe = try vault.keys(matching: KeyVaultQuery(altNames: [DocumentProtector.subjectHashKeyName])).first ?? vault.allKeys().first {
            _ = try engine.encrypt(.string("probe"), keyId: try DataKeyInfo(probe).id, algorithm: .random)
        }
        return engine
    }

    /// The KMIP provider, its master key found (configured, or the one the vault's keys use)
    /// and checked: Active Secret Data of 96 bytes. `creating`: make one when there is none.
    func kmipProvider(_ options: KMIPOptions, vault: any KeyVault, creating: Bool) throws -> KMIPKMSProvider {
        let transport = try KMIPTransport(options: options)
        let client = KMIPClient(transport: transport)
        let first = try options.servers()[0]
        let endpoint = "\(first.host):\(first.port)"
        var id = options.keyIdentifier.flatMap { $0.isEmpty ? nil : $0 }
        if id == nil { id = try KeySettings.vaultMasterKeyId(vault) }
        let provider: KMIPKMSProvider
        if let id {
            provider = KMIPKMSProvider(client: client, keyIdentifier: id, endpoint: endpoint)
            try provider.verifyMasterKey(id)
        } else if creating {
            let maker = KMIPKMSProvider(client: client, keyIdentifier: "", endpoint: endpoint)
            provider = KMIPKMSProvider(client: client, keyIdentifier: try maker.createMasterKey(name: "ciphertail-master-key"), endpoint: endpoint)
        } else {
            throw FieldCryptoError.kms(provider: "kmip", message: "no keyIdentifier is configured and the key vault has no key yet: run ciphertail keys init")
        }
        return provider
    }

    /// The KMIP master key the vault's keys are wrapped with: the subject-hash key's, which
    /// `keys init` creates first and rotation rewraps last.
    static func vaultMasterKeyId(_ vault: any KeyVault) throws -> String? {
        let key = try vault.keys(matching: KeyVaultQuery(altNames: [DocumentProtector.subjectHashKeyName])).first ?? vault.allKeys().first
        guard let key, case .document(let mk)? = key["masterKey"], mk["provider"] == "kmip" else { return nil }
        return mk["keyId"]?.stringValue
    }

    /// Rewraps every data key under a new KMIP master key (`toKeyId`, or one created now),
    /// then optionally revokes the old one. Returns both identifiers.
    func rotate(_ engine: MongoCryptEngine, provider: KMIPKMSProvider, toKeyId: String?, revokeOld: Bool) throws -> (String, String) {
        let old = provider.keyIdentifier
        let new: String
        if let toKeyId {
            try provider.verifyMasterKey(toKeyId)
            new = toKeyId
        } else {
            new = try provider.createMasterKey(name: "ciphertail-master-key")
        }
        guard new != old else { throw FieldCryptoError.invalidArgument("the new master key \(new) is the current one") }
        // A subject's own KMIP key (perSubjectKeys) stays: it is what erasing that subject destroys.
        let keys = try engine.keyVault.allKeys()
        var users: [String: Int] = [:]
        for k in keys { if let id = Self.kmipKeyId(k) { users[id, default: 0] += 1 } }
        try engine.rewrapAllDataKeys(to: provider.masterKeyDocument(new)) { key in
            guard let id = Self.kmipKeyId(key), id != old, users[id] == 1,
                  (try? DataKeyInfo(key).altNames.contains { $0.hasPrefix("subject/") }) == true else { return true }
            return false
        }
        if revokeOld {
            do { try provider.client.revoke(old, reason: .superseded, message: "rotated to \(new) by ciphertail") } catch {
                throw FieldCryptoError.kms(provider: "kmip", message: "keys now use \(new), but revoking \(old) failed: \(error)")
            }
        }
        return (old, new)
    }

    static func kmipKeyId(_ key: Document) -> String? {
        guard case .document(let mk)? = key["masterKey"], mk["provider"] == "kmip" else { return nil }
        return mk["keyId"]?.stringValue
    }

    /// With `perSubjectKeys`, what wraps each new subject key: a new Active 96-byte Secret
    /// Data object on the KMIP server, named after the key (`subject/<hash>`). Nil otherwise.
    public func subjectMasterKeys(_ engine: MongoCryptEngine, perSubject: Bool) -> (@Sendable (String) throws -> Document)? {
        guard perSubject, case .kmip = masterKey, let provider = engine.provider(named: "kmip") as? KMIPKMSProvider else { return nil }
        return { name in provider.masterKeyDocument(try provider.createMasterKey(name: name)) }
    }

    /// `keys rotate-master`: rewraps every data key under a new KMIP master key. The data
    /// keys, and so every archive, stay as they are.
    public func rotateMasterKey(toKeyId: String?, revokeOld: Bool) throws -> MasterKeyRotated {
        guard case .kmip(let options, _) = masterKey else {
            throw FieldCryptoError.invalidArgument("master key rotation needs the kmip provider")
        }
        let vault = try keyVault.open()
        let provider = try kmipProvider(options, vault: vault, creating: false)
        let engine = try MongoCryptEngine(kmsProviders: [provider], keyVault: vault)
        let (old, new) = try rotate(engine, provider: provider, toKeyId: toKeyId, revokeOld: revokeOld)
        return MasterKeyRotated(oldKeyIdentifier: old, newKeyIdentifier: new, keys: try vault.allKeys().count)
    }

    /// Starts the KMIP key-state poll for a long run (nil for a local key or when disabled).
    public func startKeyStatePolling(_ engine: MongoCryptEngine, logger: Logger) -> KMIPStatePoller? {
        guard case .kmip(_, let seconds) = masterKey, seconds > 0,
              let provider = engine.provider(named: "kmip") as? KMIPKMSProvider else { return nil }
        return provider.startStatePolling(every: seconds, logger: logger)
    }

    /// Creates what is missing: the master key (a local file, 0600, or a KMIP Secret Data
    /// object when no keyIdentifier is configured), the key vault (0600) and the key that
    /// hashes subject ids. Returns what it created.
    @discardableResult
    public func initialize() throws -> [String] {
        var created: [String] = []
        // Folders that hold key files are private to the service user.
        func makeParent(_ path: String) throws {
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty { try Durable.makeDirectory(parent, mode: 0o700) }
        }
        func createFileVault() throws {
            if case .file(let path) = keyVault, !FileManager.default.fileExists(atPath: path) {
                try makeParent(path)
                _ = try FileKeyVault.create(at: path)
                created.append(path)
            }
        }
        let engine: MongoCryptEngine
        switch masterKey {
        case .local(let file):
            try createFileVault()
            if !FileManager.default.fileExists(atPath: file) {
                try makeParent(file)
                _ = try LocalMasterKey.create(at: file)
                created.append(file)
            }
            engine = try openEngine()
        case .kmip(let options, _):
            // The key manager first: when it is unreachable or refuses the key, nothing is written.
            let existing: (any KeyVault)?
            if case .file(let path) = keyVault, !FileManager.default.fileExists(atPath: path) { existing = nil } else { existing = try keyVault.open() }
            let hadKey = options.keyIdentifier.map { !$0.isEmpty } ?? false
            let known = try existing.flatMap { try KeySettings.vaultMasterKeyId($0) }
            let provider = try kmipProvider(options, vault: existing ?? InMemoryKeyVault(), creating: true)
            if !hadKey && known == nil { created.append("KMIP master key \(provider.keyIdentifier)") }
            try createFileVault()
            engine = try MongoCryptEngine(kmsProviders: [provider], keyVault: try existing ?? keyVault.open())
        }
        let protector = DocumentProtector(rules: [], engine: engine)
        try protector.ensureKey(DocumentProtector.subjectHashKeyName)
        return created
    }
}

/// A master key rotation happened; with `rotateMasterKey: true` the command stops here.
public struct MasterKeyRotated: Error, CustomStringConvertible {
    public let oldKeyIdentifier: String
    public let newKeyIdentifier: String
    public let keys: Int
    public var description: String {
        "rewrapped \(keys) data keys from KMIP master key \(oldKeyIdentifier) to \(newKeyIdentifier); "
            + "set keyIdentifier: \(newKeyIdentifier) (or leave it empty) and rotateMasterKey: false for the next runs"
    }
}

extension Encryption.MasterKey.KMIP {
    /// Flags win over the file, field by field.
    public func overridden(by flags: Self?) -> Self {
        guard let f = flags else { return self }
        var k = self
        k.serverName = f.serverName ?? k.serverName
        k.port = f.port ?? k.port
        k.serverCAFile = f.serverCAFile ?? k.serverCAFile
        k.clientCertificateFile = f.clientCertificateFile ?? k.clientCertificateFile
        k.clientCertificatePasswordFile = f.clientCertificatePasswordFile ?? k.clientCertificatePasswordFile
        k.clientCertificatePasswordEnv = f.clientCertificatePasswordEnv ?? k.clientCertificatePasswordEnv
        k.keyIdentifier = f.keyIdentifier ?? k.keyIdentifier
        k.rotateMasterKey = f.rotateMasterKey ?? k.rotateMasterKey
        k.connectRetries = f.connectRetries ?? k.connectRetries
        k.connectTimeoutMS = f.connectTimeoutMS ?? k.connectTimeoutMS
        k.keyStatePollingSeconds = f.keyStatePollingSeconds ?? k.keyStatePollingSeconds
        return k
    }

    /// The transport's options, the password read from its file or variable.
    public func options() throws -> KMIPOptions {
        var password: String?
        if let f = clientCertificatePasswordFile { password = try KMIPOptions.password(fromFile: f) }
        if let v = clientCertificatePasswordEnv { password = try KMIPOptions.password(fromEnvironment: v) }
        let o = KMIPOptions(serverName: serverName ?? "", port: port ?? KMIPOptions.defaultPort, serverCAFile: serverCAFile,
                            clientCertificateFile: clientCertificateFile ?? "", clientCertificatePassword: password,
                            keyIdentifier: keyIdentifier, rotateMasterKey: rotateMasterKey ?? false,
                            connectRetries: connectRetries ?? 0,
                            connectTimeoutMS: connectTimeoutMS ?? KMIPOptions.defaultConnectTimeoutMS)
        try o.validate()
        return o
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
                let onErased: ErasedValue
                switch $0.onErased ?? .keep {
                case .keep: onErased = .keep
                case .remove: onErased = .remove
                case .marker: onErased = .marker($0.erasedMarker ?? ErasedValue.defaultMarker)
                }
                return ProtectionRule.Field(path: $0.path, algorithm: $0.algorithm == .deterministic ? .deterministic : .random, onErased: onErased)
            })
        }
    }
}
