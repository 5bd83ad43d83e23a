import Archive
import BSON
import Digest
import FieldCrypto
import Foundation
import Logging
import Mongo

public enum RestoreError: Error, CustomStringConvertible {
    case targetNotEmpty([String])
    case unreachable(hosts: String, reason: String)
    case failed(namespace: String, reason: String)
    case undecryptable(namespace: String, failure: DecryptFailure)

    public var description: String {
        switch self {
        case .targetNotEmpty(let ns):
            return "refusing to restore into collections that already hold data: \(ns.joined(separator: ", ")); pass --drop to replace them"
        case .unreachable(let h, let r): return "cannot reach MongoDB at \(h): \(r)"
        case .failed(let ns, let r): return "restore of \(ns) failed: \(r)"
        case .undecryptable(let ns, let f): return "\(ns): cannot decrypt \(f) (--strict)"
        }
    }
}

public struct RestoreOptions {
    public var connection: ConnectionString
    public var repository: String
    public var backupID: String?
    /// Restore to this point (`PointInTimeTarget.parse`): the newest base snapshot before it,
    /// then the change log up to it. Nil: a backup's own consistent point.
    public var pointInTime: String?
    /// Documents per bulk insert (default: one bulk per archive block).
    public var batchSize: Int?
    public var include: [NamespacePattern] = []
    public var mapping: NamespaceMapping?
    public var drop = false
    public var workers = 4
    public var progress: ((RestoreProgress) -> Void)?
    /// Decrypts protected fields while loading; nil loads the ciphertext as it is
    /// (`--keep-encrypted`, or no keys given).
    public var decryptor: LenientDecryptor?
    /// Stop at the first value that cannot be decrypted, instead of counting it.
    public var strict = false
    /// Re-keying (`--rekey`): decrypt with the source keys, encrypt again under the target's,
    /// so the target holds ciphertext the source keys cannot open. Its rules match the
    /// namespaces as the archive names them (the source's). Takes precedence over `decryptor`.
    public var reprotector: Reprotector?

    public init(connection: ConnectionString, repository: String) {
        self.connection = connection
        self.repository = repository
    }
}

public struct RestoreProgress {
    public var documents: Int64
    public var expectedDocuments: Int64
}

public struct RestoreSummary: Codable {
    public var backup: String
    public var namespaces: [String: String]  // source to target
    public var documents: Int64
    public var eventsApplied: Int64
    /// Updates that did not apply to the fuzzy copy and were superseded by later events.
    public var eventsSuperseded: Int64
    public var indexes: Int
    public var consistentClusterTime: String
    /// Change log segments replayed after the snapshot (a point-in-time restore).
    public var changeSegments: Int = 0
    public var seconds: Double
    /// Values left encrypted because their key is missing or they failed authentication,
    /// counted per namespace; `undecryptableDetail` names field paths and key ids.
    public var undecryptable: [String: Int] = [:]
    public var undecryptableDetail: [String] = []
    /// Values of erased subjects (their keys destroyed), per target namespace.
    public var erased: [String: Int] = [:]
    public var decrypted: Bool = false
    /// Protected fields were encrypted again under the target keys (`--rekey`).
    public var rekeyed: Bool = false
}

/// Recreates collections with their options, loads documents with parallel bulk inserts,
/// replays the captured events to the consistent point, then builds the indexes.
public final class RestoreRunner {
    let options: RestoreOptions
    let logger: Logger

