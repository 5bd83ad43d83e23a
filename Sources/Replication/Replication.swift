import Archive
import BSON
import Digest
import Durable
import Foundation
import Logging
import Mongo
import Restore

// Encrypted replication: see docs/ARCHITECTURE.md, "Replication".

public struct ReplicationOptions {
    /// The repository whose change log is applied (read only; never locked or written).
    public var repository: String
    /// The target replica set.
    public var target: ConnectionString
    /// Where the checkpoint lives in the target.
    public var checkpointNamespace = Namespace(database: "ciphertail", collection: "replication")
    /// The checkpoint's `_id`: one target can follow several pipelines.
    public var pipelineName = "default"
    /// Documents per bulk insert while seeding (default: one archive block).
    public var batchSize: Int?
    /// Parallel insert workers while seeding.
    public var workers = 4
    /// How often the change log is looked at for a new entry while caught up.
    public var pollInterval: Double = 0.25
    /// Retries of a failing target back off from 0.25 s, doubling, up to this.
    public var maxBackoffSeconds: Double = 30
    /// Never written in the target (the key vault collection when the keys live in MongoDB).
    /// Collections named `__keyVault`, the checkpoint namespace and admin, config and local
    /// are never written either.
    public var excludedNamespaces: Set<Namespace> = []
    /// Polled between entries and while waiting: true ends the run (after the entry at hand).
    public var shouldStop: @Sendable () -> Bool = { false }
    /// Return once everything up to this cluster time is applied.
    public var until: ClusterTime?
    /// After each entry applied and checkpointed: the entry and the lag in seconds.
    public var onApplied: ((ChangeEntry, Double) -> Void)?
    /// Gaps, reseeds, waiting for a snapshot, a failing target: what an operator must hear about.
    public var onAlert: ((ReplicationAlertKind, String) -> Void)?

    public init(repository: String, target: ConnectionString) {
        self.repository = repository
        self.target = target
    }
}

public enum ReplicationAlertKind: String, Sendable, Codable {
    /// The change log breaks (a gap entry, a new tailer line, a damaged or missing entry): the
    /// target is reseeded from the first base snapshot after the break.
    case gap
    /// No base snapshot inside the change log to seed from yet.
    case waitingForSnapshot
    /// The target failed (down, not primary, network); retried with backoff.
    case retrying
}

public struct ReplicationSummary: Codable, Sendable {
    /// Change-log entries applied by this run.
    public var entries: Int64 = 0
    public var eventsApplied: Int64 = 0
    /// The last base snapshot this run seeded the target from (nil: it resumed from a checkpoint).
    public var seededFrom: String?
    public var seeds: Int = 0
    /// Every change up to this cluster time is in the target (`T:I`).
    public var appliedTo: String?
    public var lastSequence: Int64 = 0
    public var lagSecondsP50: Double?
    public var lagSecondsP99: Double?
    public var gaps: Int = 0
    /// Failed attempts against the target that were retried.
    public var retries: Int = 0
    public var alerts: Int = 0
    public var seconds: Double = 0
}

/// Where a running replicator stands, for health checks and metrics (thread-safe).
public struct ReplicationStatus: Sendable {
    public var sequence: Int64
    public var appliedTo: ClusterTime?
    public var lagSeconds: Double
    /// The target has failed since the last success.
    public var failing: Bool
}

/// Applies a repository's change log, as captured (protected fields stay ciphertext), to a
/// second replica set: seeds it from a base snapshot, then applies each committed entry in
/// order with the restore's `EventApplier` and checkpoints it in the target. Needs no keys.
public final class Replicator {
    let options: ReplicationOptions
    let logger: Logger
    private var repo: Repository!
    private var log: ChangeLog!
    private var repositoryID = ""
    private var pool: ClientPool!
    private var store: CheckpointStore
    private var summary = ReplicationSummary()
    private var lags: [Double] = []
    private let statusLock = NSLock()
    private var current = ReplicationStatus(sequence: 0, appliedTo: nil, lagSeconds: 0, failing: false)
    private var nextEntryPath: String?

    public init(_ options: ReplicationOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        store = CheckpointStore(namespace: options.checkpointNamespace, id: options.pipelineName)
    }

    /// The current position and lag (the lag keeps growing while the target is down).
    public func status() -> ReplicationStatus {
        statusLock.lock()
        var s = current
        let next = nextEntryPath
        statusLock.unlock()
        if let t = s.appliedTo, let next, FileManager.default.fileExists(atPath: next) {
            s.lagSeconds = max(0, Date().timeIntervalSince1970 - Double(t.t))
        }
        return s
    }

