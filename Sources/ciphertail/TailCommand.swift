import Archive
import ArgumentParser
import Capture
import Dispatch
import FieldCrypto
import Foundation
import Mongo
import Pipeline

struct TailCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Follow the change stream into the repository's change log, for point-in-time restore.",
        discussion: """
        Follows a change stream (one collection, one database or the whole cluster, whichever \
        is the narrowest that holds the --ns patterns) with full documents and, where a \
        collection has them enabled, pre-images. Protected fields are encrypted as in backup. \
        Events go into change segments that close by size or age; a segment and then its entry \
        are made durable before the resume point moves, so a crash loses nothing and the next \
        run continues right after the last entry. On first start (and after a gap) it takes a \
        base snapshot, which is what `restore --at` starts from.

        An invalidate (drop, rename, dropDatabase of the followed scope) is recorded and the \
        stream continues one scope wider. When the server cannot resume the stream (history \
        lost from the oplog, codes 286, 260, 280) the lost stretch is recorded as a gap, an \
        alert is logged, and a fresh base snapshot is taken. Network errors and step-downs are \
        retried with backoff from the last token. If the encryption keys become unavailable, \
        capture pauses: nothing is ever written in clear.

        Runs until SIGINT or SIGTERM (it commits the open segment, then exits 0), or with \
        --until until the log is durable up to that time. A new log starts now, or with \
        --start-at at an earlier cluster time whose history the oplog still holds.

        Examples:
          ciphertail tail --pipeline pipelines/continuous-backup.yaml
          ciphertail tail --uri 'mongodb://127.0.0.1:27017/?replicaSet=rs0' --repo /srv/ct --ns 'shop.*'
          ciphertail tail --pipeline pipelines/continuous-backup.yaml --until 1795367540:3 --json
        """)

    @OptionGroup var common: CommonOptions

    @OptionGroup var source: SourceOptions

    @Option(name: .customLong("segment-max-size"), help: ArgumentHelp("Close a change segment at this much event data (default 64MiB).", valueName: "size"))
    var segmentMaxSize: String?

    @Option(name: .customLong("segment-max-age"), help: ArgumentHelp("Close a change segment this many seconds after its first event (default 1): how far the durable log may trail the cluster.", valueName: "seconds"))
    var segmentMaxAge: Double?

    @Option(name: .customLong("idle-checkpoint"), help: ArgumentHelp("While idle, an empty segment every this many seconds moves the covered time forward (default 60).", valueName: "seconds"))
    var idleCheckpoint: Double?

    @Option(name: .customLong("on-large-event"), help: ArgumentHelp("An event over 16 MB: stop (default) or gap (record a gap, skip it, take a new base snapshot).", valueName: "policy"))
    var onLargeEvent: String?

    @Flag(name: .customLong("no-base-snapshot"), help: "Never take base snapshots (scheduled backups provide them).")
    var noBaseSnapshot = false

    @Option(help: ArgumentHelp("Exit once the log is durable up to this time (ISO 8601, T:I or a resume token) and any base snapshot is done.", valueName: "time"))
    var until: String?

    @Option(name: .customLong("start-at"), help: ArgumentHelp("Start a new change log at this cluster time (T:I, ISO 8601 or a resume token) instead of now, to take in history still in the oplog. Refused (exit 4) when the repository already has a change log.", valueName: "time"))
    var startAt: String?

    @OptionGroup var keys: KeyOptions

    func validate() throws {
        if let p = onLargeEvent, LargeEventPolicy(rawValue: p) == nil { throw ValidationError("--on-large-event is stop or gap") }
        if let a = segmentMaxAge, !(a >= 0.05) { throw ValidationError("--segment-max-age must be at least 0.05 seconds") }
        if let s = segmentMaxSize, PipelineFile.parseSize(s) == nil { throw ValidationError("--segment-max-size: '\(s)' is not a size such as 16MiB") }
    }

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            let (settings, uri, repo) = try source.resolve(file)
            let stage = try CaptureKeys(file, keys: keys, common: common)
            defer { stage.stop() }
            var options = try makeTailOptions(file, settings: settings, uri: uri, repo: repo, stage: stage,
                                              segmentMaxSize: segmentMaxSize, segmentMaxAge: segmentMaxAge, idleCheckpoint: idleCheckpoint,
                                              onLargeEvent: onLargeEvent, noBaseSnapshot: noBaseSnapshot)
            options.until = try until.map(PointInTimeTarget.parse)
            options.startAt = try startAt.map { text in
                // An ISO time names a whole second; a start is at its beginning, not its end.
                let t = try PointInTimeTarget.parse(text)
                let isoTime = t.i == .max && ClusterTime(string: text.trimmingCharacters(in: .whitespaces)) == nil
                return isoTime ? ClusterTime(t: t.t, i: 0) : t
            }
            let stop = StopFlag.onSIGINTAndSIGTERM()
            defer { stop.cancel() }
            options.shouldStop = { stop.isSet }
            let logger = common.makeLogger("tail")
            options.onAlert = { alert in logger.warning("ALERT \(alert.kind.rawValue): \(alert.message)") }
            let progress = ProgressLine(enabled: !common.json)
            var events: Int64 = 0
            options.onCommit = { entry, _ in
                events += entry.events ?? 0
                progress.update("tail: \(events) events, durable to \(entry.to)", done: nil, total: nil)
            }
            var summary = try Tailer(options, logger: logger).run()
            summary.encryptedValues = options.protector?.encryptedValues
            summary.keysCreated = options.protector?.keysCreated
            progress.finish()
            if common.json {
                try printJSON(summary)
            } else {
                print("tail stopped: \(summary.events) events in \(summary.segments) segments, \(summary.gaps) gaps"
                      + (summary.coveredTo.map { ", durable to \($0)" } ?? "")
                      + (summary.snapshots.isEmpty ? "" : ", base snapshots \(summary.snapshots.joined(separator: ", "))"))
            }
        }
    }
}