    public init(_ options: RestoreOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    struct Plan {
        var entry: NamespaceEntry
        var source: Namespace
        var target: Namespace
        var options: Document
        var indexes: [Document]
        var capped: Bool { options["capped"]?.boolValue == true }
    }

    func target(of ns: Namespace) -> Namespace? {
        guard options.include.matches(ns) else { return nil }
        return options.mapping?.map(ns) ?? ns
    }

    public func run() throws -> RestoreSummary {
        let started = Date()
        let repo = try Repository(path: options.repository)
        var point: RestorePoint?
        if let text = options.pointInTime {
            point = try PointInTime.plan(repo, at: try PointInTimeTarget.parse(text), requested: text)
        }
        let manifest = try point?.base ?? options.backupID.map { try repo.manifest($0) } ?? repo.latest()
        // Metadata parses before anything in the target changes.
        let plans: [Plan] = try manifest.namespaces.compactMap { e in
            guard let ns = Namespace(e.namespace), let t = target(of: ns) else { return nil }
            return Plan(entry: e, source: ns, target: t, options: try e.optionsDocument(), indexes: try e.indexDocuments())
        }
        // Every segment must be present before anything in the target changes.
        for s in plans.flatMap(\.entry.segments) + manifest.events.segments {
            let p = repo.segmentPath(backup: manifest.id, s)
            guard FileManager.default.fileExists(atPath: p) else { throw ArchiveError.missingSegment(p) }
        }
        let changes = try point.map { try checkChanges($0, plans: plans, repo: repo) } ?? []
        let pool: ClientPool
        do {
            pool = try ClientPool(options.connection)
            try pool.withClient { _ = try $0.runCommand(["ping": 1]) }
        } catch let e as MongoError {
            throw RestoreError.unreachable(hosts: options.connection.hosts, reason: e.message)
        }
        try pool.withClient { try prepare(plans, client: $0) }
        let loaded = try load(plans, manifest: manifest, repo: repo, pool: pool)
        let (applied, superseded) = try pool.withClient { try replay(manifest, changes: changes, through: point?.target, repo: repo, client: $0) }
        let indexes = try pool.withClient { try buildIndexes(plans, client: $0) }
        var summary = RestoreSummary(
            backup: manifest.id,
            namespaces: Dictionary(uniqueKeysWithValues: plans.map { ($0.source.description, $0.target.description) }),
            documents: loaded, eventsApplied: applied, eventsSuperseded: superseded, indexes: indexes,
            consistentClusterTime: (point?.target ?? manifest.clusterTime.end).description, seconds: Date().timeIntervalSince(started))
        summary.changeSegments = changes.count
        summary.decrypted = options.decryptor != nil || options.reprotector != nil
        summary.rekeyed = options.reprotector != nil
        summary.undecryptable = failures.counts
        summary.undecryptableDetail = failures.details
        summary.erased = failures.erased
        return summary
    }

    /// Values that could not be decrypted, gathered from every loader thread.
    final class FailureLog: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var counts: [String: Int] = [:]
        /// Values under erased keys, per namespace: expected, reported apart.
        private(set) var erased: [String: Int] = [:]
        private var seen: Set<String> = []
        private(set) var details: [String] = []

        func add(_ ns: String, _ all: [DecryptFailure]) {
            lock.lock(); defer { lock.unlock() }
            let gone = all.filter(\.erased).count
            if gone > 0 { erased[ns, default: 0] += gone }
            let f = all.filter { !$0.erased }
            guard !f.isEmpty else { return }
            counts[ns, default: 0] += f.count
            for x in f {
                let line = "\(ns) \(x)"
                if seen.insert(line).inserted && details.count < 100 { details.append(line) }
            }
        }
    }
    let failures = FailureLog()

    /// One block as one bulk insert: decrypted unless loading ciphertext as is, validation
    /// bypassed (the source may hold documents its own validator would now reject).
    func insert(_ block: Block, into target: Namespace, source: Namespace, client: Client, ordered: Bool) throws {
        let bulk = client.collection(target).bulk(ordered: ordered, bypassValidation: true)
        if let reprotector = options.reprotector {
            var docs: [Document] = []
            block.forEachRecord { raw in docs.append(Document(trusted: Array(raw))) }
            for (doc, failed) in try reprotector.reprotect(batch: docs, database: source.database, collection: source.collection) {
                try note(failed, namespace: target.description)
                try bulk.insert(doc)
            }
        } else if let decryptor = options.decryptor {
            var docs: [Document] = []
            block.forEachRecord { raw in docs.append(Document(trusted: Array(raw))) }
            for (doc, failed) in decryptor.decrypt(batch: docs, namespace: source.description) {
                try note(failed, namespace: target.description)
                try bulk.insert(doc)
            }
        } else {
            try block.forEachRecord { raw in try bulk.insert(raw: raw) }
        }
        do {
            try bulk.execute()
        } catch let e as MongoError {
            throw RestoreError.failed(namespace: target.description, reason: e.message)
        }
    }