    /// Lag: 0 when every committed entry of the log is applied; otherwise the seconds from now
    /// back to the source cluster time up to which the target is complete (`appliedTo`).
    func lag(sequence: Int64, appliedTo: ClusterTime?) -> Double {
        guard let t = appliedTo, FileManager.default.fileExists(atPath: log.entryPath(sequence + 1)) else { return 0 }
        return max(0, Date().timeIntervalSince1970 - Double(t.t))
    }

    private func publish(_ cp: ReplicationCheckpoint, failing: Bool) {
        statusLock.lock()
        current.sequence = cp.sequence
        current.appliedTo = cp.appliedTo
        current.failing = failing
        nextEntryPath = log.entryPath(cp.sequence + 1)
        statusLock.unlock()
    }

    private func setFailing(_ f: Bool) { statusLock.lock(); current.failing = f; statusLock.unlock() }

    private var stopRequested: Bool { options.shouldStop() }

    private func alert(_ kind: ReplicationAlertKind, _ message: String) {
        summary.alerts += 1
        logger.warning("\(message)", metadata: ["alert": "\(kind.rawValue)"])
        options.onAlert?(kind, message)
    }

    public func run() throws -> ReplicationSummary {
        let started = Date()
        repo = try Repository(path: options.repository)
        log = ChangeLog(repository: repo)
        repositoryID = try Replicator.repositoryID(repo)
        pool = try ClientPool(options.target, appName: "ciphertail-replicate")
        self.started = started
        guard var cp = try retrying("reading the checkpoint", { try pool.withClient { try store.load($0) } }) else { return finish(nil) }
        if let c = cp, c.repositoryID != repositoryID {
            throw ReplicationError.otherRepository(target: options.target.hosts, checkpoint: c.repositoryID, repository: repositoryID)
        }
        if cp == nil || cp!.phase == .seeding {
            guard let seeded = try seed(previous: cp, after: nil) else { return finish(cp) }
            cp = seeded
        } else {
            logger.notice("resuming replication", metadata: ["after": "\(cp!.sequence)", "appliedTo": "\(cp!.appliedTo?.description ?? "-")"])
        }
        var state = cp!
        saved = state
        publish(state, failing: false)
        while !stopRequested {
            if let until = options.until, let at = state.appliedTo, at >= until { break }
            let next = state.sequence + 1
            switch readEntry(next) {
            case .missing:
                // The log has nothing newer. An entry after a missing one is damage, not a wait.
                if FileManager.default.fileExists(atPath: log.entryPath(next + 1)) {
                    guard let s = try breakAndReseed(state, at: next, why: "entry \(ChangeLog.entryName(next)) is missing") else { return finish(state) }
                    state = s
                } else {
                    sleepUnlessStopped(options.pollInterval)
                }
            case .unreadable(let error):
                guard let s = try breakAndReseed(state, at: next, why: "entry \(next) does not load: \(error)") else { return finish(state) }
                state = s
            case .entry(let entry, let hash):
                if let why = discontinuity(entry, hash: hash, after: state) {
                    guard let s = try breakAndReseed(state, at: next, why: why) else { return finish(state) }
                    state = s
                    continue
                }
                guard let s = try retrying("applying entry \(entry.sequence)", { try apply(entry, hash: hash) }) else { return finish(state) }
                state = s
                publish(state, failing: false)
                let lagNow = lag(sequence: state.sequence, appliedTo: state.appliedTo)
                if lags.count < 1_000_000 { lags.append(lagNow) }
                summary.entries += 1
                options.onApplied?(entry, lagNow)
            }
        }
        return finish(state)
    }

    private var started = Date()