/// The tailer's settings: flags over the pipeline file's `tail` section over defaults, with
/// the encryption stage's protector and exclusions (`tail` and `run`).
func makeTailOptions(_ file: PipelineFile, settings: ResolvedSettings, uri: String, repo: String, stage: CaptureKeys,
                     segmentMaxSize: String? = nil, segmentMaxAge: Double? = nil, idleCheckpoint: Double? = nil,
                     onLargeEvent: String? = nil, noBaseSnapshot: Bool = false) throws -> TailOptions {
    var options = TailOptions(connection: ConnectionString(uri), repository: repo)
    options.namespaces = try settings.namespaces.map(NamespacePattern.init)
    options.compressionLevel = Int32(settings.compressionLevel)
    options.segmentBytes = (segmentMaxSize ?? file.tail?.segmentMaxSize).flatMap(PipelineFile.parseSize) ?? (64 << 20)
    options.segmentSeconds = segmentMaxAge ?? file.tail?.segmentMaxAgeSeconds ?? 1
    options.idleSeconds = idleCheckpoint ?? file.tail?.idleCheckpointSeconds ?? 60
    options.onLargeEvent = LargeEventPolicy(rawValue: onLargeEvent ?? file.tail?.onLargeEvent ?? "stop") ?? .stop
    options.baseSnapshots = !noBaseSnapshot && (file.tail?.baseSnapshot ?? true)
    options.snapshotSettings = { $0.useArchiveSettings(settings) }
    options.excludedNamespaces.formUnion(stage.excluded)
    options.protector = stage.protector
    return options
}

/// Set from a signal handler's queue, read by the tailer between events.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    private var sources: [DispatchSourceSignal] = []
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }

    /// Set by SIGINT or SIGTERM (which no longer end the process) until `cancel`.
    static func onSIGINTAndSIGTERM() -> StopFlag {
        let stop = StopFlag()
        stop.sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.set() }
            source.resume()
            return source
        }
        return stop
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
