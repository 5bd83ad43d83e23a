import ArgumentParser
import BSON
import Erasure
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import Restore

struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("key-vault"), help: ArgumentHelp("Key vault: a file, or mongodb://HOST/DB.COLL?... for a key vault collection (default: encryption.keyVault of the pipeline).", valueName: "file-or-uri"))
    var keyVault: String?

    @Option(name: .customLong("master-key-file"), help: ArgumentHelp("Local master key file, 96 bytes, mode 0600 (default: encryption.masterKey.local.keyFile).", valueName: "file"))
    var masterKeyFile: String?

    @OptionGroup(title: "KMIP master key (Percona Server for MongoDB's names; override encryption.masterKey.kmip)")
    var kmip: KMIPFlags

    @Option(name: .customLong("erasure-ledger"), help: ArgumentHelp("The erasure ledger file (default: encryption.erasureLedger). Erased subjects stay erased in what this command reads or writes.", valueName: "file"))
    var erasureLedger: String?

    /// The erasure ledger, when one is configured; a damaged one stops the command.
    func ledger(_ common: CommonOptions) throws -> ErasureLedger? {
        let configured = try common.loadPipeline().encryption?.erasureLedger
        guard let path = erasureLedger ?? configured else { return nil }
        return try ErasureLedger.open(at: path)
    }

    /// What reading data needs to know of erasures: values under erased keys are reported
    /// as erased and get each field's onErased.
    func erasure(_ common: CommonOptions, rules: [ProtectionRule]) throws -> (ErasedSet, ErasureTreatment)? {
        guard let ledger = try ledger(common) else { return nil }
        let set = ErasedSet(ledger: ledger)
        return (set, set.treatment(rules: rules))
    }

    func settings(_ common: CommonOptions) throws -> KeySettings {
        guard let s = try KeySettings.resolve(try common.loadPipeline().encryption, keyVault: keyVault, masterKeyFile: masterKeyFile,
                                              kmip: kmip.section) else {
            throw ValidationError("no key vault: give --key-vault with --master-key-file or --kmip-server-name, or encryption.keyVault and encryption.masterKey in the pipeline file")
        }
        return s
    }
}

/// The KMIP options as flags. The password is never a flag (argv is visible to every user
/// of the machine): a file or an environment variable holds it.
struct KMIPFlags: ParsableArguments {
    @Option(name: .customLong("kmip-server-name"), help: ArgumentHelp("KMIP servers, comma-separated, tried in order.", valueName: "hosts"))
    var serverName: String?
    @Option(name: .customLong("kmip-port"), help: "KMIP port (default 5696).")
    var port: Int?
    @Option(name: .customLong("kmip-server-ca-file"), help: ArgumentHelp("CA of the KMIP server certificate (default: the system store).", valueName: "file"))
    var serverCAFile: String?
    @Option(name: .customLong("kmip-client-certificate-file"), help: ArgumentHelp("PEM with the client key and certificate chain.", valueName: "file"))
    var clientCertificateFile: String?
    @Option(name: .customLong("kmip-client-certificate-password-file"), help: ArgumentHelp("File holding the client key's password (mode 0600).", valueName: "file"))
    var passwordFile: String?
    @Option(name: .customLong("kmip-client-certificate-password-env"), help: ArgumentHelp("Environment variable holding the client key's password.", valueName: "name"))
    var passwordEnv: String?
    @Option(name: .customLong("kmip-key-identifier"), help: ArgumentHelp("The master key's KMIP id (default: the one the key vault uses; keys init creates one).", valueName: "id"))
    var keyIdentifier: String?
    @Option(name: .customLong("kmip-connect-retries"), help: "Extra rounds over the servers (default 0).")
    var connectRetries: Int?
    @Option(name: .customLong("kmip-connect-timeout-ms"), help: "Per attempt, at least 1000 (default 5000).")
    var connectTimeoutMS: Int?
    @Flag(name: .customLong("kmip-rotate-master-key"), help: "Rotate the master key, print the new id, and stop (as mongod does).")
    var rotateMasterKey = false
    @Option(name: .customLong("kmip-key-state-polling-seconds"), help: "How often a running backup checks the master key is Active (default 900; 0: never).")
    var keyStatePollingSeconds: Int?

    var section: Encryption.MasterKey.KMIP? {
        let given: [Any?] = [serverName, port, serverCAFile, clientCertificateFile, passwordFile, passwordEnv, keyIdentifier, connectRetries,
                             connectTimeoutMS, keyStatePollingSeconds, rotateMasterKey ? true : nil]
        guard given.contains(where: { $0 != nil }) else { return nil }
        var k = Encryption.MasterKey.KMIP()
        k.serverName = serverName
        k.port = port
        k.serverCAFile = serverCAFile
        k.clientCertificateFile = clientCertificateFile
        k.clientCertificatePasswordFile = passwordFile
        k.clientCertificatePasswordEnv = passwordEnv
        k.keyIdentifier = keyIdentifier
        k.connectRetries = connectRetries
        k.connectTimeoutMS = connectTimeoutMS
        k.rotateMasterKey = rotateMasterKey ? true : nil
        k.keyStatePollingSeconds = keyStatePollingSeconds
        return k
    }
}