    private func finish(_ cp: ReplicationCheckpoint?) -> ReplicationSummary {
        summary.seconds = Date().timeIntervalSince(started)
        summary.appliedTo = cp?.appliedTo?.description
        summary.lastSequence = cp?.sequence ?? 0
        if !lags.isEmpty {
            let sorted = lags.sorted()
            func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))] }
            summary.lagSecondsP50 = pct(0.5)
            summary.lagSecondsP99 = pct(0.99)
        }
        return summary
    }

    static func repositoryID(_ repo: Repository) throws -> String {
        let path = (repo.path as NSString).appendingPathComponent(Repository.configName)
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try d.decode(Repository.Config.self, from: Data(try Durable.readFile(path))).id
    }

    // MARK: The change log

    enum Read {
        case missing
        case unreadable(Error)
        case entry(ChangeEntry, String)
    }

    /// A committed entry: its `.json` exists (its segment was durable before it was written).
    func readEntry(_ sequence: Int64) -> Read {
        let path = log.entryPath(sequence)
        guard FileManager.default.fileExists(atPath: path) else { return .missing }
        do {
            let bytes = try Durable.readFile(path)
            let e = try ChangeEntry.decode(bytes, path: path)
            guard e.sequence == sequence else { throw ArchiveError.badManifest(path: path, reason: "sequence \(e.sequence) in file \(sequence)") }
            return .entry(e, SHA256.hash(bytes).hexString)
        } catch {
            return .unreadable(error)
        }
    }

    /// Why `entry` does not continue the stretch the target follows, or nil when it does (the
    /// same rules as the log's coverage: FORMAT.md, "Coverage").
    func discontinuity(_ entry: ChangeEntry, hash: String, after cp: ReplicationCheckpoint) -> String? {
        if entry.kind == .gap {
            return "gap from \(entry.from) to \(entry.to): \(entry.reason ?? "history not captured")" + (entry.code.map { " (code \($0))" } ?? "")
        }
        if let h = cp.entryHash, entry.previous != h { return "entry \(entry.sequence): previous-entry hash does not match" }
        if entry.lineage != cp.lineage { return "entry \(entry.sequence): a new tailer line starts" }
        if entry.namespaces != (cp.namespaces ?? []) { return "entry \(entry.sequence): the followed namespaces changed" }
        if let at = cp.appliedTo, entry.from > at.successor { return "entry \(entry.sequence) starts at \(entry.from), after \(at)" }
        if !FileManager.default.fileExists(atPath: log.segmentPath(entry)) { return "segment \(ChangeLog.segmentName(entry.sequence)) is missing" }
        return nil
    }

    /// The namespaces written in the target: followed by the log, and none of the excluded.
    func replicated(_ patterns: [NamespacePattern]) -> (Namespace) -> Bool {
        let excluded = options.excludedNamespaces.union([options.checkpointNamespace])
        return { ns in
            !["admin", "config", "local"].contains(ns.database) && ns.collection != "__keyVault"
                && !(ns.collection.hasPrefix("system.") && ns.collection != "system.js")  // as backups: system.js only
                && !excluded.contains(ns) && patterns.matches(ns)
        }
    }

    // MARK: Applying an entry

    /// Applies the entry's events (those after the seed point), then writes the checkpoint. A
    /// failure anywhere leaves the old checkpoint, and the retry applies the whole entry again:
    /// the applier sets final values, so applying an event twice leaves the same state. A
    /// rename is the exception (applied again, it would move a collection rebuilt from the
    /// entry's earlier events over the renamed one), so the checkpoint also records the events
    /// of the entry applied before and after each rename (`entryEvents`), and a rename whose
    /// source collection is gone from the target was applied already.
    func apply(_ entry: ChangeEntry, hash: String) throws -> ReplicationCheckpoint {
        let events = try readEvents(entry)
        let patterns = try entry.namespaces.map(NamespacePattern.init)
        let include = replicated(patterns)
        let cp = saved!
        let seededAt = cp.seededAt
        let done = cp.sequence + 1 == entry.sequence ? Int(cp.entryEvents) : 0
        var next = cp
        try pool.withClient { client in
            let applier = EventApplier(client: client, logger: logger) { include($0) ? $0 : nil }
            for (index, event) in events.enumerated() where index >= done {
                // The snapshot holds everything up to its consistent point, as restore --at skips.
                if let at = seededAt, let ts = event["clusterTime"]?.timestampValue, ts <= at { continue }
                if event["operationType"]?.stringValue == "rename" {
                    try applier.flush()
                    var before = cp
                    before.entryEvents = Int64(index)
                    try save(before, client)
                    if let ns = Namespace(changeEvent: event), include(ns),
                       try client.database(ns.database).listCollections(filter: ["name": .string(ns.collection)]).isEmpty {
                        logger.info("rename already applied", metadata: ["entry": "\(entry.sequence)", "namespace": "\(ns)"])
                    } else {
                        try applier.apply(event)
                    }
                    before.entryEvents = Int64(index + 1)
                    try save(before, client)
                    continue
                }
                try applier.apply(event)
            }
            try applier.flush()
            next.phase = .following
            next.sequence = entry.sequence
            next.entryEvents = 0
            next.entryHash = hash
            next.appliedTo = max(cp.appliedTo ?? entry.to, entry.to)
            next.entriesApplied += 1
            next.eventsApplied += applier.applied
            try save(next, client)
            summary.eventsApplied += applier.applied
        }
        return next
    }

    /// The last checkpoint written (or read) in the target.
    private var saved: ReplicationCheckpoint?

    private func save(_ cp: ReplicationCheckpoint, _ client: Client) throws {
        try store.save(cp, client)
        saved = cp
    }

    /// The segment's events, read whole and checked against the entry's hash before any is applied.
    func readEvents(_ entry: ChangeEntry) throws -> [Document] {
        let path = log.segmentPath(entry)
        guard let info = entry.segment else { throw ArchiveError.missingSegment(path) }
        let reader = try SegmentReader(path: path)
        var events: [Document] = []
        while let block = try reader.nextBlock() {
            block.forEachRecord { raw in events.append(Document(trusted: Array(raw))) }
        }
        guard reader.fileHash.finalize().hexString == info.sha256 else {
            throw ArchiveError.damaged(segment: path, offset: 0, reason: "file hash differs from its change log entry")
        }
        return events
    }

    // MARK: Seeding

    private func breakAndReseed(_ cp: ReplicationCheckpoint, at sequence: Int64, why: String) throws -> ReplicationCheckpoint? {
        summary.gaps += 1
        alert(.gap, "the change log breaks after entry \(cp.sequence) (\(why)); replication cannot cross it: the followed namespaces of the target will be dropped and reloaded from the first base snapshot after the break")
        return try seed(previous: cp, after: sequence)
    }

    /// A base snapshot to seed from: its consistent point T1 lies in an unbroken stretch of the
    /// log (or right before its start) that reaches T1. Without `after`, the newest; after a
    /// break at entry `after`, the first one of a stretch starting at or after that entry.
    func snapshot(after: Int64?) -> (Manifest, Coverage, [(entry: ChangeEntry, hash: String)])? {
        let loaded = log.load()
        let intervals = log.coverage(of: loaded).intervals
        var found: [(Manifest, Coverage)] = []
        for m in repo.listBackups().manifests {
            let t1 = m.clusterTime.end
            let reaching = intervals.filter { c in c.from <= t1.successor && c.to >= t1 && (after.map { c.firstSequence >= $0 } ?? true) }
            if let c = reaching.max(by: { $0.to < $1.to }) { found.append((m, c)) }
        }
        let pick = after == nil ? found.max { $0.0.clusterTime.end < $1.0.clusterTime.end }
            : found.min { $0.0.clusterTime.end < $1.0.clusterTime.end }
        return pick.map { ($0.0, $0.1, loaded.entries) }
    }

    /// Seeds the target from a base snapshot (loaded as it is: ciphertext stays ciphertext) and
    /// returns the checkpoint after it; nil when stopped first. `previous` nil: a first seed,
    /// refused when the followed namespaces of the target hold data.
    func seed(previous: ReplicationCheckpoint?, after: Int64?) throws -> ReplicationCheckpoint? {
        var waiting = false
        var choice: (Manifest, Coverage, [(entry: ChangeEntry, hash: String)])?
        while choice == nil {
            if stopRequested { return nil }
            choice = snapshot(after: after)
            if choice == nil {
                if !waiting {
                    alert(.waitingForSnapshot, after == nil
                        ? "no base snapshot lies inside the change log yet: waiting for one (ciphertail tail takes one on its first start)"
                        : "waiting for the first base snapshot after the break at entry \(after!) (the tailer takes one after a gap)")
                    waiting = true
                }
                sleepUnlessStopped(max(options.pollInterval, 1))
            }
        }
        let (manifest, stretch, entries) = choice!
        let t1 = manifest.clusterTime.end
        let patterns = try stretch.namespaces.map(NamespacePattern.init)
        let include = replicated(patterns)
        // The first entry with events after T1; the checkpoint says the one before is done.
        let inStretch = entries.filter { $0.entry.sequence >= stretch.firstSequence && $0.entry.sequence <= stretch.lastSequence }
        let first = inStretch.first { $0.entry.to > t1 }?.entry.sequence ?? stretch.lastSequence + 1
        let before = inStretch.first { $0.entry.sequence == first - 1 }

        var seeding = ReplicationCheckpoint(id: options.pipelineName, repositoryID: repositoryID, phase: .seeding)
        seeding.seededFrom = manifest.id
        seeding.seededAt = t1
        seeding.lineage = stretch.lineage
        seeding.namespaces = stretch.namespaces
        seeding.sequence = first - 1
        seeding.entryHash = before?.hash
        seeding.appliedTo = t1
        seeding.entriesApplied = previous?.entriesApplied ?? 0
        seeding.eventsApplied = previous?.eventsApplied ?? 0
        logger.notice("seeding the target", metadata: ["backup": "\(manifest.id)", "consistentClusterTime": "\(t1)",
                                                       "namespaces": "\(stretch.namespaces)"])
        var owned = previous != nil
        let done: Void? = try retrying("seeding from base snapshot \(manifest.id)") {
            try pool.withClient { client in
                if !owned {
                    let busy = try targetCollections(client, include).filter { ns, info in
                        if info["type"]?.stringValue == "view" { return true }
                        return try client.collection(ns).find(Document(), options: ["limit": 1, "projection": ["_id": 1]]).next() != nil
                    }
                    if !busy.isEmpty { throw RestoreError.targetNotEmpty(busy.map(\.0.description).sorted()) }
                }
                // From here a restart knows to drop what a seed left half loaded.
                try save(seeding, client)
                owned = true
                for (ns, _) in try targetCollections(client, include) { try client.collection(ns).drop() }
            }
            var o = RestoreOptions(connection: options.target, repository: options.repository)
            o.backupID = manifest.id
            o.include = patterns
            o.drop = true
            o.batchSize = options.batchSize
            o.workers = options.workers
            let restored = try RestoreRunner(o, logger: logger).run()
            logger.notice("target seeded", metadata: ["backup": "\(manifest.id)", "documents": "\(restored.documents)",
                                                      "events": "\(restored.eventsApplied)", "indexes": "\(restored.indexes)"])
            var following = seeding
            following.phase = .following
            try pool.withClient { try save(following, $0) }
        }
        guard done != nil else { return nil }
        summary.seeds += 1
        summary.seededFrom = manifest.id
        var cp = seeding
        cp.phase = .following
        return cp
    }

    /// The target's collections and views that replication writes (their listCollections entries).
    func targetCollections(_ client: Client, _ include: (Namespace) -> Bool) throws -> [(Namespace, Document)] {
        var out: [(Namespace, Document)] = []
        for db in try client.databaseNames() where !["admin", "config", "local"].contains(db) {
            for info in try client.database(db).listCollections() {
                guard let name = info["name"]?.stringValue else { continue }
                let ns = Namespace(database: db, collection: name)
                if include(ns) { out.append((ns, info)) }
            }
        }
        return out
    }

    // MARK: Retrying

    /// Server errors that say the target is (re)starting, stepping down, has no primary, or
    /// did not answer in time: NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
    /// InterruptedDueToReplStateChange, InterruptedAtShutdown, PrimarySteppedDown,
    /// ShutdownInProgress, HostUnreachable, HostNotFound, NetworkTimeout, SocketException,
    /// WriteConcernFailed, ExceededTimeLimit, NetworkInterfaceExceededTimeLimit, LockTimeout,
    /// StaleConfig, NotYetInitialized.
    static let transientCodes: Set<UInt32> = [10107, 13435, 13436, 11602, 11600, 189, 91, 6, 7, 89, 9001, 64, 262, 202, 24, 13388, 94]

    /// Failures of the target that retrying can fix: the server down or restarting, no primary,
    /// a network error, a write concern not met in time. Not: a refused write or command (a
    /// write error, missing privileges, a missing namespace), or anything not about the target.
    static func retriable(_ error: Error) -> Bool {
        switch error {
        case let e as MongoError:
            if !e.writeErrors.isEmpty { return false }
            return e.isNetworkError || transientCodes.contains(e.code)
        case let e as RestoreError:
            switch e {
            case .unreachable, .failed: return true
            case .targetNotEmpty, .undecryptable: return false
            }
        default: return false
        }
    }

    /// Runs `body` until it succeeds, with backoff (0.25 s doubling up to `maxBackoffSeconds`);
    /// alerts on the first failure and every 10th. Nil when stopped while retrying.
    private func retrying<T>(_ what: String, _ body: () throws -> T) throws -> T? {
        var attempts = 0
        var backoff = 0.25
        while true {
            do {
                let r = try body()
                if attempts > 0 {
                    logger.notice("\(what): the target answers again after \(attempts) failed attempts")
                    setFailing(false)
                }
                return r
            } catch where Replicator.retriable(error) {
                attempts += 1
                summary.retries += 1
                setFailing(true)
                let message = "\(what) failed (attempt \(attempts)), retrying in \(String(format: "%.1f", backoff)) s: \(error)"
                if attempts == 1 || attempts % 10 == 0 { alert(.retrying, message) } else { logger.warning("\(message)") }
                sleepUnlessStopped(backoff)
                if stopRequested { return nil }
                backoff = min(options.maxBackoffSeconds, backoff * 2)
            }
        }
    }

    private func sleepUnlessStopped(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end && !stopRequested { usleep(useconds_t(min(50_000, max(1_000, end.timeIntervalSinceNow * 1_000_000)))) }
    }
}
