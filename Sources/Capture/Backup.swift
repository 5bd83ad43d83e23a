import Archive
import BSON
import FieldCrypto
import Foundation
import Logging
import Mongo

public enum CaptureError: Error, CustomStringConvertible {
    case unreachable(hosts: String, reason: String)
    case notReplicaSet(hosts: String)
    case eventTooLarge(reason: String)
    case changeStream(reason: String)
    case unsupportedRule(namespace: String, reason: String)
    /// `tail --start-at` on a repository whose change log already has entries.
    case changeLogExists(repository: String, lastEntry: Int64, to: String)
    /// `ciphertail run`: the lease was lost (not renewed in time, or taken over), so this
    /// process must not write; what was not committed is left for the new holder to capture.
    case leaseLost(reason: String)

    public var description: String {
        switch self {
        case .unreachable(let h, let r): return "cannot reach MongoDB at \(h): \(r)"
        case .notReplicaSet(let h):
            return "\(h) is a standalone mongod: change streams need a replica set (start mongod with --replSet and run rs.initiate(), even for a single node)"
        case .eventTooLarge(let r):
            return "a change event was too large for the server to deliver (16 MB limit; MongoDB 6.0 cannot split events): \(r)"
        case .changeStream(let r): return "change stream failed: \(r)"
        case .unsupportedRule(let ns, let r): return "encryption rule for \(ns): \(r)"
        case .changeLogExists(let repo, let seq, let to):
            return "--start-at starts a new change log, but \(repo) already has one (entry \(seq), durable to \(to)); "
                + "without --start-at the tailer resumes it"
        case .leaseLost(let r): return "the pipeline's lease is lost, so capture stopped writing: \(r)"
        }
    }
}

public struct BackupOptions {
    public var connection: ConnectionString
    public var repository: String
    public var namespaces: [NamespacePattern] = []
    public var compressionLevel: Int32 = 3
    public var blockBytes = SegmentFormat.defaultBlockBytes
    /// A data segment closes at this much record data and the next one starts.
    public var segmentBytes = 256 << 20
    public var progress: ((BackupProgress) -> Void)?
    /// The encryption stage: protected fields are encrypted before anything is compressed or
    /// written. Nil: no encryption.
    public var protector: DocumentProtector?
    /// Never copied nor captured whatever the patterns say: the key vault collection when the
    /// keys live in MongoDB (collections named __keyVault are always left out).
    public var excludedNamespaces: Set<Namespace> = []

    public init(connection: ConnectionString, repository: String) {
        self.connection = connection
        self.repository = repository
    }
}

public struct BackupProgress {
    public var namespace: String
    public var documents: Int64
    public var bytes: Int64
    public var expectedDocuments: Int64
}

/// Takes a consistent logical backup, the way `mongodump --oplog` does, with a change stream
/// in place of the oplog: the stream opens at cluster time T0 before any collection is read,
/// the collections are copied, and the stream is drained up to T1, the cluster time after the
/// last copy. Replaying the captured events on the copied documents yields the data as of T1.
public final class BackupRunner {
    let options: BackupOptions
    let logger: Logger