    /// A block in bulks of at most `batchSize` documents.
    func insert(_ block: Block, into target: Namespace, source: Namespace, client: Client, ordered: Bool, batchSize: Int?) throws {
        guard let n = batchSize, n < block.recordCount else { return try insert(block, into: target, source: source, client: client, ordered: ordered) }
        for part in block.split(every: n) { try insert(part, into: target, source: source, client: client, ordered: ordered) }
    }

    /// Decrypts one record (a document or an event) unless loading ciphertext as is.
    func open(_ raw: UnsafeRawBufferPointer, namespace: String) throws -> Document? {
        if let reprotector = options.reprotector {
            // Every event: one of a namespace the target protects may hold plaintext.
            let (doc, failed) = try reprotector.reprotectEvent(Document(trusted: Array(raw)))
            try note(failed, namespace: namespace)
            return doc
        }
        guard let decryptor = options.decryptor else { return nil }
        let sealed = Document(trusted: Array(raw))
        guard sealed.contains(binarySubtype: 6) else { return nil }  // insert the raw bytes as they are
        let (doc, failed) = decryptor.decrypt(sealed)
        try note(failed, namespace: namespace)
        return doc
    }

    private func note(_ failed: [DecryptFailure], namespace: String) throws {
        guard !failed.isEmpty else { return }
        // Erased subjects are expected to be unreadable: --strict is about anything else.
        if options.strict, let f = failed.first(where: { !$0.erased }) { throw RestoreError.undecryptable(namespace: namespace, failure: f) }
        failures.add(namespace, failed)
    }

    /// Refuses non-empty targets (unless --drop), then creates collections and views.
    func prepare(_ plans: [Plan], client: Client) throws {
        var existing: [Namespace: Document] = [:]
        for db in Set(plans.map(\.target.database)) {
            for info in try client.database(db).listCollections() {
                if let name = info["name"]?.stringValue { existing[Namespace(database: db, collection: name)] = info }
            }
        }
        if !options.drop {
            let busy = try plans.filter { p in
                guard let info = existing[p.target] else { return false }
                if info["type"]?.stringValue == "view" { return true }
                return try client.collection(p.target).find(Document(), options: ["limit": 1, "projection": ["_id": 1]]).next() != nil
            }
            if !busy.isEmpty { throw RestoreError.targetNotEmpty(busy.map(\.target.description)) }
        }
        for p in plans where options.drop && existing[p.target] != nil {
            try client.collection(p.target).drop()
            existing[p.target] = nil
        }
        // Views last: they may be defined on collections restored here.
        for p in plans.sorted(by: { ($0.entry.type == "view" ? 1 : 0) < ($1.entry.type == "view" ? 1 : 0) }) {
            if existing[p.target] != nil { continue }
            var create = DocumentBuilder()
            create.append("create", .string(p.target.collection))
            for (k, v) in p.options.elements {
                if k == "viewOn", let on = v.stringValue,
                   let mapped = target(of: Namespace(database: p.source.database, collection: on)),
                   mapped.database == p.target.database {
                    create.append(k, .string(mapped.collection))
                } else {
                    create.append(k, v)
                }
            }
            do {
                try client.runCommand(create.document, database: p.target.database)
            } catch let e as MongoError {
                throw RestoreError.failed(namespace: p.target.description, reason: "create: \(e.message)")
            }
        }
    }

    struct Work {
        var target: Namespace
        var source: Namespace
        var block: Block
    }

