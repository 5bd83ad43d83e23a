import BSON
import COpenSSL
import FieldCrypto
import Foundation
import KMIPClient
import Pipeline

/// The encrypted-backup workload of issue 3: five fields of every profile, SSN and email
/// deterministic, name, phone and address random, one data key per user (`userId`).
func writeEncryptionPipeline(work: String, uri: String) throws -> String {
    try writeProfilePipeline(path: "\(work)/encrypted.yaml", workload: "the encrypted-backup workload", uri: uri,
                             namespace: Bench.sourceNS.description, rule: Bench.sourceNS.description, files: "\(work)/enc",
                             encryptionExtra: """
                             erasureLedger: \(work)/enc-erasure.ledger
                             keyVaultBackups: \(work)/enc-keyvault-backups
                             """)
}

/// A pipeline over `namespace` that protects the profile's five fields under `rule`, with a
/// key per user, its own key vault and master key (`<files>-repo`, `-keyvault`, `-master.key`),
/// any extra top-level sections, and any extra keys of the encryption section (one per line).
func writeProfilePipeline(path: String, workload: String, uri: String, namespace: String, rule: String, files: String,
                          extra: String = "", encryptionExtra: String = "") throws -> String {
    let encryptionLines = encryptionExtra.split(separator: "\n").map { "  \($0)\n" }.joined()
    let yaml = """
    # Written by ciphertail-bench: \(workload).
    source: {uri: "\(uri)", namespaces: [\(namespace)]}
    archive: {repo: \(files)-repo}
    \(extra)
    encryption:
    \(encryptionLines)  keyVault: \(files)-keyvault
      masterKey: {provider: local, local: {keyFile: \(files)-master.key}}
      rules:
        - namespace: \(rule)
          subject: userId
          fields:
            - {path: ssn, algorithm: deterministic}
            - {path: email, algorithm: deterministic}
            - {path: name, algorithm: random}
            - {path: phone, algorithm: random}
            - {path: address, algorithm: random}

    """
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

struct EncryptedBackupOutput: Decodable {
    var documents: Int64
    var encryptedValues: Int64?
    var keysCreated: Int64?
}

/// What one CSFLE encryption costs through libmongocrypt, against the AES and HMAC work it
/// consists of, on one thread of this machine. Values are 32-byte strings.
struct CryptoCosts: Codable {
    /// `MongoCryptEngine.encrypt`, one context per value (explicit encryption, as drivers do it).
    var libmongocryptExplicitMicros: Double
    /// `encryptMarked`: 1,000 documents of 5 markings per context, as backup does it.
    var libmongocryptBatchedMicros: Double
    /// AES-256-CBC + HMAC-SHA-512 + RAND_bytes for one random value, with a fresh cipher
    /// context and OpenSSL's one-shot HMAC() per value (what libmongocrypt 1.7 calls).
    var opensslAsLibmongocryptMicros: Double
    /// The same with the algorithm fetched once and contexts reused: the machine's floor.
    var opensslReusedMicros: Double

    var batchedOverFloor: Double { libmongocryptBatchedMicros / opensslReusedMicros }
}

func measureCryptoCosts() throws -> CryptoCosts {
    let vault = try InMemoryKeyVault()
    let engine = try MongoCryptEngine(localMasterKey: LocalMasterKey(bytes: (0..<96).map { UInt8($0) }), keyVault: vault)
    let keyId = try DataKeyInfo(engine.createDataKey(keyAltNames: ["bench"])).id
    let value = BSONValue.string(String(repeating: "x", count: 27))  // 32 bytes as BSON string

    func perCall(_ calls: Int, _ body: () throws -> Void) rethrows -> Double {
        try Timing.measure { for _ in 0..<calls { try body() } }.seconds * 1e6 / Double(calls)
    }

    _ = try engine.encrypt(value, keyId: keyId, algorithm: .random)  // key now cached
    let explicit = try perCall(20_000) { _ = try engine.encrypt(value, keyId: keyId, algorithm: .random) }

    let docs: [Document] = (0..<1_000).map { i in
        var b = DocumentBuilder()
        b.append("_id", .int64(Int64(i)))
        for f in ["ssn", "email", "name", "phone", "address"] {
            b.append(f, Marking.make(value: value, key: .id(keyId), algorithm: .random))
        }
        return b.document
    }
    let batches = 10
    let batched = try perCall(batches) { _ = try engine.encryptMarked(docs) } / Double(docs.count * 5)

    let raw = RawCrypto()
    let asLib = perCall(200_000) { raw.randomValueFresh() }
    let reused = perCall(200_000) { raw.randomValueReused() }
    guard raw.ok else { throw BenchError("an OpenSSL call failed while measuring the primitives") }
    return CryptoCosts(libmongocryptExplicitMicros: explicit, libmongocryptBatchedMicros: batched,
                       opensslAsLibmongocryptMicros: asLib, opensslReusedMicros: reused)
}

/// AEAD_AES_256_CBC_HMAC_SHA_512 of one 32-byte value (random IV) straight through OpenSSL:
/// RAND_bytes for the IV, AES-256-CBC of the value and its padding block, HMAC-SHA-512 over
/// associated data || IV || ciphertext || AL.
private final class RawCrypto {
    let key = [UInt8](repeating: 0x42, count: 32)
    let macKey = [UInt8](repeating: 0x24, count: 32)
    let plaintext = [UInt8](repeating: 0x61, count: 48)  // 32 bytes + a block of PKCS#7 padding
    var iv = [UInt8](repeating: 0, count: 16)
    var out = [UInt8](repeating: 0, count: 64)
    var input = [UInt8](repeating: 1, count: 18 + 16 + 48 + 8)
    var tag = [UInt8](repeating: 0, count: 64)
    var ok = true
    private let cipher = EVP_CIPHER_fetch(nil, "AES-256-CBC", nil)!
    private let reusedCipher = EVP_CIPHER_CTX_new()!
    private let mac = EVP_MAC_fetch(nil, "HMAC", nil)!
    private let keyedMac: OpaquePointer

    init() {
        keyedMac = EVP_MAC_CTX_new(mac)!
        let name: StaticString = "digest", digest: StaticString = "SHA512"
        var params = [
            OSSL_PARAM_construct_utf8_string(UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self),
                                             UnsafeMutableRawPointer(mutating: digest.utf8Start).assumingMemoryBound(to: CChar.self), 0),
            OSSL_PARAM_construct_end(),
        ]
        ok = EVP_MAC_init(keyedMac, macKey, macKey.count, &params) == 1
    }

    deinit {
        EVP_MAC_CTX_free(keyedMac)
        EVP_MAC_free(mac)
        EVP_CIPHER_CTX_free(reusedCipher)
        EVP_CIPHER_free(cipher)
    }

    private func aes(_ ctx: OpaquePointer, _ type: OpaquePointer?) -> Bool {
        var n: Int32 = 0
        guard EVP_EncryptInit_ex(ctx, type, nil, key, iv) == 1 else { return false }
        EVP_CIPHER_CTX_set_padding(ctx, 0)
        return EVP_EncryptUpdate(ctx, &out, &n, plaintext, Int32(plaintext.count)) == 1 && n == 48
    }

    func randomValueFresh() {
        ok = RAND_bytes(&iv, 16) == 1 && ok
        let ctx = EVP_CIPHER_CTX_new()!
        ok = aes(ctx, EVP_aes_256_cbc()) && ok
        EVP_CIPHER_CTX_free(ctx)
        var len: UInt32 = 0
        ok = HMAC(EVP_sha512(), macKey, Int32(macKey.count), input, input.count, &tag, &len) != nil && ok
    }

    func randomValueReused() {
        ok = RAND_bytes(&iv, 16) == 1 && ok
        ok = aes(reusedCipher, cipher) && ok
        let ctx = EVP_MAC_CTX_dup(keyedMac)!
        var len = 0
        ok = EVP_MAC_update(ctx, input, input.count) == 1 && EVP_MAC_final(ctx, &tag, &len, 64) == 1 && ok
        EVP_MAC_CTX_free(ctx)
    }
}

