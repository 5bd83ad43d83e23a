import Archive
import BSON
import Durable
import FieldCrypto
import Foundation
import Logging
import Mongo

/// What the tailer does with an event the server cannot deliver (over 16 MB with its full
/// document; MongoDB 6.0 has no `$changeStreamSplitLargeEvent`).
public enum LargeEventPolicy: String, Sendable {
    /// Stop with an error naming the namespace and document key.
    case stop
    /// Record a gap at the event's cluster time, skip it, and take a fresh base snapshot.
    case gap
}

public struct TailOptions {
    public var connection: ConnectionString
    public var repository: String
    public var namespaces: [NamespacePattern] = []
    /// Never captured: the key vault collection when the keys live in MongoDB.
    public var excludedNamespaces: Set<Namespace> = []
    public var compressionLevel: Int32 = 3
    /// A segment closes at this much record data...
    public var segmentBytes = 64 << 20
    /// ...or this long after its first event arrived: the bound on how far the durable log
    /// trails the cluster while it is written to.
    public var segmentSeconds: Double = 1
    /// While nothing happens, an empty segment every this often moves the covered time forward.
    public var idleSeconds: Double = 60
    public var protector: DocumentProtector?
    public var onLargeEvent: LargeEventPolicy = .stop
    /// Take a base snapshot when the log has none to start from (first run, after a gap).
    public var baseSnapshots = true
    public var maxBackoffSeconds: Double = 30
    /// Stop once the log is durable up to this cluster time (and any base snapshot is done).
    public var until: ClusterTime?
    /// A new log starts at this cluster time (inclusive) instead of now, to capture history
    /// that is still in the oplog. Only for a repository without a change log: refused
    /// (`CaptureError.changeLogExists`) once the log has entries, which decide where it resumes.
    public var startAt: ClusterTime?
    /// Polled between events: true ends the run after the open segment is committed.
    public var shouldStop: @Sendable () -> Bool = { false }
    /// After each committed segment: the entry, and each event's lag in seconds from its
    /// `wallTime` on the server to the moment the segment was durable.
    public var onCommit: ((ChangeEntry, [Double]) -> Void)?
    /// Gaps, oversized events, failed snapshots, retries: things an operator must hear about.
    public var onAlert: ((TailAlert) -> Void)?
    /// Settings for the base snapshots (compression, segment sizes); namespaces, exclusions
    /// and the protector are the tailer's own.
    public var snapshotSettings: (inout BackupOptions) -> Void = { _ in }
    /// Each base snapshot's outcome (the run's scheduler prunes after a good one).
    public var onSnapshot: ((Result<Manifest, Error>) -> Void)?
    /// Asked right before anything is written to the log: false (the lease is gone) makes the
    /// run end with `CaptureError.leaseLost`, writing nothing more.
    public var canWrite: @Sendable () -> Bool = { true }
    /// Recorded in every entry written (`ChangeEntry.leaseTerm`).
    public var leaseTerm: Int64?
    /// While the disk is full, how often to try again.
    public var diskFullRetrySeconds: Double = 5

    public init(connection: ConnectionString, repository: String) {
        self.connection = connection
        self.repository = repository
    }
}

public struct TailAlert: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case gap, largeEvent, snapshotFailed, retrying, keysUnavailable, diskFull, diskSpaceBack }
    public var kind: Kind
    public var message: String
    public var description: String { "\(kind.rawValue): \(message)" }
}

public struct TailSummary: Codable, Sendable {
    public var segments: Int = 0
    public var events: Int64 = 0
    public var gaps: Int = 0
    public var snapshots: [String] = []
    public var resumedFrom: String?
    public var coveredTo: String?
    public var lagSecondsP50: Double?
    public var lagSecondsP99: Double?
    public var lagSecondsMax: Double?
    public var seconds: Double = 0
    /// With encryption rules (set by the CLI from the protector): values encrypted, and data
    /// keys created on first use.
    public var encryptedValues: Int64?
    public var keysCreated: Int64?
}

/// Follows a change stream into the repository's change log (docs/FORMAT.md, "The change
/// log"). Events are encrypted by the protector, gathered into a change segment, and the
/// segment is committed (segment durable, then its entry) when it is full or old enough. The
/// entry holds the resume token, so the log itself is the checkpoint: a crash at any moment
/// leaves a log that ends at a committed entry, and the next run continues after it.
public final class Tailer {
    let options: TailOptions
    let logger: Logger