    /// Shared by the loader threads: the first failure, and the count for progress.
    final class LoadState: @unchecked Sendable {
        private let lock = NSLock()
        private var failure: Error?
        private var inserted: Int64 = 0
        private var lastReport = Date()
        let queue: BlockingQueue<Work>

        init(capacity: Int) { queue = BlockingQueue(capacity: capacity) }

        func fail(_ e: Error) {
            lock.lock(); if failure == nil { failure = e }; lock.unlock()
            queue.close()
        }

        var failed: Error? { lock.lock(); defer { lock.unlock() }; return failure }

        /// Adds `n` and says whether a progress report is due.
        func add(_ n: Int) -> (total: Int64, report: Bool) {
            lock.lock(); defer { lock.unlock() }
            inserted += Int64(n)
            let report = Date().timeIntervalSince(lastReport) > 1
            if report { lastReport = Date() }
            return (inserted, report)
        }
    }

    /// One reader decompresses blocks in order; `workers` threads insert them in bulk. Capped
    /// collections load on one ordered stream to keep their natural order.
    func load(_ plans: [Plan], manifest: Manifest, repo: Repository, pool: ClientPool) throws -> Int64 {
        let expected = plans.reduce(Int64(0)) { $0 + $1.entry.documents }
        let state = LoadState(capacity: max(2, options.workers * 2))
        let progress = options.progress
        let group = DispatchGroup()
        for _ in 0..<max(1, options.workers) {
            group.enter()
            let t = Thread {
                defer { group.leave() }
                pool.withClient { client in
                    while let w = state.queue.take() {
                        if state.failed != nil { continue }
                        do {
                            try self.insert(w.block, into: w.target, source: w.source, client: client, ordered: false, batchSize: self.options.batchSize)
                            let (total, report) = state.add(w.block.recordCount)
                            if report { progress?(RestoreProgress(documents: total, expectedDocuments: expected)) }
                        } catch {
                            state.fail(error)
                        }
                    }
                }
            }
            t.name = "ciphertail.restore-worker"
            t.start()
        }
        do {
            for p in plans where !p.entry.dataCollection.isEmpty && !p.capped {
                let dataTarget = Namespace(database: p.target.database,
                                           collection: p.entry.type == "timeseries" ? "system.buckets.\(p.target.collection)" : p.target.collection)
                for s in p.entry.segments {
                    let reader = try SegmentReader(path: repo.segmentPath(backup: manifest.id, s))
                    while let block = try reader.nextBlock() {
                        if !state.queue.put(Work(target: dataTarget, source: p.source, block: block)) { break }
                    }
                    if state.failed != nil { break }
                    try RestoreRunner.checkWhole(reader, s)
                }
            }
        } catch {
            state.fail(error)
        }
        state.queue.close()
        group.wait()
        if let failure = state.failed { throw failure }
        var inserted = state.add(0).total
        for p in plans where p.capped {
            try pool.withClient { client in
                for s in p.entry.segments {
                    let reader = try SegmentReader(path: repo.segmentPath(backup: manifest.id, s))
                    while let block = try reader.nextBlock() {
                        try self.insert(block, into: p.target, source: p.source, client: client, ordered: true, batchSize: self.options.batchSize)
                        inserted += Int64(block.recordCount)
                    }
                    try RestoreRunner.checkWhole(reader, s)
                }
            }
        }
        progress?(RestoreProgress(documents: inserted, expectedDocuments: expected))
        return inserted
    }

