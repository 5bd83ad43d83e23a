import Archive
import ArgumentParser
import Dispatch
import Foundation
import Mongo
import Pipeline
import Replication

struct ReplicateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replicate",
        abstract: "Apply the repository's encrypted change log to a second MongoDB replica set, as it grows.",
        discussion: """
        Encrypted replication: the target receives the change events exactly as `ciphertail \
        tail` captured them, so protected fields stay ciphertext there. It needs no keys and \
        never decrypts; readers of the target need the same key vault and master key (copy the \
        keys with `ciphertail keys export`, or point them at the same vault). The key vault \
        collection itself is never replicated.

        On first start the target is seeded from the newest base snapshot inside the change log \
        (the followed namespaces of the target must be empty; exit 4 otherwise), then every \
        committed change-log entry after the snapshot is applied in order, and a checkpoint \
        (replication.checkpointNamespace, default ciphertail.replication; _id the pipeline's name:, \
        else its file name) \
        is written with w:majority, j:true after each. A restart of either side continues from \
        the checkpoint; an entry cut short by a crash is applied again, which leaves the same \
        state (inserts and replaces upsert whole documents, updates set final values).

        Replication cannot cross a gap in the change log (history lost from the oplog, an \
        oversized event, a new tailer line): it alerts, waits for the first base snapshot after \
        the gap, then drops and reloads the followed namespaces of the target. While the target \
        is down or has no primary, applying is retried with backoff (up to 30 s), with an alert \
        on the first failure and every 10th; nothing is lost, the lag grows.

        Runs until SIGINT or SIGTERM (after the entry at hand, exit 0), or with --until until \
        everything up to that time is applied. The pipeline file gives archive.repo and the \
        replication: section (uri, checkpointNamespace, batchSize); flags win.

        Examples:
          ciphertail replicate --pipeline pipelines/replica.yaml
          ciphertail replicate --pipeline p.yaml --target-uri 'mongodb://dr1,dr2/?replicaSet=dr'
          ciphertail replicate --pipeline p.yaml --until 2026-11-22T17:12:00Z --json
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder (default: archive.repo of the pipeline file).", valueName: "dir"))
    var repo: String?

    @Option(name: .customLong("target-uri"), help: ArgumentHelp("Connection string of the target replica set (default: replication.uri).", valueName: "uri"))
    var targetURI: String?

    @Option(help: ArgumentHelp("Exit once everything up to this time is applied (ISO 8601, T:I or a resume token).", valueName: "time"))
    var until: String?

    @Option(name: .customLong("poll-interval"), help: ArgumentHelp("Seconds between looks at the change log while caught up (default 0.25).", valueName: "seconds"))
    var pollInterval: Double?

    func validate() throws {
        if let p = pollInterval, !(p >= 0.01 && p <= 60) { throw ValidationError("--poll-interval must be 0.01 to 60 seconds") }
    }

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            guard let repo = repo ?? file.archive?.repo else { throw ValidationError("no repository: give --repo or archive.repo in the pipeline file") }
            guard let target = targetURI ?? file.replication?.uri else { throw ValidationError("no target: give --target-uri or replication.uri in the pipeline file") }
            var options = try makeReplicationOptions(file, pipelinePath: common.pipeline, repo: repo, target: target)
            if let p = pollInterval { options.pollInterval = p }
            options.until = try until.map(PointInTimeTarget.parse)
            let stop = StopFlag.onSIGINTAndSIGTERM()
            defer { stop.cancel() }
            options.shouldStop = { stop.isSet }
            let logger = common.makeLogger("replicate")
            options.onAlert = { kind, message in logger.warning("ALERT \(kind.rawValue): \(message)") }
            let progress = ProgressLine(enabled: !common.json)
            var events: Int64 = 0
            options.onApplied = { entry, lag in
                events += entry.events ?? 0
                progress.update("replicate: entry \(entry.sequence), applied to \(entry.to), lag \(String(format: "%.1f", lag)) s", done: nil, total: nil)
            }
            let summary = try Replicator(options, logger: logger).run()
            progress.finish()
            if common.json {
                try printJSON(summary)
            } else {
                print("replicate stopped: \(summary.entries) entries, \(summary.eventsApplied) events applied"
                      + (summary.appliedTo.map { ", applied to \($0)" } ?? "")
                      + (summary.seededFrom.map { ", seeded from \($0)" } ?? "")
                      + (summary.gaps > 0 ? ", \(summary.gaps) gaps" : "")
                      + (summary.retries > 0 ? ", \(summary.retries) retried failures" : ""))
            }
        }
    }
}

/// The replication settings of a pipeline (`replicate` and `run`): the checkpoint's place and
/// name, the batch size, and the key vault collection left out of the target.
func makeReplicationOptions(_ file: PipelineFile, pipelinePath: String?, repo: String, target: String) throws -> ReplicationOptions {
    if let source = file.source?.uri, source == target { throw ValidationError("the target is the source cluster (\(ConnectionString(target).hosts))") }
    var options = ReplicationOptions(repository: repo, target: ConnectionString(target))
    if let ns = file.replication?.checkpointNamespace {
        guard let parsed = Namespace(ns) else { throw ValidationError("replication.checkpointNamespace '\(ns)' is not db.collection") }
        options.checkpointNamespace = parsed
    }
    options.pipelineName = file.name ?? pipelinePath.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension } ?? "default"
    options.batchSize = file.replication?.batchSize
    // The key vault collection is never captured; never write it in the target either.
    if let vault = (try? KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil))??.excludedNamespace {
        options.excludedNamespaces.insert(vault)
    }
    return options
}