/// Where a MongoDB key vault collection lives (`keys export` and `keys import`).
struct KeyVaultCollectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Deployment that holds the key vault collection.", valueName: "uri")) var uri: String
    @Option(name: .customLong("key-vault-namespace"), help: ArgumentHelp("db.coll (default encryption.__keyVault).", valueName: "ns"))
    var keyVaultNamespace = "encryption.__keyVault"

    func namespace() throws -> Namespace {
        guard let ns = Namespace(keyVaultNamespace) else { throw ValidationError("--key-vault-namespace must be db.coll") }
        return ns
    }
}

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Manage the key vault: the master key and the data keys.",
        discussion: """
        Data keys are CSFLE key documents wrapped by the master key; the key vault lives apart \
        from the data archives and is never written into one. Key material is never printed.

          ciphertail keys init   --key-vault /var/lib/ciphertail/keyvault --master-key-file /etc/ciphertail/master.key
          ciphertail keys create --pipeline pipelines/encrypted-backup.yaml --alt-name billing
          ciphertail keys list   --pipeline pipelines/encrypted-backup.yaml --json
        """,
        subcommands: [Init.self, Create.self, List.self, Show.self, Export.self, Import.self, RotateMaster.self, Backup.self, Restore.self])

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save the key vault into a key-vault backup file, apart from the data archives.",
            discussion: """
            The file holds the data key documents as they are (wrapped by the master key; no key \
            material in clear), the erasure ledger's head at the time, and a SHA-256 of it all; \
            mode 0600 in a 0700 folder. Keep these files out of general-purpose backups and \
            away from the master key. erase rewrites the ones in this folder without the erased keys.

              ciphertail keys backup --pipeline pipelines/encrypted-backup.yaml
              ciphertail keys backup --pipeline pipelines/encrypted-backup.yaml --to /var/lib/ciphertail/keyvault-backups --json
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @Option(help: ArgumentHelp("Folder to write into (default: encryption.keyVaultBackups).", valueName: "dir"))
        var to: String?

        func run() throws {
            try runReportingErrors {
                let settings = try keys.settings(common)
                guard let folder = try to ?? common.loadPipeline().encryption?.keyVaultBackups else {
                    throw ValidationError("no folder: give --to or encryption.keyVaultBackups")
                }
                let vault = try settings.keyVault.open()
                let all = try vault.allKeys()
                let path = try KeyVaultBackups.write(keys: all, source: settings.keyVault.description, ledger: try keys.ledger(common), to: folder)
                if common.json { try printJSON(["backup": path, "keys": String(all.count)]) } else { print("saved \(all.count) data keys to \(path)") }
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put the keys of a key-vault backup back into the key vault, less every erased key.",
            discussion: """
            The erasure ledger is applied first, in memory: a key it names (by id or by its \
            subject) is never written back, so restoring a backup older than an erasure does not \
            undo it. Keys already in the vault stay as they are; the rest are added. A ledger \
            older than the backup (rolled back or replaced) is refused, exit 4.

              ciphertail keys restore --pipeline pipelines/encrypted-backup.yaml /var/lib/ciphertail/keyvault-backups/keyvault-20261122T020000.000Z.ctkvb
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @Argument(help: "The key-vault backup file.") var backup: String

        func run() throws {
            try runReportingErrors {
                let settings = try keys.settings(common)
                guard let ledger = try keys.ledger(common) else { throw LedgerError.notConfigured }
                let vault: any KeyVault
                if case .file(let path) = settings.keyVault { vault = try FileKeyVault.openOrCreate(at: path) } else { vault = try settings.keyVault.open() }
                let r = try KeyVaultBackups.restore(backup, into: vault, ledger: ledger)
                if common.json { try printJSON(r); return }
                print("restored \(r.added) data keys from \(r.backup) (\(r.alreadyPresent) already present, \(r.withheldErased) erased and withheld)")
            }
        }
    }

    struct RotateMaster: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-master",
            abstract: "Rewrap every data key under a new KMIP master key.",
            discussion: """
            Creates a new master key on the KMIP server (or takes --to-key-id, which must be an Active \
            96-byte Secret Data object), rewraps every data key under it with libmongocrypt, and \
            switches the key vault atomically (a file vault is rewritten and renamed; a collection \
            is updated key by key, and a rotation cut short is finished by running it again). The \
            data keys themselves do not change, so no archive is rewritten and every old backup \
            stays restorable. --revoke-old then revokes the old master key (reason Superseded).

              ciphertail keys rotate-master --pipeline pipelines/kmip-backup.yaml
              ciphertail keys rotate-master --pipeline pipelines/kmip-backup.yaml --to-key-id 42 --revoke-old --json
            """)
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @Option(name: .customLong("to-key-id"), help: ArgumentHelp("An existing master key to rotate to (default: create one).", valueName: "id"))
        var toKeyId: String?
        @Flag(name: .customLong("revoke-old"), help: "Revoke the old master key afterwards.")
        var revokeOld = false

        func run() throws {
            try runReportingErrors {
                let r = try keys.settings(common).rotateMasterKey(toKeyId: toKeyId, revokeOld: revokeOld)
                if common.json {
                    try printJSON(["oldKeyIdentifier": r.oldKeyIdentifier, "newKeyIdentifier": r.newKeyIdentifier, "dataKeys": String(r.keys),
                                   "oldKeyRevoked": String(revokeOld)])
                } else {
                    print(r.description)
                }
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy the data keys into a MongoDB key vault collection (for drivers' automatic decryption).",
            discussion: "The key documents are MongoDB's CSFLE key documents, still wrapped by the master key; existing ids are replaced.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @OptionGroup var collection: KeyVaultCollectionOptions

        func run() throws {
            try runReportingErrors {
                let engine = try keys.settings(common).openEngine()
                let ns = try collection.namespace()
                let n = try KeyTransfer.export(engine.keyVault, to: ConnectionString(collection.uri), namespace: ns)
                if common.json { try printJSON(["exported": n]) } else { print("exported \(n) data keys to \(ns)") }
            }
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy data keys from a MongoDB key vault collection into the key vault file.",
            discussion: "Keys whose id is already in the file are skipped. They must be wrapped by the same master key to be usable.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @OptionGroup var collection: KeyVaultCollectionOptions

        func run() throws {
            try runReportingErrors {
                let engine = try keys.settings(common).openEngine()
                let ns = try collection.namespace()
                let n = try KeyTransfer.import(from: ConnectionString(collection.uri), namespace: ns, into: engine.keyVault)
                if common.json { try printJSON(["imported": n]) } else { print("imported \(n) data keys from \(ns)") }
            }
        }
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the master key file and the key vault (each 0600) if they do not exist.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions

        func run() throws {
            try runReportingErrors {
                let s = try keys.settings(common)
                let created = try s.initialize()
                if common.json {
                    try printJSON(["created": created, "keyVault": [s.keyVault.description], "masterKey": [s.masterKeyDescription]])
                } else {
                    for c in created { print("created \(c)") }
                    if created.isEmpty { print("key vault \(s.keyVault) and master key \(s.masterKeyDescription) already exist") }
                }
            }
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a data key, optionally with a keyAltName.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @Option(name: .customLong("alt-name"), help: ArgumentHelp("A name to find the key by (repeatable).", valueName: "name"))
        var altNames: [String] = []

        func run() throws {
            try runReportingErrors {
                let engine = try keys.settings(common).openEngine()
                let doc = try engine.createDataKey(keyAltNames: altNames)
                let info = try KeySummary(doc)
                if common.json { try printJSON(info) } else { print(info.id) }
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the data keys (never their material).")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions

        func run() throws {
            try runReportingErrors {
                let engine = try keys.settings(common).openEngine()
                let all = try engine.keyVault.allKeys().map(KeySummary.init)
                if common.json { try printJSON(all); return }
                for k in all { print("\(k.id)  \(k.provider)  created \(k.created)  \(k.altNames.joined(separator: ", "))") }
                print("\(all.count) data keys")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one data key by id or keyAltName.")
        @OptionGroup var common: CommonOptions
        @OptionGroup var keys: KeyOptions
        @Argument(help: "The key's UUID or one of its keyAltNames.") var key: String

        func run() throws {
            try runReportingErrors {
                let engine = try keys.settings(common).openEngine()
                let query = UUID(uuidString: key).map { KeyVaultQuery(ids: [$0], altNames: []) } ?? KeyVaultQuery(ids: [], altNames: [key])
                guard let doc = try engine.keyVault.keys(matching: query).first else {
                    throw FieldCryptoError.keyNotFound(ids: [], altNames: [key], message: "no such key in the vault")
                }
                let info = try KeySummary(doc)
                if common.json { try printJSON(info); return }
                print("id:        \(info.id)\nprovider:  \(info.provider)\ncreated:   \(info.created)\nstatus:    \(info.status)\naltNames:  \(info.altNames.joined(separator: ", "))")
            }
        }
    }
}

/// What is shown of a data key: identity and metadata, never keyMaterial.
struct KeySummary: Encodable {
    var id: String
    var altNames: [String]
    var provider: String
    var created: String
    var status: Int

    init(_ doc: Document) throws {
        let info = try DataKeyInfo(doc)
        id = info.id.uuidString.lowercased()
        altNames = info.altNames
        provider = info.provider
        if case .datetime(let ms)? = doc["creationDate"] {
            created = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
        } else {
            created = "?"
        }
        status = Int(doc["status"]?.int64Value ?? 0)
    }
}