    /// The change segments a point-in-time restore reads, checked before the target changes:
    /// the log must have followed every restored namespace, and each segment must be whole.
    func checkChanges(_ point: RestorePoint, plans: [Plan], repo: Repository) throws -> [(path: String, info: SegmentInfo)] {
        guard !point.changes.isEmpty else { return [] }
        let followed = try (point.followed ?? []).map(NamespacePattern.init)
        if let missed = plans.first(where: { !followed.matches($0.source) }) {
            throw ArchiveError.notRestorable(target: point.target.description,
                                             reason: "the change log does not follow \(missed.source) (it follows \(followed.map(\.description).joined(separator: ", ")))",
                                             windows: [])
        }
        let log = ChangeLog(repository: repo)
        return try point.changes.map { e in
            let path = log.segmentPath(e)
            guard let info = e.segment, FileManager.default.fileExists(atPath: path) else { throw ArchiveError.missingSegment(path) }
            guard let h = RestoreRunner.fileHash(path), h == info.sha256 else {
                throw ArchiveError.damaged(segment: path, offset: 0, reason: "file hash differs from its change log entry")
            }
            return (path, info)
        }
    }

    /// The snapshot's events up to its consistent point, then, for a point in time, the change
    /// log's events after that point up to the target.
    func replay(_ manifest: Manifest, changes: [(path: String, info: SegmentInfo)], through target: ClusterTime?,
                repo: Repository, client: Client) throws -> (applied: Int64, superseded: Int64) {
        let applier = EventApplier(client: client, logger: logger) { self.target(of: $0) }
        let t1 = manifest.clusterTime.end
        let own = manifest.events.segments.map { (repo.segmentPath(backup: manifest.id, $0), $0) }
        for (segments, after, upTo) in [(own, nil, t1), (changes, t1, target ?? t1)] as [([(String, SegmentInfo)], ClusterTime?, ClusterTime)] {
            for (path, info) in segments {
                let reader = try SegmentReader(path: path)
                while let block = try reader.nextBlock() {
                    try block.forEachRecord { raw in
                        var event = Document(trusted: Array(raw))
                        // The consistent point (or the target) bounds the replay, whatever the log holds.
                        if let ts = event["clusterTime"]?.timestampValue, ts > upTo || (after.map { ts <= $0 } ?? false) { return }
                        let ns = Namespace(changeEvent: event)?.description ?? "?"
                        if let opened = try self.open(raw, namespace: ns) { event = opened }
                        try applier.apply(event)
                    }
                }
                try RestoreRunner.checkWhole(reader, info)
            }
        }
        try applier.flush()
        if applier.superseded > 0 {
            logger.notice("updates superseded during replay (the copy already held a newer state)",
                          metadata: ["count": "\(applier.superseded)", "backup": "\(manifest.id)"])
        }
        return (applier.applied, applier.superseded)
    }

    static func fileHash(_ path: String) -> String? {
        guard let f = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? f.close() }
        let h = SHA256()
        while let chunk = try? f.read(upToCount: 1 << 20), !chunk.isEmpty { h.update([UInt8](chunk)) }
        return h.finalize().hexString
    }

    /// After a segment's last block: the whole file must match the manifest's hash.
    static func checkWhole(_ reader: SegmentReader, _ info: SegmentInfo) throws {
        if reader.fileHash.finalize().hexString != info.sha256 {
            throw ArchiveError.damaged(segment: reader.path, offset: 0, reason: "file hash differs from the manifest")
        }
    }

    func buildIndexes(_ plans: [Plan], client: Client) throws -> Int {
        var built = 0
        for p in plans where p.entry.type != "view" {
            let hasCollation = p.options["collation"] != nil
            let specs: [BSONValue] = p.indexes.compactMap { spec in
                if spec["name"]?.stringValue == "_id_" { return nil }  // created with the collection
                // An index listed without a collation on a collection with a default one was
                // built with the simple collation; say so, or it would inherit the default.
                if hasCollation && spec["collation"] == nil { return .document(spec.setting("collation", .document(["locale": "simple"]))) }
                return .document(spec)
            }
            guard !specs.isEmpty else { continue }
            do {
                try client.runCommand(["createIndexes": .string(p.target.collection), "indexes": .array(specs)],
                                      database: p.target.database)
            } catch let e as MongoError {
                throw RestoreError.failed(namespace: p.target.description, reason: "createIndexes: \(e.message)")
            }
            built += specs.count
        }
        return built
    }
}
