import Archive
import ArgumentParser
import Foundation
import Mongo
import Pipeline
import Erasure
import FieldCrypto
import Restore

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup into a MongoDB deployment.",
        discussion: """
        Recreates each collection with its options, loads the documents with parallel bulk \
        inserts, replays the captured change events to the backup's consistent cluster time, \
        and builds the indexes. Refuses collections that already hold data unless --drop. \
        With --at, restores to a point in time: the newest base snapshot before it, then the \
        change log (`ciphertail tail`) up to and including it; `ciphertail list` shows what is \
        restorable. Running the same restore again with --drop ends in the same state.

        Examples:
          ciphertail restore --repo /srv/ct --uri ... --at 2026-11-22T17:12:00Z --drop
          ciphertail restore --repo /srv/ct --uri ... --at 1795367540:3 --ns shop.orders
          ciphertail restore --repo /srv/ct --uri 'mongodb://127.0.0.1:27017/?replicaSet=rs0'
          ciphertail restore --repo /srv/ct --uri ... --backup 20261122T020000Z-1a2b3c4d \\
              --ns-from 'shop.*' --ns-to 'shop_restored.*' --drop
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder.", valueName: "dir"))
    var repo: String?

    @Option(help: ArgumentHelp("MongoDB connection string of the target.", valueName: "uri"))
    var uri: String?

    @Option(help: ArgumentHelp("Backup id (default: the newest).", valueName: "id"))
    var backup: String?

    @Option(help: ArgumentHelp("Point in time: an ISO 8601 time (2026-11-22T17:12:00Z, the whole second included), a cluster time T:I, or a resume token.", valueName: "time"))
    var at: String?

    @Option(help: ArgumentHelp("Only restore namespaces matching db.coll or db.* (repeatable).", valueName: "pattern"))
    var ns: [String] = []

    @Option(name: .customLong("ns-from"), help: ArgumentHelp("Rename: source pattern (db.coll or db.*).", valueName: "pattern"))
    var nsFrom: String?

    @Option(name: .customLong("ns-to"), help: ArgumentHelp("Rename: target pattern.", valueName: "pattern"))
    var nsTo: String?

    @Flag(help: "Drop target collections that exist before restoring them.")
    var drop = false

    @Option(help: ArgumentHelp("Parallel insert workers (default 4).", valueName: "n"))
    var workers: Int?

    @Option(name: .customLong("batch-size"), help: ArgumentHelp("Documents per bulk insert (default: one archive block, about 1 MiB).", valueName: "n"))
    var batchSize: Int?

    @OptionGroup var keys: KeyOptions

    @Flag(name: .customLong("keep-encrypted"), help: "Load protected fields as ciphertext: the target never sees plaintext. Drivers with the same key vault and master key can read them.")
    var keepEncrypted = false

    @Option(help: ArgumentHelp("Re-key while restoring: a pipeline file whose encryption: section gives the target rules, key vault and master key (local or KMIP). Values are decrypted with the source keys and encrypted again under new data keys of the target vault, so the target holds ciphertext the source keys cannot open. Rules match the archive's (source) namespaces.", valueName: "file"))
    var rekey: String?

    @Flag(help: "Fail on the first value that cannot be decrypted (missing key, failed authentication) instead of keeping it encrypted and counting it.")
    var strict = false

    func validate() throws {
        if (nsFrom == nil) != (nsTo == nil) { throw ValidationError("--ns-from and --ns-to go together") }
        if let w = workers, w < 1 { throw ValidationError("--workers must be at least 1") }
        if let b = batchSize, b < 1 { throw ValidationError("--batch-size must be at least 1") }
        if rekey != nil && keepEncrypted { throw ValidationError("--rekey and --keep-encrypted exclude each other") }
        if at != nil && backup != nil { throw ValidationError("--at picks its own base snapshot: give --at or --backup, not both") }
    }

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            let settings = file.resolve(uri: uri, namespaces: [], repo: repo, level: nil)
            guard let uri = uri ?? file.restore?.uri ?? settings.uri else { throw ValidationError("no target: give --uri") }
            guard let repo = settings.repo else { throw ValidationError("no repository: give --repo or archive.repo in the pipeline file") }
            var options = RestoreOptions(connection: ConnectionString(uri), repository: repo)
            options.backupID = backup
            options.pointInTime = at
            options.batchSize = batchSize ?? file.restore?.batchSize
            options.include = try ns.map(NamespacePattern.init)
            if let nsFrom, let nsTo { options.mapping = try NamespaceMapping(from: nsFrom, to: nsTo) }
            options.drop = drop
            options.workers = workers ?? file.restore?.workers ?? 4
            options.strict = strict
            var poller: KMIPStatePoller?
            var watch: ErasureWatch?
            defer {
                poller?.cancel()
                watch?.stop()
            }
            let erasure = try keys.erasure(common, rules: file.encryption?.protectionRules() ?? [])
            if let rekey {
                let (reprotector, p) = try makeReprotector(source: try keys.settings(common), targetFile: try PipelineFile.load(path: rekey),
                                                           targetPath: rekey, common: common, sourceErasure: erasure?.1)
                options.reprotector = reprotector
                poller = p
                if let erasure { watch = ErasureWatch(erased: erasure.0, engine: reprotector.source.engine, logger: common.makeLogger("erasure")) }
            } else if !keepEncrypted, let keySettings = try KeySettings.resolve(file.encryption, keyVault: keys.keyVault, masterKeyFile: keys.masterKeyFile, kmip: keys.kmip.section) {
                let decryptor = LenientDecryptor(engine: try keySettings.openEngine(), erasure: erasure?.1)
                options.decryptor = decryptor
                // A subject erased while the restore runs: its key stops opening values within a second.
                if let erasure { watch = ErasureWatch(erased: erasure.0, engine: decryptor.engine, logger: common.makeLogger("erasure")) }
            }
            watch?.start()
            let progress = ProgressLine("restore", unit: .documents, enabled: !common.json)
            options.progress = { p in
                progress.update(done: p.documents, total: p.expectedDocuments)
            }
            let summary = try RestoreRunner(options, logger: common.makeLogger("restore")).run()
            progress.finish()
            if common.json {
                try printJSON(summary)
            } else {
                print("restored backup \(summary.backup): \(summary.documents) documents, \(summary.eventsApplied) events replayed"
                      + (summary.eventsSuperseded > 0 ? " (\(summary.eventsSuperseded) superseded)" : "") + ", "
                      + (summary.changeSegments > 0 ? "\(summary.changeSegments) change segments, " : "")
                      + "\(summary.indexes) indexes, consistent at cluster time \(summary.consistentClusterTime)")
                for (from, to) in summary.namespaces.sorted(by: { $0.key < $1.key }) {
                    var notes: [String] = []
                    if let n = summary.erased[to] { notes.append("\(n) values of erased subjects unreadable") }
                    if let n = summary.undecryptable[to] { notes.append("\(n) values left encrypted") }
                    print("  \(from) -> \(to)" + (notes.isEmpty ? "" : "  (" + notes.joined(separator: "; ") + ")"))
                }
                if summary.rekeyed { print("protected fields were encrypted again under the keys of \(rekey ?? "")") }
                if !summary.decrypted { print("protected fields were loaded as ciphertext (--keep-encrypted, or no key vault given)") }
                for line in summary.undecryptableDetail { print("  cannot decrypt: \(line)") }
            }
        }
    }
}
