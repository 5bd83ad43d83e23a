import ArgumentParser
import BSON
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

    func settings(_ common: CommonOptions) throws -> KeySettings {
        guard let s = try KeySettings.resolve(try common.loadPipeline().encryption, keyVault: keyVault, masterKeyFile: masterKeyFile) else {
            throw ValidationError("no key vault: give --key-vault and --master-key-file, or encryption.keyVault and encryption.masterKey.local.keyFile in the pipeline file")
        }
        return s
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
        subcommands: [Init.self, Create.self, List.self, Show.self, Export.self, Import.self])

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
                    try printJSON(["created": created, "keyVault": [s.keyVault.description], "masterKeyFile": [s.masterKeyFile]])
                } else {
                    for c in created { print("created \(c)") }
                    if created.isEmpty { print("key vault \(s.keyVault) and master key \(s.masterKeyFile) already exist") }
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
