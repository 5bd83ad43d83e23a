import Archive
import BSON
import FieldCrypto
import Foundation
import Logging

public enum ExportError: Error, CustomStringConvertible {
    /// `--at` needs the change log and its planner.
    case targetBeforeSnapshot(target: ClusterTime, consistent: ClusterTime)
    case unreplayable(namespace: String, reason: String)
    case wrongSegmentKind(path: String, expected: RecordKind)
    case undecryptable(namespace: String, failure: DecryptFailure)

    public var description: String {
        switch self {
        case .targetBeforeSnapshot(let t, let c):
            return "cluster time \(t) is before the backup's consistent point \(c); a backup can only be exported at or after it"
        case .unreplayable(let ns, let r): return "\(ns): \(r)"
        case .wrongSegmentKind(let p, let k): return "\(p) does not hold \(k == .changeEvent ? "change events" : "documents")"
        case .undecryptable(let ns, let f): return "\(ns): cannot decrypt \(f) (--strict)"
        }
    }
}

public struct ExportOptions {
    /// Which namespaces to export (and whose events to replay), as restore's `--ns`.
    public var include: (_ database: String, _ collection: String) -> Bool = { _, _ in true }
    /// Decrypts protected fields; nil writes the ciphertext as it is (binary subtype 6).
    public var decryptor: LenientDecryptor?
    /// Fail on the first value that cannot be decrypted instead of counting it.
    public var strict = false
    /// The archive header's `tool_version`.
    public var toolVersion = "ciphertail"
    public var progress: ((ExportProgress) -> Void)?

    public init() {}
}

public struct ExportProgress: Sendable {
    public var namespace: String
    public var documents: Int64
    public var expectedDocuments: Int64
}

public struct ExportSummary: Codable, Sendable {
    public var backup: String
    public var format = "mongodump-archive"
    /// The point the archive's data is at.
    public var clusterTime: String
    /// Each exported namespace and its document count.
    public var namespaces: [String: Int64]
    public var documents: Int64
    /// Bytes of the archive.
    public var bytes: Int64
    public var eventsApplied: Int64
    /// Update steps skipped because a later state was already there (as in restore).
    public var eventsSuperseded: Int64
    public var decrypted: Bool
    /// Values left encrypted, per namespace, and which fields and keys (never values).
    public var undecryptable: [String: Int] = [:]
    public var undecryptableDetail: [String] = []
    public var file: String?
    public var seconds: Double = 0
}

/// Writes a backup as a mongodump archive at a cluster time: the snapshot's documents with
/// its change events, and optionally later change segments, replayed in memory to `target`.
///
/// Three steps keep memory bounded by what the events touch, not by the data:
/// 1. one pass over the events builds a `ReplayPlan`: the namespaces at `target` and the
///    `_id`s each one's events touch;
/// 2. per namespace, the snapshot documents stream from the segments: untouched ones go
///    straight to the archive, touched ones are held in an `InMemoryApplier`;
/// 3. that namespace's events are read again (only the segments that hold any) and applied
///    in order; the documents that survive follow in the archive.
/// For a capped collection the held documents keep their place in natural order, which
/// costs a second read of its segments.
public final class Exporter {
    struct EventSource {
        let path: String
        let info: SegmentInfo
        /// A later change segment: only its events past the snapshot's T1 count.
        let later: Bool
    }

    let repository: Repository
    let base: Manifest
    let target: ClusterTime
    let sources: [EventSource]
    let options: ExportOptions
    let logger: Logger

    /// `extraEventSegments` are change segments (record kind 2, full paths) replayed after
    /// the snapshot's own events, in order; their events at or before the snapshot's
    /// consistent point, or after `target`, are ignored, as are the snapshot's own events
    /// after `target`.
    public init(repository: Repository, base: Manifest, target: ClusterTime,
                extraEventSegments: [(path: String, info: SegmentInfo)] = [],
                options: ExportOptions = ExportOptions(), logger: Logger) {
        self.repository = repository
        self.base = base
        self.target = target
        sources = base.events.segments.map { EventSource(path: repository.segmentPath(backup: base.id, $0), info: $0, later: false) }
            + extraEventSegments.map { EventSource(path: $0.path, info: $0.info, later: true) }
        self.options = options
        self.logger = logger
    }

