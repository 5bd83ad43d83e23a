import Archive
import ArgumentParser
import Capture
import Foundation
import Mongo
import Erasure
import FieldCrypto
import Pipeline

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take a consistent logical backup into a repository.",
        discussion: """
        Copies every matching collection (documents, options, indexes) and the change events \
        that happen during the copy, so that restore reaches one consistent cluster time, like \
        `mongodump --oplog`. The source must be a replica set (change streams need one). \
        Prints the backup id, or a JSON summary with --json.

        Examples:
          ciphertail backup --uri 'mongodb://127.0.0.1:27017/?replicaSet=rs0' --repo /srv/ct
          ciphertail backup --pipeline pipelines/nightly.yaml --ns 'shop.*' --ns crm.contacts
        """)

    @OptionGroup var common: CommonOptions

    @OptionGroup var source: SourceOptions

    @OptionGroup var keys: KeyOptions

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            let (settings, uri, repo) = try source.resolve(file)
            var options = BackupOptions(connection: ConnectionString(uri), repository: repo)
            options.namespaces = try settings.namespaces.map(NamespacePattern.init)
            options.useArchiveSettings(settings)
            let stage = try CaptureKeys(file, keys: keys, common: common)
            defer { stage.stop() }
            options.excludedNamespaces.formUnion(stage.excluded)
            options.protector = stage.protector
            let progress = ProgressLine("backup", unit: .documents, enabled: !common.json)
            options.progress = { p in
                progress.update(done: p.documents, total: p.expectedDocuments, detail: "\(p.namespace), \(formatBytes(p.bytes))")
            }
            let manifest = try BackupRunner(options, logger: common.makeLogger("backup")).run()
            progress.finish()
            if common.json {
                var out = BackupSummaryOutput(manifest)
                out.encryptedValues = options.protector?.encryptedValues
                out.keysCreated = options.protector?.keysCreated
                try printJSON(out)
            } else {
                print(manifest.id)
            }
        }
    }
}

struct BackupSummaryOutput: Encodable {
    var id: String
    var namespaces: Int
    var documents: Int64
    var events: Int64
    var rawBytes: Int64
    var storedBytes: Int64
    var clusterTime: ClusterTimeRange
    var seconds: Double
    /// With encryption rules: values encrypted, and data keys created on first use.
    var encryptedValues: Int64?
    var keysCreated: Int64?

    init(_ m: Manifest) {
        id = m.id
        namespaces = m.namespaces.count
        documents = m.documentCount
        events = m.events.count
        rawBytes = m.rawBytes
        storedBytes = m.storedBytes
        clusterTime = m.clusterTime
        seconds = m.completedAt.timeIntervalSince(m.createdAt)
    }
}

extension BackupOptions {
    /// The archive's compression level, block and segment sizes, from the pipeline and flags.
    mutating func useArchiveSettings(_ s: ResolvedSettings) {
        compressionLevel = Int32(s.compressionLevel)
        blockBytes = s.blockBytes
        segmentBytes = s.segmentBytes
    }
}

/// The encryption stage of a capture (backup, tail): the key vault collection to leave out
/// and, with rules, an open engine and its protector. Fail closed: rules without keys stop
/// the command. A KMIP key withdrawn while it runs stops the provider, the encryption stage
/// fails, and nothing is written in clear.
struct CaptureKeys {
    var protector: DocumentProtector?
    var excluded: Set<Namespace> = []
    var poller: KMIPStatePoller?
    var watch: ErasureWatch?

    init(_ file: PipelineFile, keys: KeyOptions, common: CommonOptions) throws {
        let settings = try KeySettings.resolve(file.encryption, keyVault: keys.keyVault, masterKeyFile: keys.masterKeyFile,
                                               kmip: keys.kmip.section)
        if let vault = settings?.excludedNamespace { excluded.insert(vault) }
        guard let rules = file.encryption?.protectionRules(), !rules.isEmpty else { return }
        guard let settings else {
            throw ValidationError("the pipeline has encryption rules but names no key vault and master key")
        }
        let engine = try settings.openEngine()
        poller = settings.startKeyStatePolling(engine, logger: common.makeLogger("kmip"))
        let protector = DocumentProtector(rules: rules, engine: engine)
        protector.subjectMasterKey = settings.subjectMasterKeys(engine, perSubject: file.encryption?.masterKey?.kmip?.perSubjectKeys == true)
        // Erased subjects never get a key again; a subject erased while this runs stops
        // being encrypted (its plaintext is withheld) within a second.
        if let ledger = try keys.ledger(common) {
            let erased = ErasedSet(ledger: ledger)
            protector.erasedSubjects = erased
            watch = ErasureWatch(erased: erased, engine: engine, logger: common.makeLogger("erasure"))
            watch?.start()
        }
        self.protector = protector
    }

    func stop() {
        poller?.cancel()
        watch?.stop()
    }
}

/// Where a capture (backup, tail) reads from and writes to.
struct SourceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("MongoDB connection string of the source.", valueName: "uri"))
    var uri: String?

    @Option(help: ArgumentHelp("Repository folder (created on first use).", valueName: "dir"))
    var repo: String?

    @Option(help: ArgumentHelp("Namespace to capture: db.coll, db.* or *.coll (repeatable; default: all user databases).", valueName: "pattern"))
    var ns: [String] = []

    @Option(help: ArgumentHelp("zstd compression level (1-19, default 3).", valueName: "n"))
    var level: Int?

    /// Flags over the pipeline file; a capture needs a source and a repository.
    func resolve(_ file: PipelineFile) throws -> (settings: ResolvedSettings, uri: String, repo: String) {
        let settings = file.resolve(uri: uri, namespaces: ns, repo: repo, level: level)
        guard let uri = settings.uri else { throw ValidationError("no source: give --uri or source.uri in the pipeline file") }
        guard let repo = settings.repo else { throw ValidationError("no repository: give --repo or archive.repo in the pipeline file") }
        return (settings, uri, repo)
    }
}
