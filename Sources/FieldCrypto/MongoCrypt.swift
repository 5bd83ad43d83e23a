import BSON
import CMongoCrypt
import Foundation

/// libmongocrypt, the CSFLE engine.
public enum MongoCrypt {
    public static var version: String {
        var len: UInt32 = 0
        return String(cString: mongocrypt_version(&len))
    }
}

/// The two CSFLE (FLE 1) algorithms.
public enum EncryptionAlgorithm: String, Sendable {
    /// Equal plaintexts give equal ciphertexts under one key (queryable by equality).
    case deterministic = "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic"
    /// A fresh random IV every time.
    case random = "AEAD_AES_256_CBC_HMAC_SHA_512-Random"
}

/// Which data key to encrypt with.
public enum DataKeySelector: Equatable, Sendable {
    case id(UUID)
    case altName(String)
}

/// A `mongocrypt_t` configured with KMS providers and a key vault. Produces and reads
/// MongoDB's CSFLE wire format (BSON binary subtype 6), so values interoperate with the
/// drivers' explicit and automatic encryption.
///
/// Thread safety: libmongocrypt documents `mongocrypt_t` as thread safe; every operation
/// runs its own `mongocrypt_ctx_t`, so operations may run concurrently if the key vault
/// and providers allow it (`FileKeyVault` and `LocalKMSProvider` do). Decrypted data
/// keys stay in libmongocrypt's cache for 60 seconds, during which the vault is not asked.
public final class MongoCryptEngine: @unchecked Sendable {
    public let keyVault: any KeyVault
    let providers: [String: any KMSProvider]
    private let providerOrder: [String]
    private let handleLock = NSLock()
    private var handle: CryptHandle
    private var keysSinceRecycle = 0

    /// libmongocrypt 1.7 keeps decrypted data keys in a list it searches linearly. With a key
    /// per subject that list grows to the number of subjects and every lookup walks it, so
    /// after this many distinct keys the `mongocrypt_t` is replaced by a fresh one (contexts
    /// under way keep the old one alive until they finish).
    public var keyCacheLimit = 256

    /// One `mongocrypt_t`, destroyed when the last context using it is done.
    final class CryptHandle: @unchecked Sendable {
        let crypt: OpaquePointer
        init(_ crypt: OpaquePointer) { self.crypt = crypt }
        deinit { mongocrypt_destroy(crypt) }
    }

    /// - Parameters:
    ///   - kmsProviders: at least one; names must be distinct.
    ///   - keyVault: where data keys are looked up and stored.
    public init(kmsProviders: [any KMSProvider], keyVault: any KeyVault) throws {
        guard !kmsProviders.isEmpty else { throw FieldCryptoError.invalidArgument("no KMS provider") }
        var byName: [String: any KMSProvider] = [:]
        for p in kmsProviders {
            guard byName[p.name] == nil else { throw FieldCryptoError.invalidArgument("KMS provider \(p.name) given twice") }
            byName[p.name] = p
        }
        self.keyVault = keyVault
        self.providers = byName
        self.providerOrder = kmsProviders.map(\.name)
        self.handle = try Self.makeHandle(kmsProviders)
    }