    public init(_ options: BackupOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    static let excludedDatabases: Set<String> = ["admin", "local", "config"]
    /// System collections that are not data (views and time series are rebuilt from their
    /// listCollections entries; the profiler cannot be written).
    /// Key vault collections (MongoDB's convention) never go into a data archive, neither as
    /// a copy nor as change events.
    static let keyVaultCollection = "__keyVault"

    static func isCopied(_ collection: String) -> Bool {
        if collection == "system.js" { return true }
        if collection == keyVaultCollection { return false }
        return !collection.hasPrefix("system.")
    }

    public func run() throws -> Manifest {
        let pool: ClientPool
        let hello: Document
        do {
            pool = try ClientPool(options.connection)
            hello = try pool.withClient { try $0.runCommand(["hello": 1]) }
        } catch let e as MongoError {
            throw CaptureError.unreachable(hosts: options.connection.hosts, reason: e.message)
        }
        let setName = hello["setName"]?.stringValue
        guard setName != nil || hello["msg"]?.stringValue == "isdbgrid" else {
            throw CaptureError.notReplicaSet(hosts: options.connection.hosts)
        }
        let buildInfo = try pool.withClient { try $0.runCommand(["buildInfo": 1]) }
        let repo = try Repository(path: options.repository, create: true)
        try refuseDowngrade(repo)
        for id in repo.removeInterruptedBackups() {
            logger.notice("removed interrupted backup", metadata: ["backup": "\(id)"])
        }
        let createdAt = Date()
        guard let t0 = hello["operationTime"]?.timestampValue else {
            throw CaptureError.changeStream(reason: "the server reply carries no operationTime")
        }
        let writer = try repo.beginBackup(at: createdAt)
        logger.info("backup started", metadata: ["backup": "\(writer.id)", "startClusterTime": "\(t0)"])
        do {
            let events = try EventCapture(pool: pool, start: t0, filter: changeStreamFilter(), writer: writer,
                                          level: options.compressionLevel, segmentBytes: options.segmentBytes,
                                          protector: options.protector, logger: logger)
            try events.start()
            var entries: [NamespaceEntry] = []
            do {
                let targets = try pool.withClient { try self.listNamespaces($0) }
                if let protector = options.protector {
                    // Buckets of a time series hold measurements column-wise: field rules cannot reach them.
                    for t in targets where t.type == "timeseries"
                        && protector.covers(database: t.namespace.database, collection: t.namespace.collection) {
                        throw CaptureError.unsupportedRule(namespace: t.namespace.description,
                                                           reason: "time series collections cannot have encrypted fields")
                    }
                }
                for (index, target) in targets.enumerated() {
                    try events.checkHealthy()  // a failed capture makes the copy pointless
                    entries.append(try pool.withClient { try copy(target, index: index, client: $0, writer: writer) })
                }
            } catch {
                _ = try? events.stop(at: nil)
                throw error
            }
            // T1: the latest applied cluster time once every copy is done.
            guard let t1 = try pool.withClient({ try $0.runCommand(["ping": 1]) })["operationTime"]?.timestampValue else {
                throw CaptureError.changeStream(reason: "the server reply carries no operationTime")
            }
            let log = try events.stop(at: t1)
            var manifest = Manifest(
                id: writer.id, createdAt: createdAt, completedAt: Date(),
                source: SourceInfo(hosts: options.connection.hosts, replicaSet: setName,
                                   serverVersion: buildInfo["version"]?.stringValue),
                compression: CompressionInfo(codec: "zstd", level: Int(options.compressionLevel)),
                clusterTime: ClusterTimeRange(start: t0, end: t1),
                resumeTokens: ResumeTokens(start: log.startToken?.canonicalJSON, end: log.endToken?.canonicalJSON),
                namespaces: entries, events: EventLog(count: log.count, segments: log.segments))
            manifest.protectedFields = options.protector.map { p in
                Dictionary(uniqueKeysWithValues: entries.compactMap { e -> (String, [String])? in
                    guard let ns = Namespace(e.namespace), let rule = p.rule(database: ns.database, collection: ns.collection) else { return nil }
                    return (e.namespace, rule.fields.map(\.path))
                })
            }
            try writer.commit(manifest)
            logger.info("backup complete", metadata: [
                "backup": "\(writer.id)", "documents": "\(manifest.documentCount)", "events": "\(log.count)",
                "consistentClusterTime": "\(t1)",
            ])
            return manifest
        } catch {
            writer.discard()
            throw error
        }
    }

    /// A repository whose backups protect a namespace never takes that namespace in clear:
    /// a run without the pipeline's encryption settings must not write plaintext beside them.
    func refuseDowngrade(_ repo: Repository) throws {
        for m in repo.listBackups().manifests {
            for (ns, fields) in m.protectedFields ?? [:] {
                guard let n = Namespace(ns), options.namespaces.matches(n) else { continue }
                let covered = options.protector?.rule(database: n.database, collection: n.collection)?.fields.map(\.path) ?? []
                if let missing = fields.first(where: { !covered.contains($0) }) {
                    throw CaptureError.unsupportedRule(namespace: ns, reason: "backup \(m.id) in this repository encrypts field \(missing); "
                        + "this run would store it in clear. Give the pipeline with its encryption settings")
                }
            }
        }
    }

    struct Target {
        var namespace: Namespace
        var type: String
        var options: Document
        var dataCollection: String?
    }

    func listNamespaces(_ client: Client) throws -> [Target] {
        var out: [Target] = []
        for db in try client.databaseNames().sorted() where !BackupRunner.excludedDatabases.contains(db) {
            if !options.namespaces.isEmpty && !options.namespaces.contains(where: { $0.matches(database: db) }) { continue }
            for info in try client.database(db).listCollections() {
                guard let name = info["name"]?.stringValue, BackupRunner.isCopied(name),
                      !options.excludedNamespaces.contains(Namespace(database: db, collection: name)) else { continue }
                let ns = Namespace(database: db, collection: name)
                guard options.namespaces.matches(ns) else { continue }
                let type = info["type"]?.stringValue ?? "collection"
                let data: String? = switch type {
                case "timeseries": "system.buckets.\(name)"
                case "view": nil
                default: name
                }
                out.append(Target(namespace: ns, type: type, options: info["options"]?.documentValue ?? Document(), dataCollection: data))
            }
        }
        return out.sorted { $0.namespace < $1.namespace }
    }

    func changeStreamFilter() -> Document {
        BackupRunner.changeStreamFilter(namespaces: options.namespaces, excluded: options.excludedNamespaces)
    }

    /// The `$match` of a capture's change stream: the followed namespaces, never the key vault.
    static func changeStreamFilter(namespaces: [NamespacePattern], excluded: Set<Namespace>) -> Document {
        var noKeyVault: BSONValue = ["ns.coll": ["$ne": .string(BackupRunner.keyVaultCollection)]]
        if !excluded.isEmpty {
            let others: [BSONValue] = excluded.sorted().map {
                ["$nor": [["ns.db": .string($0.database), "ns.coll": .string($0.collection)]]]
            }
            noKeyVault = ["$and": .array([noKeyVault] + others)]
        }
        if namespaces.isEmpty {
            return ["$and": [["ns.db": .document(["$nin": .array(BackupRunner.excludedDatabases.sorted().map { .string($0) })])], noKeyVault]]
        }
        let alternatives: [BSONValue] = namespaces.map { p in
            var d = DocumentBuilder()
            if p.database != "*" { d.append("ns.db", .string(p.database)) }
            if p.collection != "*" { d.append("ns.coll", .string(p.collection)) }
            return .document(d.document)
        }
        return ["$and": [["$or": .array(alternatives)], noKeyVault]]
    }

    func copy(_ target: Target, index: Int, client: Client, writer: BackupWriter) throws -> NamespaceEntry {
        let ns = target.namespace
        let indexes = target.type == "view" ? [] : try client.collection(ns).listIndexes()
        var entry = NamespaceEntry(namespace: ns.description, type: target.type, options: target.options.canonicalJSON,
                                   indexes: indexes.map(\.canonicalJSON), dataCollection: target.dataCollection ?? "")
        guard let dataName = target.dataCollection else { return entry }
        let source = client.collection(Namespace(database: ns.database, collection: dataName))
        let expected = (try? source.estimatedCount()) ?? 0
        var sequence = 0
        var segment: SegmentWriter?
        var progress = BackupProgress(namespace: ns.description, documents: 0, bytes: 0, expectedDocuments: expected)
        var lastReport = Date()
        func rotate() throws {
            if let s = segment { entry.segments.append(try s.finish()) }
            sequence += 1
            segment = try writer.segmentWriter(relativePath: String(format: "data/%04d-%06d.seg", index, sequence),
                                               kind: .document, level: options.compressionLevel, blockBytes: options.blockBytes)
        }
        do {
            try rotate()
            // Natural order, no sort: capped collections must come back in insertion order.
            let cursor = source.find(Document(), options: ["batchSize": 2000])
            let protector = options.protector.flatMap { p in
                p.covers(database: ns.database, collection: ns.collection) ? p : nil
            }
            // Protected namespaces: documents are encrypted in batches on other cores (one
            // libmongocrypt context per batch) and reach the segment in cursor order. The
            // archive never sees the plaintext.
            func write(_ record: UnsafeRawBufferPointer) throws {
                if segment!.pendingRecordBytes >= options.segmentBytes { try rotate() }
                try segment!.append(record)
            }
            let sealer = OrderedPipeline<[Document]>(maxInFlight: ProcessInfo.processInfo.activeProcessorCount + 1) { docs in
                for d in docs { try d.bytes.withUnsafeBytes { try write($0) } }
            }
            var batch: [Document] = []
            var batchBytes = 0
            func submitBatch() throws {
                guard let protector, !batch.isEmpty else { return }
                let docs = batch
                batch.removeAll(keepingCapacity: true)
                batchBytes = 0
                try sealer.submit { try protector.protect(batch: docs, database: ns.database, collection: ns.collection) }
            }
            while try cursor.nextRaw({ raw in
                if protector != nil {
                    batch.append(Document(trusted: Array(raw)))
                    batchBytes += raw.count
                    // libmongocrypt matches each value's key against the batch's keys one by one:
                    // batches stay small so that per-subject keys do not make that quadratic.
                    if batch.count >= 128 || batchBytes >= 4 << 20 { try submitBatch() }
                } else {
                    try write(raw)
                }
                progress.documents += 1
                progress.bytes += Int64(raw.count)
            }) {
                if let report = options.progress, progress.documents % 4096 == 0, Date().timeIntervalSince(lastReport) > 1 {
                    lastReport = Date()
                    report(progress)
                }
            }
            try submitBatch()
            try sealer.finish()
            entry.segments.append(try segment!.finish())
            segment = nil
        } catch {
            segment?.abort()
            throw error
        }
        options.progress?(progress)
        entry.documents = progress.documents
        entry.bytes = progress.bytes
        logger.debug("copied namespace", metadata: ["namespace": "\(ns)", "documents": "\(progress.documents)"])
        return entry
    }
}
