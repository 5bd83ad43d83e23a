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

        func validate() throws { try kmip.refuseCiphertailKeyFlags() }

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
                    names:                 \(report.names.isEmpty ? "(none)" : report.names.joined(separator: ", "))
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

        func validate() throws { try kmip.refuseCiphertailKeyFlags() }

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

        func validate() throws { try kmip.refuseCiphertailKeyFlags() }

        func run() throws {
            try runReportingErrors {
                let converted = try PSMDBMasterKeys(try kmip.client(common)).convert(keyId, to: to, name: name)
                if common.json { try printJSON(converted) } else { print(converted.id) }
            }
        }
    }
}

extension PSMDBKeyFormat: ExpressibleByArgument {}

extension KMIPFlags {
    /// --kmip-key-identifier and --kmip-rotate-master-key are about ciphertail's own master key;
    /// ignoring them here would hide a mix-up with the PSMDB key of --key-id.
    func refuseCiphertailKeyFlags() throws {
        if keyIdentifier != nil {
            throw ValidationError("--kmip-key-identifier names ciphertail's own master key; give the PSMDB key with --key-id")
        }
        if rotateMasterKey {
            throw ValidationError("--kmip-rotate-master-key rotates ciphertail's own master key (keys rotate-master); it does not apply here")
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