    private static func makeHandle(_ kmsProviders: [any KMSProvider]) throws -> CryptHandle {
        var builder = DocumentBuilder()
        for p in kmsProviders { builder.append(p.name, document: p.kmsProvidersEntry()) }
        guard let crypt = mongocrypt_new() else { throw FieldCryptoError.invalidArgument("mongocrypt_new failed") }
        let handle = CryptHandle(crypt)
        // The kms_providers document holds the local master key: libmongocrypt copies it,
        // and our copy is wiped as soon as it is handed over.
        var kmsDoc = builder.document.bytes
        defer { kmsDoc.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) } }
        let ok = CBinary.with(kmsDoc) { mongocrypt_setopt_kms_providers(crypt, $0) }
        guard ok else { throw Self.status(crypt, operation: "configure KMS providers") }
        // `encryptMarked` drives automatic encryption on a private namespace whose schema
        // makes libmongocrypt ask for markings (NEED_MONGO_MARKINGS), which we answer
        // ourselves. So query analysis is not bypassed (bypassing it skips that state), yet
        // nothing else is involved: libmongocrypt 1.7.2 loads crypt_shared only when given a
        // search or override path (none is set), and it never starts mongocryptd (drivers do).
        let schemaOK = CBinary.with(MarkedBatch.schemaMap.bytes) { mongocrypt_setopt_schema_map(crypt, $0) }
        guard schemaOK else { throw Self.status(crypt, operation: "configure the schema map") }
        guard mongocrypt_init(crypt) else { throw Self.status(crypt, operation: "initialise libmongocrypt") }
        return handle
    }

    /// The configured provider with this libmongocrypt name ("local", "kmip").
    public func provider(named name: String) -> (any KMSProvider)? { providers[name] }

    /// The `mongocrypt_t` for a new context.
    func currentHandle() -> CryptHandle { handleLock.withLock { handle } }

    /// Counts data keys fed to libmongocrypt and swaps in a fresh `mongocrypt_t` (an empty
    /// key cache) past `keyCacheLimit`.
    func noteKeysFed(_ n: Int) {
        handleLock.lock()
        keysSinceRecycle += n
        let due = keysSinceRecycle >= keyCacheLimit
        if due { keysSinceRecycle = 0 }
        handleLock.unlock()
        guard due, let fresh = try? Self.makeHandle(providerOrder.compactMap { providers[$0] }) else { return }
        handleLock.withLock { handle = fresh }
    }

    /// Forgets every decrypted data key: a fresh `mongocrypt_t` (an empty key cache) for the
    /// next context, and the key vault reloaded. After an erasure, nothing this process
    /// unwrapped before keeps a destroyed key usable (contexts already under way finish).
    public func dropKeyCache() throws {
        try keyVault.reload()
        let fresh = try Self.makeHandle(providerOrder.compactMap { providers[$0] })
        handleLock.withLock {
            handle = fresh
            keysSinceRecycle = 0
        }
    }

    /// An engine with only the local KMS provider.
    public convenience init(localMasterKey: LocalMasterKey, keyVault: any KeyVault) throws {
        try self.init(kmsProviders: [LocalKMSProvider(masterKey: localMasterKey)], keyVault: keyVault)
    }

    private static func status(_ crypt: OpaquePointer, operation: String) -> FieldCryptoError {
        LibStatus.read { _ = mongocrypt_status(crypt, $0) }.error(operation: operation)
    }

    // MARK: Operations

    /// Creates a data key wrapped by a KMS provider's master key (the first provider
    /// unless one is named), stores it in the key vault and returns the key document:
    /// `_id` (UUID, binary subtype 4), `keyAltNames` (when given), `keyMaterial`,
    /// `creationDate`, `updateDate`, `status`, `masterKey`.
    @discardableResult
    public func createDataKey(keyAltNames: [String] = [], kmsProvider: String? = nil, masterKey: Document? = nil) throws -> Document {
        let key = try makeDataKey(keyAltNames: keyAltNames, kmsProvider: kmsProvider, masterKey: masterKey)
        try keyVault.insert(key)
        return key
    }

    /// Creates many data keys and stores them with one durable append (per-subject keys
    /// arrive by the thousand).
    @discardableResult
    public func createDataKeys(keyAltNames: [[String]], kmsProvider: String? = nil) throws -> [Document] {
        let keys = try keyAltNames.map { try makeDataKey(keyAltNames: $0, kmsProvider: kmsProvider) }
        try keyVault.insert(contentsOf: keys)
        return keys
    }

    /// A new key document, not yet stored.
    /// `masterKey`: a masterKey document other than the provider's own (a subject's own KMIP key).
    func makeDataKey(keyAltNames: [String], kmsProvider: String?, masterKey: Document? = nil) throws -> Document {
        let name = kmsProvider ?? providerOrder[0]
        guard let provider = providers[name] else {
            throw FieldCryptoError.kms(provider: name, message: "not configured")
        }
        let op = "create data key"
        let ctx = try CryptContext(self, operation: op)
        try ctx.check(CBinary.with((masterKey ?? provider.masterKeyDocument()).bytes) { mongocrypt_ctx_setopt_key_encryption_key(ctx.ctx, $0) })
        for alt in keyAltNames {
            try ctx.check(CBinary.with(Document(["keyAltName": .string(alt)]).bytes) { mongocrypt_ctx_setopt_key_alt_name(ctx.ctx, $0) })
        }
        try ctx.check(mongocrypt_ctx_datakey_init(ctx.ctx))
        return Document(trusted: try ctx.run())
    }

    /// Rewraps every data key of the vault under `masterKey` (a masterKey document: provider
    /// and its fields) and stores the new versions with `KeyVault.replace`, all at once where
    /// the vault allows. The data keys themselves, and so every ciphertext, stay the same.
    /// Returns how many keys were rewrapped.
    @discardableResult
    public func rewrapAllDataKeys(to masterKey: Document, where include: (Document) -> Bool = { _ in true }) throws -> Int {
        let op = "rewrap data keys"
        let ctx = try CryptContext(self, operation: op)
        ctx.feedAllKeys = true
        try ctx.check(CBinary.with(masterKey.bytes) { mongocrypt_ctx_setopt_key_encryption_key(ctx.ctx, $0) })
        try ctx.check(CBinary.with(Document().bytes) { mongocrypt_ctx_rewrap_many_datakey_init(ctx.ctx, $0) })
        let result = Document(trusted: try ctx.run())
        guard case .array(let items)? = result["v"] else {
            throw FieldCryptoError.unexpectedState(operation: op, state: "result without a \"v\" array")
        }
        var byId: [UUID: Document] = [:]
        for case .document(let d) in items {
            guard case .binary(4, let b)? = d["_id"], let id = UUID(keyIdBytes: b) else { continue }
            byId[id] = d
        }
        let now = BSONValue.datetime(Int64(Date().timeIntervalSince1970 * 1000))
        var updated: [Document] = []
        // Keys left out (a subject's own KMIP key wraps them) keep their wrapping.
        for key in try keyVault.allKeys() where include(key) {
            let info = try DataKeyInfo(key)
            guard let fresh = byId[info.id], let material = fresh["keyMaterial"], let mk = fresh["masterKey"] else {
                throw FieldCryptoError.unexpectedState(operation: op, state: "key \(info.id.keyIdString) was not rewrapped")
            }
            updated.append(key.setting("keyMaterial", material).setting("masterKey", mk).setting("updateDate", now))
        }
        // The subject-hash key goes last: its masterKey.keyId is how later runs find the
        // current master key, so a rotation cut short still names the old one and is
        // finished by running it again.
        let isHashKey = { (d: Document) in (try? DataKeyInfo(d).altNames.contains(DocumentProtector.subjectHashKeyName)) == true }
        try keyVault.replace(updated.filter { !isHashKey($0) } + updated.filter(isHashKey))
        return updated.count
    }

    /// Explicit encryption of one value. Returns BSON binary subtype 6 in the CSFLE
    /// format: byte 0 is 1 (deterministic) or 2 (random), bytes 1...16 the data key's
    /// UUID, byte 17 the original BSON type, then IV, AES-256-CBC ciphertext and HMAC-SHA-512/256.
    public func encrypt(_ value: BSONValue, key: DataKeySelector, algorithm: EncryptionAlgorithm) throws -> BSONValue {
        try Self.valueOfV(encrypt(valueDocument: Document(["v": value]).bytes, key: key, algorithm: algorithm), operation: "encrypt")
    }

    /// Explicit encryption of the value of `{"v": value}` (raw BSON); returns libmongocrypt's
    /// `{"v": ciphertext}`.
    func encrypt(valueDocument: [UInt8], key: DataKeySelector, algorithm: EncryptionAlgorithm) throws -> [UInt8] {
        let op = "encrypt"
        let ctx = try CryptContext(self, operation: op)
        switch key {
        case .id(let id):
            try ctx.check(CBinary.with(id.keyIdBytes) { mongocrypt_ctx_setopt_key_id(ctx.ctx, $0) })
        case .altName(let name):
            try ctx.check(CBinary.with(Document(["keyAltName": .string(name)]).bytes) { mongocrypt_ctx_setopt_key_alt_name(ctx.ctx, $0) })
        }
        try ctx.check(mongocrypt_ctx_setopt_algorithm(ctx.ctx, algorithm.rawValue, -1))
        try ctx.check(CBinary.with(valueDocument) { mongocrypt_ctx_explicit_encrypt_init(ctx.ctx, $0) })
        return try ctx.run()
    }

    public func encrypt(_ value: BSONValue, keyId: UUID, algorithm: EncryptionAlgorithm) throws -> BSONValue {
        try encrypt(value, key: .id(keyId), algorithm: algorithm)
    }

    public func encrypt(_ value: BSONValue, keyAltName: String, algorithm: EncryptionAlgorithm) throws -> BSONValue {
        try encrypt(value, key: .altName(keyAltName), algorithm: algorithm)
    }

    /// Explicit decryption of one BSON binary subtype 6 value.
    public func decrypt(_ value: BSONValue) throws -> BSONValue {
        guard case .binary(6, _) = value else { throw FieldCryptoError.notEncrypted(bsonType: value.typeCode) }
        let op = "decrypt"
        let ctx = try CryptContext(self, operation: op)
        try ctx.check(CBinary.with(Document(["v": value]).bytes) { mongocrypt_ctx_explicit_decrypt_init(ctx.ctx, $0) })
        return try Self.valueOfV(ctx.run(), operation: op)
    }

    /// Decrypts every subtype-6 value of a document, at any depth (subdocuments and
    /// arrays). Other elements keep their bytes and order.
    public func decryptDocument(_ document: Document) throws -> Document {
        let ctx = try CryptContext(self, operation: "decrypt document")
        try ctx.check(CBinary.with(document.bytes) { mongocrypt_ctx_decrypt_init(ctx.ctx, $0) })
        return Document(trusted: try ctx.run())
    }

    static func valueOfV(_ bytes: [UInt8], operation: String) throws -> BSONValue {
        let doc = Document(trusted: bytes)
        guard doc.keys == ["v"], let v = doc["v"] else {
            throw FieldCryptoError.unexpectedState(operation: operation, state: "result without a single \"v\" field")
        }
        return v
    }
}