/// The cost of the KMIP key manager: a Get round trip, and starting a pipeline cold (TLS
/// handshake, version negotiation, the master key's state and material checked, the first
/// data key unwrapped) against starting it with a local master key.
struct KMIPCosts: Codable {
    var server: String
    var getRoundTripMicros: Double
    var connectMillis: Double
    var pipelineColdStartMillis: Double
    var localPipelineColdStartMillis: Double
}

func measureKMIPCosts(server: String, pki: String, work: String) throws -> KMIPCosts {
    let options = KMIPOptions(serverName: server, serverCAFile: "\(pki)/ca.pem", clientCertificateFile: "\(pki)/client.pem")
    func millis(_ body: () throws -> Void) rethrows -> Double { try Timing.measure(body).seconds * 1e3 }
    let transport = try KMIPTransport(options: options)
    let connect = try millis { _ = try transport.connect() }
    let client = KMIPClient(transport: transport)
    let id = try client.registerSecretData(material: (0..<96).map { UInt8($0) })
    try client.activate(id)
    _ = try client.get(id)
    let gets = 300
    let getMicros = try millis { for _ in 0..<gets { _ = try client.get(id) } } * 1000 / Double(gets)

    // The same key vault setup both ways: keys init untimed, then openEngine + one encryption timed.
    func coldStart(_ settings: KeySettings) throws -> Double {
        try settings.initialize()
        return try millis {
            let engine = try settings.openEngine()
            let protector = DocumentProtector(rules: [], engine: engine)
            _ = try engine.encrypt(.string("x"), keyId: try protector.ensureKey("bench-cold"), algorithm: .random)
        }
    }
    for f in ["kmip-vault", "local-vault", "local-master.key"] { try? FileManager.default.removeItem(atPath: "\(work)/\(f)") }
    var kmipOptions = options
    kmipOptions.keyIdentifier = id
    let kmip = try coldStart(KeySettings(keyVault: .file("\(work)/kmip-vault"), masterKey: .kmip(kmipOptions, keyStatePollingSeconds: 0)))
    let local = try coldStart(KeySettings(keyVault: .file("\(work)/local-vault"), masterKeyFile: "\(work)/local-master.key"))
    return KMIPCosts(server: server, getRoundTripMicros: getMicros, connectMillis: connect, pipelineColdStartMillis: kmip,
                     localPipelineColdStartMillis: local)
}