    public init(_ options: TailOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    enum Scope: Equatable {
        case cluster
        case database(String)
        case collection(Namespace)

        var name: String {
            switch self {
            case .cluster: "cluster"
            case .database: "database"
            case .collection: "collection"
            }
        }

        /// Where a stream goes after an invalidate (a drop, rename or dropDatabase).
        /// A change stream of this scope.
        func watch(_ client: Client, pipeline: [Document], options: Document) throws -> ChangeStream {
            switch self {
            case .cluster: try client.watch(pipeline: pipeline, options: options)
            case .database(let db): try client.database(db).watch(pipeline: pipeline, options: options)
            case .collection(let ns): try client.collection(ns).watch(pipeline: pipeline, options: options)
            }
        }

        var wider: Scope {
            switch self {
            case .collection(let ns): .database(ns.database)
            case .database, .cluster: .cluster
            }
        }
    }

    /// The narrowest stream that sees every followed namespace.
    static func naturalScope(_ patterns: [NamespacePattern]) -> Scope {
        guard patterns.count == 1, let p = patterns.first, p.database != "*" else { return .cluster }
        return p.collection == "*" ? .database(p.database) : .collection(Namespace(database: p.database, collection: p.collection))
    }

    static func scope(named name: String?, patterns: [NamespacePattern]) -> Scope {
        let natural = naturalScope(patterns)
        switch (name, natural) {
        case ("database", .collection(let ns)): return .database(ns.database)
        case ("cluster", _): return .cluster
        default: return natural
        }
    }

    /// Errors after which the stream cannot continue from its token: the history is gone
    /// (286 ChangeStreamHistoryLost), the token is not valid (260), or the stream failed for
    /// good (280).
    static let historyLostCodes: Set<UInt32> = [286, 260, 280]
    /// Errors that retrying cannot fix: no privileges, no replica set, a bad pipeline.
    static let fatalCodes: Set<UInt32> = [13, 40573, 40324, 15959, 9, 2]

    // The run's state; one thread (run's) touches it, the snapshot thread only `snapshot*`.
    private var writer: ChangeLogWriter!
    private var repo: Repository!
    private var pool: ClientPool!
    private var patterns: [String] = []
    private var lineage = UUID().uuidString.lowercased()
    private var scope: Scope = .cluster
    /// Where the next stream starts: after a token, or at a cluster time (inclusive).
    private var resumeToken: Document?
    private var startAt: ClusterTime?
    /// Every change up to here is durable in the log (nil: nothing yet in this line).
    private var coveredTo: ClusterTime?
    /// First cluster time of the open segment.
    private var segmentFrom: ClusterTime!
    private var segment: SegmentWriter?
    private var segmentEvents = 0
    private var segmentOpened = Date()
    private var firstEventAt: Date?
    private var segmentFirstEvent: ClusterTime?
    private var lastEventTime: ClusterTime?
    private var lastTxn: String?
    private var wallTimes: [Double] = []
    private var lastCommit = Date()
    private var lags = LagHistogram()
    private var summary = TailSummary()
    /// Sealing (with a protector): events wait in `pending` until a batch of them is handed to
    /// `sealer`, whose jobs encrypt on other cores; the results are appended to the open
    /// segment in order, on this thread. A commit first waits for all of them.
    private var pending: [Document] = []
    private var sealer: OrderedPipeline<SealedBatch>?
    private var sealFailure: Error?
    private let snapshotLock = NSLock()
    private var snapshotRunning = false
    private var snapshotNeeded = false
    private var snapshotRetryAfter = Date.distantPast
    /// Where the current line began, for a discarded segment when the log has no entry yet.
    private var lineStart: ClusterTime?

    public func run() throws -> TailSummary {
        let started = Date()
        do {
            pool = try ClientPool(options.connection)
            let hello = try pool.withClient { try $0.runCommand(["hello": 1]) }
            guard hello["setName"] != nil || hello["msg"]?.stringValue == "isdbgrid" else {
                throw CaptureError.notReplicaSet(hosts: options.connection.hosts)
            }
        } catch let e as MongoError {
            throw CaptureError.unreachable(hosts: options.connection.hosts, reason: e.message)
        }
        repo = try Repository(path: options.repository, create: true)
        writer = try ChangeLogWriter(repository: repo)
        defer { writer.close() }
        patterns = options.namespaces.map(\.description)
        if options.protector != nil {
            sealer = OrderedPipeline(maxInFlight: ProcessInfo.processInfo.activeProcessorCount + 1) { [unowned self] batch in
                try appendSealed(batch)
            }
        }
        try resumeOrStart()
        defer { waitForSnapshot() }
        var backoff = 0.25
        var attempts = 0
        while !stopRequested() {
            do {
                let stream = try openStream()
                attempts = 0
                backoff = 0.25
                startSnapshotIfNeeded()
                try follow(stream)
            } catch let e as FileError where e.isNoSpace {
                try waitForSpace(e)
            } catch let e as MongoError where Tailer.historyLostCodes.contains(e.code) {
                try recordGapAndRestart(reason: "the change stream cannot resume: \(e.message)", code: Int(e.code))
            } catch let e as MongoError where e.code == 10334 {
                try oversizedEvent(e)
            } catch let e as MongoError where Tailer.fatalCodes.contains(e.code) && !e.isNetworkError {
                try commitSegment(pbrt: nil)
                throw CaptureError.changeStream(reason: e.message)
            } catch let e as MongoError {
                // Network errors, a step-down, a restart: resume from the last token after a pause.
                attempts += 1
                let message = "change stream failed (attempt \(attempts)), resuming in \(String(format: "%.1f", backoff)) s: \(e.message)"
                logger.warning("\(message)")
                if attempts == 1 || attempts % 10 == 0 { options.onAlert?(TailAlert(kind: .retrying, message: message)) }
                sleepUnlessStopped(backoff)
                backoff = min(options.maxBackoffSeconds, backoff * 2)
            }
        }
        do {
            try commitSegment(pbrt: nil)
        } catch let e as FileError where e.isNoSpace {
            // Stopping while the disk is full: what was not committed is read again next run.
            discardOpenSegment()
            logger.warning("stopping with the disk full; the uncommitted segment was discarded and is captured again on restart", metadata: ["error": "\(e)"])
        }
        waitForSnapshot()
        summary.seconds = Date().timeIntervalSince(started)
        summary.coveredTo = coveredTo?.description
        if lags.count > 0 {
            summary.lagSecondsP50 = lags.percentile(0.5)
            summary.lagSecondsP99 = lags.percentile(0.99)
            summary.lagSecondsMax = lags.max
        }
        return summary
    }

    // MARK: Where to start

    private func resumeOrStart() throws {
        if options.startAt != nil, let (last, _) = writer.last {
            throw CaptureError.changeLogExists(repository: options.repository, lastEntry: last.sequence, to: last.to.description)
        }
        if let (last, _) = writer.last, last.namespaces == patterns {
            adopt(last)
            logger.notice("resuming the change log", metadata: ["after": "\(last.to)", "entry": "\(last.sequence)"])
            if last.kind == .segment { summary.resumedFrom = last.to.description }
            return
        }
        let now = try options.startAt ?? currentClusterTime()
        startAt = now
        lineStart = now
        scope = Tailer.naturalScope(options.namespaces)
        snapshotNeeded = options.baseSnapshots
        logger.notice("starting a new change log line", metadata: ["at": "\(now)"])
    }

    /// Takes the position after the log's last entry (on start, and after a discarded segment).
    private func adopt(_ last: ChangeEntry) {
        let needed: Bool
        switch last.kind {
        case .segment:
            // After the entry's token, or (an invalidate's token cannot start a wider
            // stream) right after its last covered cluster time.
            lineage = last.lineage
            resumeToken = last.resumeToken.flatMap { try? Document(json: $0) }
            startAt = resumeToken == nil ? last.to.successor : nil
            coveredTo = last.to
            scope = Tailer.scope(named: last.scope, patterns: options.namespaces)
            needed = options.baseSnapshots && !hasBaseSnapshot()
        case .gap:
            // The gap's end is where the last run restarted; continue from there.
            resumeToken = nil
            startAt = last.to.successor
            lineStart = startAt
            coveredTo = nil
            scope = Tailer.naturalScope(options.namespaces)
            needed = options.baseSnapshots && !hasBaseSnapshot(from: last.to.successor)
        }
        snapshotLock.lock(); snapshotNeeded = snapshotNeeded || needed; snapshotLock.unlock()
    }

    private func currentClusterTime() throws -> ClusterTime {
        guard let t = try pool.withClient({ try $0.runCommand(["ping": 1]) })["operationTime"]?.timestampValue else {
            throw CaptureError.changeStream(reason: "the server reply carries no operationTime")
        }
        return t
    }

    /// A snapshot whose consistent point lies inside the unbroken log that reaches `coveredTo`.
    private func hasBaseSnapshot(from: ClusterTime? = nil) -> Bool {
        let start: ClusterTime
        if let from { start = from } else {
            guard let covered = coveredTo,
                  let c = ChangeLog.interval(containing: covered, in: writer.log.coverage().intervals) else { return false }
            start = c.from
        }
        return repo.listBackups().manifests.contains { $0.clusterTime.end >= start.predecessor }
    }

    // MARK: The stream

    private func openStream() throws -> ChangeStream {
        var o = DocumentBuilder()
        if let token = resumeToken {
            o.append("startAfter", .document(token))
        } else if let at = startAt {
            o.append("startAtOperationTime", .timestamp(at))
        }
        o.append("fullDocument", "updateLookup")
        o.append("fullDocumentBeforeChange", "whenAvailable")
        o.append("maxAwaitTimeMS", .int32(Int32(max(50, min(500, options.segmentSeconds * 250)))))
        o.append("batchSize", 1000)
        // An invalidate has no `ns`: let it through, or the server closes the stream unseen.
        let filter = BackupRunner.changeStreamFilter(namespaces: options.namespaces, excluded: options.excludedNamespaces)
        let pipeline: [Document] = [["$match": ["$or": [.document(filter), ["operationType": "invalidate"]]]]]
        // Its own client: the stream keeps it for as long as it lives.
        let client = try Client(options.connection, appName: "ciphertail-tail")
        let stream = try scope.watch(client, pipeline: pipeline, options: o.document)
        if segment == nil {
            segmentFrom = coveredTo?.successor ?? startAt ?? ResumeToken.clusterTime(resumeToken ?? Document()) ?? ClusterTime(t: 0, i: 0)
        }
        return stream
    }

    private func follow(_ stream: ChangeStream) throws {
        while !stopRequested() {
            if let until = options.until, let covered = coveredTo, covered >= until, !snapshotBusy() {
                reachedUntil = true
                return
            }
            startSnapshotIfNeeded()
            guard let event = try stream.next() else {
                try idle(stream.resumeToken)
                continue
            }
            let ts = event["clusterTime"]?.timestampValue ?? lastEventTime ?? segmentFrom!
            let txn = Tailer.transactionKey(event, ts)
            if segment != nil && segmentEvents > 0 && (txn == nil || txn != lastTxn) && rotationDue() {
                try commitSegment(pbrt: nil)
            }
            if segment == nil { try openSegment() }
            try add(event, from: stream)
            segmentEvents += 1
            if firstEventAt == nil { firstEventAt = Date() }
            if segmentFirstEvent == nil { segmentFirstEvent = ts }
            lastEventTime = ts
            lastTxn = txn
            if let token = event["_id"]?.documentValue { resumeToken = token; startAt = nil }
            if case .datetime(let ms)? = event["wallTime"] { wallTimes.append(Double(ms) / 1000) }
            if event["operationType"]?.stringValue == "invalidate" {
                // The stream is over: make the invalidate durable, then follow the wider scope
                // from the next cluster time. (Its token would be refused there: a stream of
                // another scope resumes from an invalidate token only with resumeAfter, which
                // the server forbids after an invalidate.)
                let wider = scope.wider
                logger.notice("change stream invalidated; continuing at a wider scope",
                              metadata: ["from": "\(scope.name)", "to": "\(wider.name)"])
                scope = wider
                resumeToken = nil
                startAt = ts.successor
                try commitSegment(pbrt: nil)
                return
            }
        }
    }

    /// Transactions stay in one segment: their events share the commit's cluster time and the
    /// session's lsid and txnNumber.
    static func transactionKey(_ event: Document, _ ts: ClusterTime) -> String? {
        guard let txn = event["txnNumber"], let lsid = event["lsid"]?.documentValue else { return nil }
        return "\(ts)/\(lsid.canonicalJSON)/\(txn)"
    }

    private func rotationDue() -> Bool {
        guard let segment else { return false }
        if segment.pendingRecordBytes >= options.segmentBytes { return true }
        if let first = firstEventAt, Date().timeIntervalSince(first) >= options.segmentSeconds { return true }
        return false
    }

    /// No event within maxAwaitTimeMS: the post-batch token says how far the server has looked.
    private func idle(_ pbrt: Document?) throws {
        try submitPending()
        if segmentEvents > 0 {
            // With --until, once the stream has gone past it nothing more belongs in the run:
            // commit now rather than when the segment is old enough.
            let seen = pbrt.flatMap(ResumeToken.clusterTime)?.predecessor
            let untilSeen = options.until.map { until in
                (lastEventTime.map { $0 >= until } ?? false) || (seen.map { $0 >= until } ?? false)
            } ?? false
            if rotationDue() || untilSeen { try commitSegment(pbrt: pbrt) }
            return
        }
        guard let pbrt, let seen = ResumeToken.clusterTime(pbrt) else { return }
        let covered = coveredTo ?? segmentFrom!.predecessor
        if seen.predecessor > covered, Date().timeIntervalSince(lastCommit) >= options.idleSeconds
            || (options.until.map { covered < $0 && seen.predecessor >= $0 } ?? false) {
            try commitSegment(pbrt: pbrt)
        }
    }

    // MARK: Sealing

    /// Events per sealing job, and documents per libmongocrypt context within one: with a key
    /// per subject, libmongocrypt 1.7 matches every value's key against all the context's keys,
    /// so small contexts are cheaper per value than large ones.
    static let sealBatchEvents = 64
    static let sealContextDocuments = 16

    struct SealedBatch {
        var events: [Document]
        var result: Result<[Document], Error>
    }

    /// Puts an event into the open segment: at once without a protector; otherwise into the
    /// pending batch, handed to the sealer when full or when the driver's batch is used up (the
    /// next read goes to the server and may wait), so no event waits for a later one.
    private func add(_ event: Document, from stream: ChangeStream) throws {
        guard sealer != nil else { return try segment!.append(event.bytes) }
        pending.append(event)
        // The driver's cached token is the event's own until its batch is used up; then it is
        // the server's post-batch token.
        let batchUsedUp = stream.resumeToken.map { $0 != event["_id"]?.documentValue } ?? true
        if pending.count >= Tailer.sealBatchEvents || batchUsedUp { try submitPending() }
    }

    private func submitPending() throws {
        guard let sealer, let protector = options.protector, !pending.isEmpty else { return }
        let events = pending
        pending = []
        try sealer.submit { SealedBatch(events: events, result: Result { try Tailer.protect(events, with: protector) }) }
    }

    /// Returns once every event added so far is in the open segment, in order.
    private func drainSealer() throws {
        if let sealFailure { throw sealFailure }
        try submitPending()
        do {
            try sealer?.finish()
        } catch {
            sealFailure = error
            throw error
        }
    }

    /// The sealer's sink, on this thread, in submission order.
    private func appendSealed(_ batch: SealedBatch) throws {
        let sealed: [Document]
        switch batch.result {
        case .success(let events):
            sealed = events
        case .failure(let e as FieldCryptoError) where Tailer.keysOutOfReach(e):
            // Here, event by event, pausing until the keys are back: nothing is written in clear.
            sealed = try batch.events.map(seal)
        case .failure(let e):
            // Never a MongoError: the run loop would take it for a stream failure and go on
            // without the batch.
            sealFailure = e is MongoError ? CaptureError.changeStream(reason: "encrypting change events failed: \(e)") : e
            throw sealFailure!
        }
        for event in sealed { try segment!.append(event.bytes) }
    }

    static func keysOutOfReach(_ e: FieldCryptoError) -> Bool {
        switch e {
        case .keyVault, .masterKey, .masterKeyMismatch, .kms: true
        default: false
        }
    }

    /// Encrypts a run of events: the same result as `protectEvent` one by one. Inserts and
    /// replaces that carry only a full document are protected together through
    /// `protect(batch:)`, per namespace: their keys found (or created, in one vault append)
    /// for all of them at once, their values encrypted `sealContextDocuments` documents per
    /// libmongocrypt context. Other events go through `protectEvent`.
    static func protect(_ events: [Document], with protector: DocumentProtector) throws -> [Document] {
        var out = events
        var documents: [Namespace: [Int]] = [:]
        for (i, event) in events.enumerated() {
            let type = event["operationType"]?.stringValue
            if type == "insert" || type == "replace", event["fullDocument"]?.documentValue != nil, event["updateDescription"] == nil,
               event["fullDocumentBeforeChange"]?.documentValue == nil, let ns = event["ns"]?.documentValue,
               let db = ns["db"]?.stringValue, let coll = ns["coll"]?.stringValue {
                if protector.covers(database: db, collection: coll) { documents[Namespace(database: db, collection: coll), default: []].append(i) }
            } else {
                out[i] = try protector.protectEvent(event)
            }
        }
        for (ns, indices) in documents {
            for first in stride(from: 0, to: indices.count, by: sealContextDocuments) {
                let part = indices[first..<min(first + sealContextDocuments, indices.count)]
                let sealed = try protector.protect(batch: part.map { events[$0]["fullDocument"]!.documentValue! },
                                                   database: ns.database, collection: ns.collection)
                for (i, doc) in zip(part, sealed) { out[i] = events[i].setting("fullDocument", .document(doc)) }
            }
        }
        return out
    }

    /// Encrypts the event's protected fields. Keys that cannot be reached pause the capture
    /// (the event waits, nothing is written in clear) until they come back or the run stops.
    private func seal(_ event: Document) throws -> Document {
        guard let protector = options.protector else { return event }
        var pause = 0.5
        while true {
            do {
                return try protector.protectEvent(event)
            } catch let e as FieldCryptoError {
                switch e {
                case .keyVault, .masterKey, .masterKeyMismatch, .kms:
                    let message = "encryption keys unavailable, capture paused (nothing is written in clear): \(e)"
                    logger.error("\(message)")
                    options.onAlert?(TailAlert(kind: .keysUnavailable, message: message))
                    if stopRequested() { throw e }
                    sleepUnlessStopped(pause)
                    pause = min(options.maxBackoffSeconds, pause * 2)
                default:
                    throw e
                }
            }
        }
    }

    private func openSegment() throws {
        segment = try writer.openSegment(level: options.compressionLevel)
        segmentEvents = 0
        segmentOpened = Date()
        firstEventAt = nil
        segmentFirstEvent = nil
        wallTimes = []
        if segmentFrom == nil { segmentFrom = coveredTo?.successor ?? startAt ?? ClusterTime(t: 0, i: 0) }
    }

    /// Makes the open segment durable, then its entry; only then does the log (and so the
    /// resume point) move. With `pbrt`, the post-batch token of an idle stream, the entry also
    /// covers the quiet time up to it.
    private func commitSegment(pbrt: Document?) throws {
        try drainSealer()
        if segment == nil {
            guard pbrt != nil else { return }
            try openSegment()
        }
        var to = lastEventTime ?? coveredTo ?? segmentFrom.predecessor
        var token = resumeToken
        if let pbrt, let seen = ResumeToken.clusterTime(pbrt), seen.predecessor > to {
            to = seen.predecessor
            token = pbrt
        }
        let from = segmentFrom!
        let protectedFields: [String: [String]]? = options.protector.map { p in
            var out: [String: [String]] = [:]
            for rule in p.rules { out[rule.namespace] = rule.fields.map(\.path) }
            return out
        }
        try checkLease()
        let term = options.leaseTerm
        let entry = try writer.commit(segment!) { e in
            e.leaseTerm = term
            e.lineage = lineage
            e.from = from
            e.to = max(from.predecessor, to)
            e.namespaces = patterns
            e.resumeToken = token?.canonicalJSON
            e.scope = scope.name
            e.firstEvent = segmentFirstEvent
            e.lastEvent = segmentEvents > 0 ? lastEventTime : nil
            e.protectedFields = protectedFields
        }
        segment = nil
        let durable = Double(entry.durableAtMillis) / 1000
        let segmentLags = wallTimes.map { max(0, durable - $0) }
        for lag in segmentLags { lags.add(lag) }
        coveredTo = entry.to
        segmentFrom = entry.to.successor
        resumeToken = token
        if token != nil { startAt = nil }
        lastCommit = Date()
        summary.segments += 1
        summary.events += Int64(segmentEvents)
        segmentEvents = 0
        firstEventAt = nil
        logger.debug("change segment committed", metadata: ["entry": "\(entry.sequence)", "events": "\(entry.events ?? 0)", "to": "\(entry.to)"])
        options.onCommit?(entry, segmentLags)
    }

    // MARK: Faults

    private func checkLease() throws {
        guard options.canWrite() else {
            discardOpenSegment()
            throw CaptureError.leaseLost(reason: "not renewed in time; the uncommitted segment was discarded")
        }
    }

    /// Drops the open segment (its temporary file goes) and whatever events wait to be
    /// sealed, and moves back to right after the last committed entry: those events are read
    /// again from the oplog.
    private func discardOpenSegment() {
        segment?.abort()
        segment = nil
        pending = []
        _ = try? sealer?.finish()
        sealFailure = nil
        segmentEvents = 0
        firstEventAt = nil
        segmentFirstEvent = nil
        lastEventTime = nil
        lastTxn = nil
        wallTimes = []
        segmentFrom = nil
        if let (last, _) = writer.last, last.kind == .segment, last.lineage == lineage, last.namespaces == patterns {
            adopt(last)
        } else {
            resumeToken = nil
            startAt = lineStart
            coveredTo = nil
        }
    }

    /// The disk is full: nothing half-written stays, an alert goes out, and capture waits
    /// until a probe file can be written and made durable, then resumes from the last token.
    private func waitForSpace(_ error: FileError) throws {
        discardOpenSegment()
        let message = "disk full, capture paused (the uncommitted segment was discarded; capture resumes from the last durable entry when space returns): \(error)"
        logger.critical("\(message)")
        options.onAlert?(TailAlert(kind: .diskFull, message: message))
        let probe = (options.repository as NSString).appendingPathComponent(".space-probe")
        var attempts = 0
        while !stopRequested() {
            sleepUnlessStopped(options.diskFullRetrySeconds)
            attempts += 1
            do {
                try Durable.writeFile([UInt8](repeating: 0, count: 1 << 20), to: probe)
                unlink(probe)
                let back = "disk space is back; capture resumes after \(coveredTo?.description ?? "the start of the line")"
                logger.notice("\(back)")
                options.onAlert?(TailAlert(kind: .diskSpaceBack, message: back))
                return
            } catch let e as FileError where e.isNoSpace {
                unlink(probe)
                if attempts % 12 == 0 { options.onAlert?(TailAlert(kind: .diskFull, message: "disk still full, capture still paused: \(e)")) }
            }
        }
    }

    /// The stream cannot continue: what was captured is committed, the lost stretch is
    /// recorded as a gap, and a new line starts now with a fresh base snapshot.
    private func recordGapAndRestart(reason: String, code: Int?) throws {
        try commitSegment(pbrt: nil)
        // The new line starts now, or right after what was captured if the cluster's time has
        // not moved past it; the gap is what lies between (empty in time in that case, but
        // still a break: the old line could not be continued).
        let current = try currentClusterTime()
        let from = coveredTo?.successor ?? segmentFrom ?? current
        let now = max(current, from)
        try checkLease()
        let entry = try writer.recordGap(lineage: lineage, from: from, to: now.predecessor, namespaces: patterns,
                                         reason: reason, code: code, leaseTerm: options.leaseTerm)
        summary.gaps += 1
        let message = "history from \(entry.from) to \(entry.to) is not in the change log (\(reason)); restores cannot cross it; taking a new base snapshot"
        logger.critical("\(message)")
        options.onAlert?(TailAlert(kind: .gap, message: message))
        lineage = UUID().uuidString.lowercased()
        resumeToken = nil
        startAt = now
        lineStart = now
        coveredTo = nil
        segmentFrom = now
        lastEventTime = nil
        scope = Tailer.naturalScope(options.namespaces)
        snapshotLock.lock(); snapshotNeeded = options.baseSnapshots; snapshotLock.unlock()
    }

    /// An event over 16 MB: find which (a stream that projects the event down to its
    /// identity gets past the limit), then stop or record a gap for it, as configured.
    private func oversizedEvent(_ error: MongoError) throws {
        var o = DocumentBuilder()
        if let token = resumeToken { o.append("startAfter", .document(token)) } else if let at = startAt { o.append("startAtOperationTime", .timestamp(at)) }
        o.append("maxAwaitTimeMS", 1000)
        let filter = BackupRunner.changeStreamFilter(namespaces: options.namespaces, excluded: options.excludedNamespaces)
        let pipeline: [Document] = [["$match": .document(filter)],
                                    ["$project": ["operationType": 1, "ns": 1, "documentKey": 1, "clusterTime": 1]]]
        let client = try Client(options.connection, appName: "ciphertail-tail")
        let probe = try scope.watch(client, pipeline: pipeline, options: o.document).next()
        let ns = probe.flatMap { Namespace(changeEvent: $0) }?.description ?? "(unknown)"
        let key = probe?["documentKey"]?.documentValue.map { describeKey($0, namespace: ns) } ?? "(unknown)"
        let ts = probe?["clusterTime"]?.timestampValue
        let what = "a \(probe?["operationType"]?.stringValue ?? "change") event on \(ns), document \(key)" + (ts.map { ", cluster time \($0)" } ?? "")
            + ", is larger than the server can deliver (16 MB with its full document)"
        options.onAlert?(TailAlert(kind: .largeEvent, message: what))
        guard options.onLargeEvent == .gap, let probe, let ts, let token = probe["_id"]?.documentValue else {
            try commitSegment(pbrt: nil)
            throw CaptureError.eventTooLarge(reason: what + (options.onLargeEvent == .gap ? "; it could not be identified, so no gap was recorded" : "; set tail.onLargeEvent: gap to record a gap and go on"))
        }
        // Everything before the event is kept; the event itself is the gap.
        try commitSegment(pbrt: nil)
        let from = coveredTo?.successor ?? segmentFrom ?? ts
        try checkLease()
        let entry = try writer.recordGap(lineage: lineage, from: min(from, ts), to: ts, namespaces: patterns, reason: what, code: Int(error.code),
                                         leaseTerm: options.leaseTerm)
        summary.gaps += 1
        logger.critical("\(what); recorded as a gap (entry \(entry.sequence)); taking a new base snapshot")
        lineage = UUID().uuidString.lowercased()
        resumeToken = token
        startAt = nil
        lineStart = ts.successor
        coveredTo = ts
        segmentFrom = ts.successor
        lastEventTime = nil
        snapshotLock.lock(); snapshotNeeded = options.baseSnapshots; snapshotLock.unlock()
    }

    /// A document key for an error message: its field names, and values only of fields that
    /// no encryption rule protects.
    private func describeKey(_ key: Document, namespace: String) -> String {
        let protected: Set<String> = {
            guard let p = options.protector, let ns = Namespace(namespace),
                  let rule = p.rule(database: ns.database, collection: ns.collection) else { return [] }
            return Set(rule.fields.map { String($0.path.split(separator: ".").first ?? "") })
        }()
        var b = DocumentBuilder()
        for (k, v) in key.elements { b.append(k, protected.contains(k) ? .string("<protected>") : v) }
        return b.document.relaxedJSON
    }

    // MARK: Base snapshots

    private func startSnapshotIfNeeded() {
        snapshotLock.lock()
        defer { snapshotLock.unlock() }
        guard snapshotNeeded, !snapshotRunning, Date() >= snapshotRetryAfter else { return }
        snapshotNeeded = false
        snapshotRunning = true
        var b = BackupOptions(connection: options.connection, repository: options.repository)
        options.snapshotSettings(&b)
        b.namespaces = options.namespaces
        b.excludedNamespaces = options.excludedNamespaces
        b.protector = options.protector
        let logger = self.logger
        let snapshotOptions = b
        let t = Thread { [self] in
            do {
                let m = try BackupRunner(snapshotOptions, logger: logger).run()
                logger.notice("base snapshot taken", metadata: ["backup": "\(m.id)", "consistentClusterTime": "\(m.clusterTime.end)"])
                snapshotLock.lock(); summary.snapshots.append(m.id); snapshotLock.unlock()
                options.onSnapshot?(.success(m))
            } catch {
                let message = "base snapshot failed, retrying in 60 s: \(error)"
                logger.error("\(message)")
                options.onAlert?(TailAlert(kind: .snapshotFailed, message: message))
                options.onSnapshot?(.failure(error))
                snapshotLock.lock(); snapshotNeeded = true; snapshotRetryAfter = Date().addingTimeInterval(60); snapshotLock.unlock()
            }
            snapshotLock.lock(); snapshotRunning = false; snapshotLock.unlock()
        }
        t.name = "ciphertail.base-snapshot"
        t.start()
    }

    /// Asks for a base snapshot (the run's schedule): it starts at the next event or idle
    /// poll. False when one is already running or asked for.
    @discardableResult
    public func requestBaseSnapshot() -> Bool {
        snapshotLock.lock(); defer { snapshotLock.unlock() }
        if snapshotRunning || snapshotNeeded { return false }
        snapshotNeeded = true
        snapshotRetryAfter = .distantPast
        return true
    }

    private func snapshotBusy() -> Bool {
        snapshotLock.lock(); defer { snapshotLock.unlock() }
        return snapshotRunning || snapshotNeeded
    }

    private func waitForSnapshot() {
        while true {
            snapshotLock.lock()
            let running = snapshotRunning
            snapshotLock.unlock()
            if !running { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    private var reachedUntil = false
    private func stopRequested() -> Bool { reachedUntil || options.shouldStop() }

    private func sleepUnlessStopped(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end && !stopRequested() { Thread.sleep(forTimeInterval: min(0.05, seconds)) }
    }
}

/// Event lags in 10 ms buckets up to 60 s (one more for anything longer): a tailer runs for
/// months, so its memory must not grow with the events it has seen.
struct LagHistogram {
    static let bucketsPerSecond = 100.0
    private var buckets = [Int](repeating: 0, count: 6001)
    private(set) var count = 0
    private(set) var max = 0.0

    mutating func add(_ seconds: Double) {
        let i = Swift.min(buckets.count - 1, Swift.max(0, Int((seconds * LagHistogram.bucketsPerSecond).rounded(.up))))
        buckets[i] += 1
        count += 1
        max = Swift.max(max, seconds)
    }

    /// The upper bound of the bucket holding the `p` quantile (the maximum for the last one).
    func percentile(_ p: Double) -> Double? {
        guard count > 0 else { return nil }
        let rank = Swift.max(1, Int((p * Double(count)).rounded(.up)))
        var seen = 0
        for (i, n) in buckets.enumerated() {
            seen += n
            if seen >= rank { return i == buckets.count - 1 ? max : Swift.min(max, Double(i) / LagHistogram.bucketsPerSecond) }
        }
        return max
    }
}