/// Drives one `mongocrypt_ctx_t` through libmongocrypt's state machine.
final class CryptContext {
    let ctx: OpaquePointer
    private let engine: MongoCryptEngine
    private let handle: MongoCryptEngine.CryptHandle  // keeps its mongocrypt_t alive
    private let operation: String

    /// Automatic encryption only: the reply fed in NEED_MONGO_MARKINGS (mongocryptd's part).
    var markingsReply: [UInt8]?
    /// When set, every state the context is found in, in order (tests).
    var observedStates: [String]?
    /// Rewrapping: libmongocrypt's filter is `{}`, answered with every key of the vault.
    var feedAllKeys = false

    init(_ engine: MongoCryptEngine, operation: String) throws {
        for p in engine.providers.values { try p.checkUsable() }
        let handle = engine.currentHandle()
        guard let ctx = mongocrypt_ctx_new(handle.crypt) else {
            throw FieldCryptoError.unexpectedState(operation: operation, state: "mongocrypt_ctx_new failed")
        }
        self.ctx = ctx
        self.handle = handle
        self.engine = engine
        self.operation = operation
    }

    deinit { mongocrypt_ctx_destroy(ctx) }

    func check(_ ok: Bool) throws {
        if !ok { throw contextError() }
    }

    func contextError() -> FieldCryptoError {
        let status = LibStatus.read { _ = mongocrypt_ctx_status(ctx, $0) }
        if status.message == LibStatus.hmacFailure {
            return .authenticationFailed(operation: operation, message: status.message)
        }
        return status.error(operation: operation)
    }

