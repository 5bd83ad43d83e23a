import ArgumentParser
import FieldCrypto
import Foundation
import KMIP
import KMIPClient
import Pipeline

struct KmipCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kmip",
        abstract: "Inspect, provision and convert Percona Server for MongoDB master keys on a KMIP server.",
        discussion: """
        PSMDB keeps its data-at-rest master key on the KMIP server as an AES-256 Symmetric Key. \
        Since 6.0.6-5, 5.0.17-14 and 4.4.21-20 the key material is the 32 raw bytes; earlier \
        versions registered the 44-character base64 text of the key, and cannot read a raw key. \
        A downgrade therefore needs a logical backup, a key in the legacy format for the old \
        mongod (--kmipKeyIdentifier), and a logical restore (docs/runbooks/kmip-downgrade.md).

        The connection comes from --pipeline (encryption.masterKey.kmip) with the --kmip-* flags \
        over it. Key material is never printed, nor any hash of it.

          ciphertail kmip inspect --key-id 42 --kmip-server-name kmip1,kmip2 \\
              --kmip-server-ca-file ca.pem --kmip-client-certificate-file client.pem
          ID=$(ciphertail kmip provision-master-key --pipeline kmip.yaml --format legacy-base64)
          ciphertail kmip convert --pipeline kmip.yaml --key-id 42 --to legacy-base64 --json

        These keys are PSMDB's, not ciphertail's own CSFLE master key (96-byte Secret Data, \
        made by keys init and keys rotate-master).
        """,
        subcommands: [Inspect.self, ProvisionMasterKey.self, Convert.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what a KMIP key is, and which PSMDB key format its material has.",
            discussion: """
            Reads the key (Get) and its attributes (Get Attributes) and prints the object type, \
            state, cryptographic algorithm and length, material length, names, and the format: \
            raw (32 bytes: PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later), legacy-base64 (44 \
            base64 characters of a 32-byte key: earlier versions) or other (not a PSMDB master key).

              ciphertail kmip inspect --pipeline kmip.yaml --key-id 42
              ciphertail kmip inspect --pipeline kmip.yaml --key-id 42 --json

            A key that does not exist exits 8 and names the id.
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup(title: "KMIP server (Percona Server for MongoDB's names; override encryption.masterKey.kmip)")
        var kmip: KMIPFlags
        @Option(name: .customLong("key-id"), help: ArgumentHelp("The key's KMIP Unique Identifier.", valueName: "id"))
        var keyId: String

        func validate() throws { try kmip.refuseKeyIdentifier() }

        func run() throws {
            try runReportingErrors {
                let report = try PSMDBMasterKeys(try kmip.client(common)).inspect(keyId)
                if common.json { try printJSON(report); return }
                print("""
                    id:                    \(report.id)
                    object type:           \(report.objectType)
                    state:                 \(report.state ?? "?")
                    algorithm:             \(report.cryptographicAlgorithm ?? "?")
                    cryptographic length:  \(report.cryptographicLength.map { "\($0) bits" } ?? "?")
                    material:              \(report.materialBytes) bytes (key format type \(report.keyFormatType))
                    format:                \(report.format)\(PSMDBMasterKeys.versions(report.format))
                    names:                 \(report.names.joined(separator: ", "))
                    """)
            }
        }
    }

    struct ProvisionMasterKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "provision-master-key",
            abstract: "Register and activate a new PSMDB master key (32 random bytes) in either format.",
            discussion: """
            raw registers the 32 bytes, as PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later do. \
            legacy-base64 registers their 44-character base64 text, as earlier versions did; its \
            Cryptographic Length is 352 bits (44 bytes), what those versions' client sent and what \
            PyKMIP requires (it refuses a length that differs from the material's). The key is \
            then activated. Prints only the new id, so it can be captured:

              ID=$(ciphertail kmip provision-master-key --pipeline kmip.yaml --format legacy-base64)
              mongod --enableEncryption --kmipServerName kmip1 --kmipKeyIdentifier "$ID" ...

            --name sets the key's Name. A legacy key gets one by default \
            (ciphertail-psmdb-master-<UTC time>): the oldest KMIP versions of PSMDB found their \
            key by Name (their --kmipKeyIdentifier was the Name). A name another object already \
            has is refused, since a lookup by name would then be ambiguous.
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup(title: "KMIP server (Percona Server for MongoDB's names; override encryption.masterKey.kmip)")
        var kmip: KMIPFlags
        @Option(help: ArgumentHelp("raw or legacy-base64.", valueName: "format"))
        var format: PSMDBKeyFormat
        @Option(help: ArgumentHelp("The key's Name (default: none for raw, ciphertail-psmdb-master-<UTC time> for legacy-base64).", valueName: "name"))
        var name: String?

        func validate() throws { try kmip.refuseKeyIdentifier() }

        func run() throws {
            try runReportingErrors {
                let created = try PSMDBMasterKeys(try kmip.client(common)).provision(format, name: name)
                if common.json { try printJSON(created) } else { print(created.id) }
            }
        }
    }

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register an existing PSMDB master key again in the other format.",
            discussion: """
            Reads the key's material, decodes the base64 text (legacy-base64 to raw) or encodes \
            the 32 bytes (raw to legacy-base64), registers the same key as a new Symmetric Key, \
            activates it and prints the new id. The source key is left as it is.

              ciphertail kmip convert --pipeline kmip.yaml --key-id 42 --to legacy-base64

            Both objects then hold the same secret: whoever can read either can read data under \
            both, and revoking one does not retire the other. For a downgrade, a new key \
            (provision-master-key) keeps the old and the new server's data apart; convert when \
            the same key must open both, and revoke the one left unused when done.

            Refused: a source already in the target format (exit 64), and a source that is not \
            a Symmetric Key, is Compromised, or is in neither format (exit 8).
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup(title: "KMIP server (Percona Server for MongoDB's names; override encryption.masterKey.kmip)")
        var kmip: KMIPFlags
        @Option(name: .customLong("key-id"), help: ArgumentHelp("The existing key's KMIP Unique Identifier.", valueName: "id"))
        var keyId: String
        @Option(help: ArgumentHelp("The format of the new key: raw or legacy-base64.", valueName: "format"))
        var to: PSMDBKeyFormat
        @Option(help: ArgumentHelp("The new key's Name (default: none for raw, ciphertail-psmdb-master-<UTC time> for legacy-base64).", valueName: "name"))
        var name: String?

        func validate() throws { try kmip.refuseKeyIdentifier() }

        func run() throws {
            try runReportingErrors {
                let converted = try PSMDBMasterKeys(try kmip.client(common)).convert(keyId, to: to, name: name)
                if common.json { try printJSON(converted) } else { print(converted.id) }
            }
        }
    }
}

enum PSMDBKeyFormat: String, ExpressibleByArgument, CaseIterable, Encodable {
    case raw
    case legacyBase64 = "legacy-base64"

    var material: KeyMaterialFormat { self == .raw ? .raw : .legacyBase64 }
}

extension KMIPFlags {
    /// These commands name PSMDB's key with --key-id; --kmip-key-identifier is ciphertail's own
    /// master key, and silently ignoring it would hide a mix-up.
    func refuseKeyIdentifier() throws {
        if keyIdentifier != nil {
            throw ValidationError("--kmip-key-identifier names ciphertail's own master key; give the PSMDB key with --key-id")
        }
    }

    /// A client for the pipeline's KMIP section with these flags over it.
    func client(_ common: CommonOptions) throws -> KMIPClient {
        let file = try common.loadPipeline()
        let k = (file.encryption?.masterKey?.kmip ?? .init()).overridden(by: section)
        guard let servers = k.serverName, !servers.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ValidationError("no KMIP server: give --kmip-server-name, or encryption.masterKey.kmip.serverName in the pipeline file")
        }
        // The logger writes to stderr: stdout carries only the result, for $(...).
        return KMIPClient(transport: try KMIPTransport(options: try k.options(), logger: common.makeLogger("kmip")))
    }
}

// MARK: - The key operations

// Library code kept beside its only caller; it needs nothing of the CLI and can move to
// KMIPClient as it is.

/// What `kmip inspect` shows of a key: never its material.
struct PSMDBKeyReport: Encodable {
    var id: String
    var objectType: String
    var state: String?
    var cryptographicAlgorithm: String?
    var cryptographicLength: Int32?
    var keyFormatType: String
    var materialBytes: Int
    /// raw, legacy-base64 or other.
    var format: String
    var names: [String]
}

/// A key registered by `provision-master-key` or `convert`.
struct PSMDBKeyCreated: Encodable {
    var id: String
    var format: PSMDBKeyFormat
    var name: String?
    var cryptographicLength: Int
    /// For `convert`: the key it was made from.
    var sourceId: String?
    var sourceFormat: PSMDBKeyFormat?
}

/// PSMDB's data-at-rest master key on a KMIP server: an AES-256 Symmetric Key whose
/// material is the 32 raw bytes (PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later) or their
/// base64 text (earlier versions). Material lives only in arrays wiped after use.
struct PSMDBMasterKeys {
    let client: KMIPClient

    init(_ client: KMIPClient) { self.client = client }

    static func name(_ format: KeyMaterialFormat) -> String {
        switch format {
        case .raw: "raw"
        case .legacyBase64: "legacy-base64"
        case .other: "other"
        }
    }

    /// Which PSMDB versions read a format, for the plain output.
    static func versions(_ format: String) -> String {
        switch format {
        case "raw": " (PSMDB 6.0.6-5, 5.0.17-14, 4.4.21-20 and later)"
        case "legacy-base64": " (PSMDB before 6.0.6-5, 5.0.17-14, 4.4.21-20)"
        default: " (not a PSMDB master key)"
        }
    }

    func inspect(_ id: String) throws -> PSMDBKeyReport {
        var got = try get(id)
        defer { wipe(&got.keyMaterial) }
        let attributes = try client.attributes(id)
        return PSMDBKeyReport(
            id: id, objectType: "\(got.objectType)", state: attributes.state.map { "\($0)" },
            cryptographicAlgorithm: (attributes.cryptographicAlgorithm ?? got.cryptographicAlgorithm).map { "\($0)" },
            cryptographicLength: attributes.cryptographicLength ?? got.cryptographicLength,
            keyFormatType: "\(got.keyFormatType)", materialBytes: got.keyMaterial.count,
            format: Self.name(KeyMaterialFormat.classify(got.keyMaterial)), names: attributes.names)
    }

    func provision(_ format: PSMDBKeyFormat, name: String?) throws -> PSMDBKeyCreated {
        var rng = SystemRandomNumberGenerator()  // getrandom(2)
        var key = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        defer { wipe(&key) }
        return try register(key, as: format, name: name)
    }

    func convert(_ id: String, to target: PSMDBKeyFormat, name: String?) throws -> PSMDBKeyCreated {
        var got = try get(id)
        defer { wipe(&got.keyMaterial) }
        func refuse(_ why: String) -> Error { FieldCryptoError.kms(provider: "kmip", message: "KMIP key \(id) \(why)") }
        guard got.objectType == .symmetricKey else {
            throw refuse("is \(got.objectType), not a Symmetric Key: not a PSMDB master key")
        }
        let format = KeyMaterialFormat.classify(got.keyMaterial)
        guard format != .other, var key = KeyMaterialFormat.key(from: got.keyMaterial) else {
            throw refuse("is in neither PSMDB format (\(got.keyMaterial.count) bytes; raw is 32 bytes, legacy-base64 44 characters)")
        }
        defer { wipe(&key) }
        let source: PSMDBKeyFormat = format == .raw ? .raw : .legacyBase64
        guard source != target else {
            throw ValidationError("KMIP key \(id) is already \(target.rawValue): nothing to convert")
        }
        if let state = try client.attributes(id, names: ["State"]).state,
           state == .compromised || state == .destroyedCompromised {
            throw refuse("is \(state): its material must not be registered again; provision a new key")
        }
        var created = try register(key, as: target, name: name)
        created.sourceId = id
        created.sourceFormat = source
        return created
    }

    /// Get, with a missing key named as such.
    private func get(_ id: String) throws -> KMIPGetResult {
        do {
            return try client.get(id)
        } catch KMIPClientError.refused(_, _, let e) where e.reason == .itemNotFound {
            throw KMIPClientError.keyNotFound(id)
        }
    }

    /// Registers the 32-byte `key` in `format`, then activates it.
    private func register(_ key: [UInt8], as format: PSMDBKeyFormat, name given: String?) throws -> PSMDBKeyCreated {
        var name = given
        if name == nil && format == .legacyBase64 { name = Self.defaultName() }
        if let name {
            // The oldest KMIP versions of PSMDB Locate their key by Name: it must be unique.
            let holders = try client.locate(name: name)
            guard holders.isEmpty else {
                throw ValidationError("the KMIP name \"\(name)\" is already used by object \(holders.joined(separator: ", ")); give another --name")
            }
        }
        var material = format == .raw ? key : Self.base64(key)
        defer { wipe(&material) }
        // The Register request says Cryptographic Length = material bytes x 8 (256, or 352
        // for the base64 text): what PSMDB's legacy client sent, and what PyKMIP checks.
        let id = try client.registerSymmetricKey(material: material, name: name)
        do {
            try client.activate(id)
        } catch {
            FileHandle.standardError.write(Data("ciphertail: key \(id) was registered but not activated; destroy it, or activate it on the KMIP server\n".utf8))
            throw error
        }
        return PSMDBKeyCreated(id: id, format: format, name: name, cryptographicLength: material.count * 8)
    }

    static func defaultName(_ now: Date = Date()) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        return "ciphertail-psmdb-master-" + f.string(from: now)
    }

    /// Standard base64 with padding, into an array that can be wiped (a String cannot).
    static func base64(_ bytes: [UInt8]) -> [UInt8] {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(i + 1 < bytes.count ? bytes[i + 1] : 0) << 8
                | UInt32(i + 2 < bytes.count ? bytes[i + 2] : 0)
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return out
    }

    private func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let p = $0.baseAddress { explicit_bzero(p, $0.count) } }
    }
}