    private var summary: ExportSummary!
    private var written: Int64 = 0
    private var expected: Int64 = 0

    public func run(to writer: MongodumpArchiveWriter) throws -> ExportSummary {
        let started = Date()
        guard target >= base.clusterTime.end else {
            throw ExportError.targetBeforeSnapshot(target: target, consistent: base.clusterTime.end)
        }
        // Every file must be there, and every metadata string parse, before anything is written.
        for s in base.namespaces.flatMap(\.segments) {
            let p = repository.segmentPath(backup: base.id, s)
            guard FileManager.default.fileExists(atPath: p) else { throw ArchiveError.missingSegment(p) }
        }
        for s in sources where !FileManager.default.fileExists(atPath: s.path) { throw ArchiveError.missingSegment(s.path) }
        let plan = ReplayPlan(namespaces: base.namespaces, include: options.include)
        let firstSeq = try planEvents(plan)
        let finals = plan.finalNamespaces
        let metadata = try finals.map { try collectionMetadata($0.namespace, $0.lineage) }
        expected = finals.reduce(0) { $0 + ($1.lineage.base?.documents ?? 0) }
        summary = ExportSummary(backup: base.id, clusterTime: target.description, namespaces: [:], documents: 0, bytes: 0,
                                eventsApplied: Int64(plan.namespaceEvents), eventsSuperseded: 0, decrypted: options.decryptor != nil)
        try writer.writePrelude(MongodumpArchive.Header(serverVersion: base.source.serverVersion ?? "0.0.0", toolVersion: options.toolVersion),
                                collections: metadata)
        for ((ns, lineage), meta) in zip(finals, metadata) {
            let data = ReplayPlan.split(meta.dataNamespace)!
            try writer.beginNamespace(database: data.0, collection: data.1)
            try exportDocuments(ns, lineage, plan: plan, firstSeq: firstSeq, writer: writer)
            let done = try writer.endNamespace()
            summary.namespaces[ns] = done.documents
            summary.documents += done.documents
            options.progress?(ExportProgress(namespace: ns, documents: written, expectedDocuments: expected))
        }
        try writer.finish()
        summary.bytes = writer.bytesWritten
        summary.undecryptable = failures.counts
        summary.undecryptableDetail = failures.details
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    // MARK: events

    /// Whether an event of `source` at `time` is replayed.
    func counts(_ time: ClusterTime?, in source: EventSource) -> Bool {
        guard let time else { return !source.later }  // as restore: only a time past the target excludes
        return time <= target && (!source.later || time > base.clusterTime.end)
    }

    /// Pass 1; returns the sequence number of each source's first event.
    func planEvents(_ plan: ReplayPlan) throws -> [Int] {
        var seq = 0
        var firsts: [Int] = []
        for (i, s) in sources.enumerated() {
            firsts.append(seq)
            let first = seq
            seq += try readEvents(s) { event, n in
                if counts(event["clusterTime"]?.timestampValue, in: s) { try plan.observe(event, seq: first + n, source: i) }
            }
        }
        return firsts
    }

    /// Every event of a source with its position in it; the kind and the whole-file hash
    /// are checked.
    @discardableResult
    func readEvents(_ s: EventSource, _ body: (Document, Int) throws -> Void) throws -> Int {
        let reader = try SegmentReader(path: s.path)
        guard reader.kind == .changeEvent else { throw ExportError.wrongSegmentKind(path: s.path, expected: .changeEvent) }
        var n = 0
        while let block = try reader.nextBlock() {
            try block.forEachRecord { raw in
                try body(Document(trusted: Array(raw)), n)
                n += 1
            }
        }
        try Exporter.checkWhole(reader, s.info)
        return n
    }

    /// Pass 3 for one lineage: its events, in order, into the applier.
    func replay(_ lineage: ReplayPlan.Lineage, namespace: String, plan: ReplayPlan, firstSeq: [Int], into applier: InMemoryApplier) throws {
        for i in lineage.sources.sorted() {
            let s = sources[i]
            try readEvents(s) { event, n in
                guard counts(event["clusterTime"]?.timestampValue, in: s), let f = try ReplayPlan.facts(event),
                      case .document = f.kind, plan.lineage(of: f.namespace, at: firstSeq[i] + n) === lineage
                else { return }
                do {
                    if try applier.apply(event) != .ignored { summary.eventsApplied += 1 }
                } catch let e as InMemoryApplier.Unreplayable {
                    throw ExportError.unreplayable(namespace: f.namespace, reason: e.description)
                }
            }
        }
        summary.eventsSuperseded += Int64(applier.superseded)
        if applier.superseded > 0 {
            logger.notice("updates superseded during replay (the copy already held a newer state)",
                          metadata: ["namespace": "\(namespace)", "count": "\(applier.superseded)"])
        }
    }

    // MARK: documents

    func exportDocuments(_ ns: String, _ lineage: ReplayPlan.Lineage, plan: ReplayPlan, firstSeq: [Int], writer: MongodumpArchiveWriter) throws {
        let out = DocumentOutput(writer: writer, namespace: ns, exporter: self)
        let segments = lineage.base?.segments ?? []
        guard lineage.documentEvents > 0 else {
            // Nothing to replay: the records go through as they are.
            try forEachSnapshotBlock(segments) { block in
                if options.decryptor == nil {
                    try block.forEachRecord { try out.writeRaw($0) }
                } else {
                    var docs: [[UInt8]] = []
                    block.forEachRecord { docs.append(Array($0)) }
                    try out.write(docs)
                }
            }
            return
        }
        let applier = InMemoryApplier()
        let capped = (try lineage.base?.optionsDocument())?["capped"]?.boolValue == true
        if capped {
            // Natural order matters: hold, replay, then read again and put each held
            // document back in its place.
            try forEachSnapshotDocument(segments) { block in
                for (key, doc) in block where key.map(lineage.touched.contains) == true { try applier.hold(doc) }
            }
            try replay(lineage, namespace: ns, plan: plan, firstSeq: firstSeq, into: applier)
            let survivors = applier.survivors()
            var inPlace: [DocumentKey: [UInt8]] = [:]
            for s in survivors where s.keepsSnapshotPosition { inPlace[s.key] = s.bytes }
            try forEachSnapshotDocument(segments) { block in
                try out.write(block.compactMap { key, doc in
                    guard let key, lineage.touched.contains(key) else { return doc }
                    return inPlace.removeValue(forKey: key)
                })
            }
            try out.write(survivors.filter { !$0.keepsSnapshotPosition }.map(\.bytes))
        } else {
            try forEachSnapshotDocument(segments) { block in
                var pass: [[UInt8]] = []
                for (key, doc) in block {
                    if let key, lineage.touched.contains(key) { try applier.hold(doc) } else { pass.append(doc) }
                }
                try out.write(pass)
            }
            try replay(lineage, namespace: ns, plan: plan, firstSeq: firstSeq, into: applier)
            try out.write(applier.survivors().map(\.bytes))
        }
    }

    /// The snapshot documents of a namespace, a block at a time, each with its key.
    func forEachSnapshotDocument(_ segments: [SegmentInfo], _ body: ([(DocumentKey?, [UInt8])]) throws -> Void) throws {
        try forEachSnapshotBlock(segments) { block in
            var docs: [(DocumentKey?, [UInt8])] = []
            docs.reserveCapacity(block.recordCount)
            try block.forEachRecord { raw in
                let doc = Array(raw)
                do {
                    docs.append((try DocumentKey(document: doc), doc))
                } catch {
                    throw ArchiveError.damaged(segment: "a document segment", offset: block.offset, reason: "a record is not a BSON document: \(error)")
                }
            }
            try body(docs)
        }
    }

    /// The blocks of a namespace's segments, checked (kind, checksums, whole-file hash).
    func forEachSnapshotBlock(_ segments: [SegmentInfo], _ body: (Block) throws -> Void) throws {
        for s in segments {
            let reader = try SegmentReader(path: repository.segmentPath(backup: base.id, s))
            guard reader.kind == .document else { throw ExportError.wrongSegmentKind(path: reader.path, expected: .document) }
            while let block = try reader.nextBlock() { try body(block) }
            try Exporter.checkWhole(reader, s)
        }
    }

    static func checkWhole(_ reader: SegmentReader, _ info: SegmentInfo) throws {
        if reader.fileHash.finalize().hexString != info.sha256 {
            throw ArchiveError.damaged(segment: reader.path, offset: 0, reason: "file hash differs from the manifest")
        }
    }

    /// Decrypts (when asked) and writes documents of one namespace, counting what stays sealed.
    final class DocumentOutput {
        let writer: MongodumpArchiveWriter
        let namespace: String
        unowned let exporter: Exporter

        init(writer: MongodumpArchiveWriter, namespace: String, exporter: Exporter) {
            self.writer = writer
            self.namespace = namespace
            self.exporter = exporter
        }

        func write(_ docs: [[UInt8]]) throws {
            guard !docs.isEmpty else { return }
            if let decryptor = exporter.options.decryptor {
                for (doc, failed) in decryptor.decrypt(batch: docs.map { Document(trusted: $0) }, namespace: namespace) {
                    if !failed.isEmpty {
                        if exporter.options.strict, let f = failed.first(where: { !$0.erased }) {
                            throw ExportError.undecryptable(namespace: namespace, failure: f)
                        }
                        exporter.failures.add(namespace, failed)
                    }
                    try writer.writeDocument(doc.bytes)
                }
            } else {
                for d in docs { try writer.writeDocument(d) }
            }
            exporter.written += Int64(docs.count)
            exporter.options.progress?(ExportProgress(namespace: namespace, documents: exporter.written, expectedDocuments: exporter.expected))
        }

        func writeRaw(_ raw: UnsafeRawBufferPointer) throws {
            try writer.writeDocument(raw)
            exporter.written += 1
            if exporter.written % 4096 == 0 {
                exporter.options.progress?(ExportProgress(namespace: namespace, documents: exporter.written, expectedDocuments: exporter.expected))
            }
        }
    }

    /// Values that stayed encrypted: a count per namespace and up to 100 distinct details.
    final class FailureLog {
        private(set) var counts: [String: Int] = [:]
        private var seen: Set<String> = []
        private(set) var details: [String] = []

        func add(_ ns: String, _ f: [DecryptFailure]) {
            counts[ns, default: 0] += f.count
            for x in f {
                let line = "\(ns) \(x)"
                if seen.insert(line).inserted && details.count < 100 { details.append(line) }
            }
        }
    }
    let failures = FailureLog()

    // MARK: metadata

    /// The prelude entry of a namespace at the target time: its lineage's snapshot metadata
    /// (renamed if it moved). A collection that events created has no options, as an
    /// implicit creation gives none, and the indexes the backup recorded under its name
    /// (the restore builds those), or only `_id`.
    func collectionMetadata(_ ns: String, _ lineage: ReplayPlan.Lineage) throws -> MongodumpArchive.CollectionMetadata {
        let (db, coll) = ReplayPlan.split(ns)!
        let type: String, options: Document, indexes: [Document], size: Int64
        if let b = lineage.base {
            type = b.type
            options = try b.optionsDocument()
            indexes = try b.indexDocuments()
            size = b.bytes
        } else {
            type = "collection"
            options = Document()
            indexes = try base.namespaces.first { $0.namespace == ns && $0.type == "collection" }?.indexDocuments()
                ?? [Document(["v": 2, "key": ["_id": 1], "name": "_id_"])]
            size = 0
        }
        return MongodumpArchive.CollectionMetadata(
            database: db, collection: coll,
            metadata: MongodumpArchive.CollectionMetadata.metadataJSON(collection: coll, type: type, options: options, indexes: indexes),
            size: size, type: type)
    }
}