    /// Runs the state machine to DONE and returns what `mongocrypt_ctx_finalize` gave.
    func run() throws -> [UInt8] {
        var result: [UInt8]?
        while true {
            let state = mongocrypt_ctx_state(ctx)
            observedStates?.append(Self.name(of: state))
            switch state {
            case MONGOCRYPT_CTX_NEED_MONGO_MARKINGS:
                // What mongocryptd would answer: fed once, then done.
                guard let reply = markingsReply else {
                    throw FieldCryptoError.unexpectedState(operation: operation, state: Self.name(of: state))
                }
                markingsReply = nil
                try check(CBinary.with(reply) { mongocrypt_ctx_mongo_feed(ctx, $0) })
                try check(mongocrypt_ctx_mongo_done(ctx))
            case MONGOCRYPT_CTX_NEED_MONGO_COLLINFO where markingsReply != nil:
                // Only if the schema map did not answer: no collection info (libmongocrypt
                // then uses an empty schema and still asks for markings).
                try check(mongocrypt_ctx_mongo_done(ctx))
            case MONGOCRYPT_CTX_NEED_MONGO_KEYS:
                try fetchKeys()
            case MONGOCRYPT_CTX_NEED_KMS:
                try runKMS()
            case MONGOCRYPT_CTX_READY:
                let out = mongocrypt_binary_new()!
                defer { mongocrypt_binary_destroy(out) }
                try check(mongocrypt_ctx_finalize(ctx, out))
                result = CBinary.copy(out)  // the view dies with the context: copy now
            case MONGOCRYPT_CTX_DONE:
                guard let result else {
                    throw FieldCryptoError.unexpectedState(operation: operation, state: "DONE without a result")
                }
                return result
            case MONGOCRYPT_CTX_ERROR:
                throw contextError()
            default:
                // NEED_MONGO_COLLINFO / NEED_MONGO_MARKINGS outside `encryptMarked`, and
                // NEED_KMS_CREDENTIALS (on-demand credentials, not configured here).
                throw FieldCryptoError.unexpectedState(operation: operation, state: Self.name(of: state))
            }
        }
    }

    static func name(of state: mongocrypt_ctx_state_t) -> String {
        switch state {
        case MONGOCRYPT_CTX_ERROR: return "ERROR"
        case MONGOCRYPT_CTX_NEED_MONGO_COLLINFO: return "NEED_MONGO_COLLINFO"
        case MONGOCRYPT_CTX_NEED_MONGO_MARKINGS: return "NEED_MONGO_MARKINGS"
        case MONGOCRYPT_CTX_NEED_MONGO_KEYS: return "NEED_MONGO_KEYS"
        case MONGOCRYPT_CTX_NEED_KMS: return "NEED_KMS"
        case MONGOCRYPT_CTX_NEED_KMS_CREDENTIALS: return "NEED_KMS_CREDENTIALS"
        case MONGOCRYPT_CTX_READY: return "READY"
        case MONGOCRYPT_CTX_DONE: return "DONE"
        default: return "state \(state.rawValue)"
        }
    }

    /// NEED_MONGO_KEYS: run libmongocrypt's find filter against the key vault and feed it
    /// the matching key documents.
    private func fetchKeys() throws {
        let filterBin = mongocrypt_binary_new()!
        defer { mongocrypt_binary_destroy(filterBin) }
        try check(mongocrypt_ctx_mongo_op(ctx, filterBin))
        let filter = Document(trusted: CBinary.copy(filterBin))
        let everything = feedAllKeys && filter.keys.isEmpty
        let query = everything ? KeyVaultQuery() : try KeyVaultQuery(filter: filter)

        var fed: [DataKeyInfo] = []
        var fedIds = Set<UUID>()
        defer { engine.noteKeysFed(fed.count) }
        for key in try everything ? engine.keyVault.allKeys() : engine.keyVault.keys(matching: query) {
            let info = try DataKeyInfo(key)
            // A vault that answers loosely must not make libmongocrypt fail with
            // "unexpected key returned" or "duplicate keyAltNames or _id".
            guard everything || query.matches(info), fedIds.insert(info.id).inserted else { continue }
            let ok = CBinary.with(key.bytes) { mongocrypt_ctx_mongo_feed(ctx, $0) }
            if !ok {
                let status = LibStatus.read { _ = mongocrypt_ctx_status(ctx, $0) }
                if status.message == LibStatus.hmacFailure {
                    // The local provider unwraps keyMaterial at feed time.
                    throw FieldCryptoError.masterKeyMismatch(keyId: info.id, message: status.message)
                }
                throw status.error(operation: operation)
            }
            fed.append(info)
        }
        if !mongocrypt_ctx_mongo_done(ctx) {
            let status = LibStatus.read { _ = mongocrypt_ctx_status(ctx, $0) }
            let missing = query.unanswered(by: fed)
            if !missing.ids.isEmpty || !missing.altNames.isEmpty {
                // libmongocrypt only says "not all keys requested were satisfied".
                throw FieldCryptoError.keyNotFound(ids: missing.ids, altNames: missing.altNames, message: status.message)
            }
            throw status.error(operation: operation)
        }
    }

    /// NEED_KMS: hand every KMS request to its provider, then tell libmongocrypt we are
    /// done. The local provider never gets here.
    private func runKMS() throws {
        while let kms = mongocrypt_ctx_next_kms_ctx(ctx) {
            let request = try KMSRequest(kms)
            defer { request.invalidate() }
            guard let provider = engine.providers[request.provider] else {
                throw FieldCryptoError.kms(provider: request.provider, message: "not configured")
            }
            try provider.exchange(request)
            if request.bytesNeeded > 0 {
                throw FieldCryptoError.kms(provider: request.provider, message: "reply ended before libmongocrypt had all of it")
            }
        }
        try check(mongocrypt_ctx_kms_done(ctx))
    }
}

/// A `mongocrypt_status_t` read out into Swift.
struct LibStatus {
    static let hmacFailure = "HMAC validation failure"

    var kind: FieldCryptoError.Kind
    var code: UInt32
    var message: String

    static func read(_ fill: (OpaquePointer) -> Void) -> LibStatus {
        let st = mongocrypt_status_new()!
        defer { mongocrypt_status_destroy(st) }
        fill(st)
        var len: UInt32 = 0
        let message = mongocrypt_status_message(st, &len).map { String(cString: $0) } ?? ""
        let kind: FieldCryptoError.Kind
        switch mongocrypt_status_type(st) {
        case MONGOCRYPT_STATUS_ERROR_CLIENT: kind = .client
        case MONGOCRYPT_STATUS_ERROR_KMS: kind = .kms
        case MONGOCRYPT_STATUS_ERROR_CRYPT_SHARED: kind = .cryptShared
        default: kind = .unknown
        }
        return LibStatus(kind: kind, code: mongocrypt_status_code(st), message: message.isEmpty ? "no message" : message)
    }

    func error(operation: String) -> FieldCryptoError {
        .library(operation: operation, kind: kind, code: code, message: message)
    }
}

/// `mongocrypt_binary_t` views. libmongocrypt copies whatever it is given, so a view over
/// a Swift array only has to live for the call.
enum CBinary {
    static func with<R>(_ bytes: [UInt8], _ body: (OpaquePointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBufferPointer { buf in
            let bin = mongocrypt_binary_new_from_data(UnsafeMutablePointer(mutating: buf.baseAddress), UInt32(buf.count))!
            defer { mongocrypt_binary_destroy(bin) }
            return try body(bin)
        }
    }

    static func copy(_ bin: OpaquePointer) -> [UInt8] {
        let len = Int(mongocrypt_binary_len(bin))
        guard len > 0, let p = mongocrypt_binary_data(bin) else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: len))
    }
}
