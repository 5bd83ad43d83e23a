import Archive
import BSON
import FieldCrypto
import Foundation
import Logging
import Mongo

public struct RekeyProgress: Sendable {
    public var backup: String
    /// 1-based position of the backup among the source's.
    public var backupIndex: Int
    public var backups: Int
    /// Records (documents and events) of this backup re-written so far, and in all.
    public var records: Int64
    public var expectedRecords: Int64
}

public struct RekeySummary: Codable, Sendable {
    public var source: String
    public var destination: String
    /// Backups written by this run, and those already complete in the destination (a rerun).
    public var backups: [String] = []
    public var skipped: [String] = []
    public var segments = 0
    /// Change log entries written (segments and gaps), the segments among them, and entries
    /// already in the destination.
    public var changeEntries = 0
    public var changeSegments = 0
    public var skippedChangeEntries = 0
    public var documents: Int64 = 0
    public var events: Int64 = 0
    public var records: Int64 = 0
    /// Values encrypted under the target keys, per namespace (events count under theirs).
    public var valuesReencrypted: [String: Int64] = [:]
    /// Values the source keys could not open, kept as they were, per namespace; the details
    /// name field paths and key ids (at most 100 lines).
    public var undecryptable: [String: Int] = [:]
    public var undecryptableDetail: [String] = []
    public var seconds: Double = 0
}

/// Re-keys a whole repository offline: every backup of the source is written again into the
/// destination under the same id, each segment to the same relative path, its records
/// decrypted with the source keys and encrypted under the target's (`Reprotector`). The new
/// manifest is the source's with new segment infos and the target rules' `protectedFields`,
/// so ids, cluster times, resume tokens and the event logs that give point-in-time restore
/// stay as they were.
///
/// - The source is only read: opened without `create`, its interrupted backups left alone.
/// - Crash-safe: a backup's manifest is written last (`BackupWriter.commit`), so a backup
///   exists in the destination only once it is whole.
/// - Rerunnable: backups complete in the destination are skipped (after a check that they are
///   this source's), interrupted ones are removed and done again.
/// - Nothing is written before every source manifest has loaded and the target rules have
///   been checked to encrypt every field the source encrypts.
public final class RepositoryRekeyer {
    public let sourcePath: String
    public let destinationPath: String
    public let reprotector: Reprotector
    let logger: Logger
    public var progress: ((RekeyProgress) -> Void)?
    public var blockBytes = SegmentFormat.defaultBlockBytes
    /// Documents are re-protected in batches, as the backup encrypts them: small, because
    /// libmongocrypt 1.7 matches each value's key against the batch's keys linearly.
    public var batchDocuments = 128
    public var batchBytes = 4 << 20

    public init(source: String, destination: String, reprotector: Reprotector, logger: Logger) {
        sourcePath = (source as NSString).standardizingPath
        destinationPath = (destination as NSString).standardizingPath
        self.reprotector = reprotector
        self.logger = logger
    }

    private let failures = RestoreRunner.FailureLog()

    public func run() throws -> RekeySummary {
        let started = Date()
        let src = try Repository(path: sourcePath)
        try refuseOverlap()
        // Every manifest loads and every protected field stays protected, before anything is written.
        let manifests = try src.backupIDs().map { id -> Manifest in
            let m = try src.manifest(id)
            guard m.id == id else { throw ArchiveError.badManifest(path: src.manifestPath(id), reason: "manifest id \(m.id) is not its folder's") }
            return m
        }
        try checkTargetRules(manifests)
        let dst = try openDestination(sourceIDs: Set(manifests.map(\.id)))
        for id in dst.removeInterruptedBackups() {
            logger.notice("removed interrupted re-keyed backup", metadata: ["backup": "\(id)"])
        }
        var summary = RekeySummary(source: src.path, destination: dst.path)
        let done = Set(dst.backupIDs())
        for (i, m) in manifests.enumerated() {
            if done.contains(m.id) {
                try checkAlreadyRekeyed(m, in: dst)
                summary.skipped.append(m.id)
                logger.info("backup already re-keyed", metadata: ["backup": "\(m.id)"])
                continue
            }
            try rekeyBackup(m, index: i + 1, of: manifests.count, from: src, into: dst, summary: &summary)
        }
        try rekeyChanges(from: src, into: dst, summary: &summary)
        summary.valuesReencrypted = encryptedPerNamespace
        summary.undecryptable = failures.counts
        summary.undecryptableDetail = failures.details
        summary.records = summary.documents + summary.events
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    // MARK: Checks

    /// The destination must be neither the source nor inside it (or around it): the source
    /// is never written.
    func refuseOverlap() throws {
        let s = RepositoryRekeyer.canonical(sourcePath)
        let d = RepositoryRekeyer.canonical(destinationPath)
        if s == d || d.hasPrefix(s + "/") || s.hasPrefix(d + "/") {
            throw RekeyError.destination(path: destinationPath, reason: "the destination must be a folder outside the source repository \(sourcePath)")
        }
    }

    /// The real path of the longest existing prefix, plus the rest: symlinks resolved, so a
    /// link to the source is still the source.
    static func canonical(_ path: String) -> String {
        var head = (path as NSString).standardizingPath
        var tail: [String] = []
        while !head.isEmpty && head != "/" {
            if let r = realpath(head, nil) {
                defer { free(r) }
                return ([String(cString: r)] + tail.reversed()).joined(separator: "/").replacingOccurrences(of: "//", with: "/")
            }
            tail.append((head as NSString).lastPathComponent)
            head = (head as NSString).deletingLastPathComponent
        }
        return "/" + tail.reversed().joined(separator: "/")
    }

    /// What the source encrypts, the target must encrypt too: the same rule as a backup into
    /// a repository that holds protected fields ("Fail closed" in SECURITY.md).
    func checkTargetRules(_ manifests: [Manifest]) throws {
        let target = reprotector.target
        for m in manifests {
            for (ns, fields) in (m.protectedFields ?? [:]).sorted(by: { $0.key < $1.key }) {
                let n = Namespace(ns)
                let covered = n.flatMap { target.rule(database: $0.database, collection: $0.collection) }?.fields.map(\.path) ?? []
                if let missing = fields.first(where: { !covered.contains($0) }) {
                    throw RekeyError.targetRulesMissField(backup: m.id, namespace: ns, field: missing)
                }
            }
            for e in m.namespaces where e.type == "timeseries" {
                if let n = Namespace(e.namespace), target.covers(database: n.database, collection: n.collection) {
                    throw RekeyError.unsupportedNamespace(namespace: e.namespace, reason: "time series collections cannot have encrypted fields")
                }
            }
        }
    }

    /// An absent or empty folder becomes a repository; an existing one is taken only when it
    /// holds nothing but backups of this source (a rerun).
    func openDestination(sourceIDs: Set<String>) throws -> Repository {
        let configPath = (destinationPath as NSString).appendingPathComponent(Repository.configName)
        guard FileManager.default.fileExists(atPath: configPath) else { return try Repository(path: destinationPath, create: true) }
        let dst = try Repository(path: destinationPath)
        if let foreign = dst.backupIDs().first(where: { !sourceIDs.contains($0) }) {
            throw RekeyError.destination(path: destinationPath, reason: "it holds backup \(foreign), which the source does not: give an empty or new folder")
        }
        return dst
    }

    /// The manifest a re-key writes for `m`, without its segment infos.
    func expectedProtectedFields(_ m: Manifest) -> [String: [String]] {
        Dictionary(uniqueKeysWithValues: m.namespaces.compactMap { e -> (String, [String])? in
            guard let n = Namespace(e.namespace),
                  let rule = reprotector.target.rule(database: n.database, collection: n.collection) else { return nil }
            return (e.namespace, rule.fields.map(\.path))
        })
    }

    /// A backup complete in the destination must be this backup re-keyed under these rules.
    func checkAlreadyRekeyed(_ m: Manifest, in dst: Repository) throws {
        let d = try dst.manifest(m.id)
        guard d.createdAt == m.createdAt, d.clusterTime == m.clusterTime, d.namespaces.map(\.namespace) == m.namespaces.map(\.namespace),
              d.events.count == m.events.count, d.protectedFields == expectedProtectedFields(m) else {
            throw RekeyError.destination(path: dst.manifestPath(m.id),
                                         reason: "backup \(m.id) there is not this source's backup re-keyed under these rules: give an empty or new folder")
        }
    }

    // MARK: Backups

    func rekeyBackup(_ m: Manifest, index: Int, of total: Int, from src: Repository, into dst: Repository, summary: inout RekeySummary) throws {
        logger.info("re-keying backup", metadata: ["backup": "\(m.id)", "position": "\(index)/\(total)"])
        let writer = try dst.beginBackup(id: m.id)
        let level = Int32(clamping: m.compression.level)
        let expected = m.allSegments.reduce(Int64(0)) { $0 + $1.records }
        var done: Int64 = 0
        let report: (Int64) -> Void = { n in
            done += n
            self.progress?(RekeyProgress(backup: m.id, backupIndex: index, backups: total, records: done, expectedRecords: expected))
        }
        do {
            var out = m
            for (i, e) in m.namespaces.enumerated() {
                guard let n = Namespace(e.namespace) else {
                    throw ArchiveError.badManifest(path: src.manifestPath(m.id), reason: "namespace \(e.namespace) is not db.coll")
                }
                out.namespaces[i].segments = try e.segments.map { s in
                    try rewrite(s, at: src.segmentPath(backup: m.id, s), into: { try writer.segmentWriter(relativePath: s.path, kind: $0, level: level, blockBytes: self.blockBytes) },
                                batch: (batchDocuments, batchBytes), report: report) { docs in
                        let before = self.reprotector.target.encryptedValues
                        let result = try self.reprotector.reprotect(batch: docs, database: n.database, collection: n.collection)
                        self.count(e.namespace, encrypted: self.reprotector.target.encryptedValues - before, failed: result.flatMap(\.1))
                        return result.map(\.0)
                    }
                }
                summary.documents += out.namespaces[i].segments.reduce(0) { $0 + $1.records }
            }
            out.events.segments = try m.events.segments.map { s in
                try rewrite(s, at: src.segmentPath(backup: m.id, s), into: { try writer.segmentWriter(relativePath: s.path, kind: $0, level: level, blockBytes: self.blockBytes) },
                            batch: (1, 0), report: report, reprotectEvents)
            }
            summary.events += out.events.segments.reduce(0) { $0 + $1.records }
            out.protectedFields = expectedProtectedFields(m)
            try writer.commit(out)  // last: from here on the re-keyed backup exists
            summary.segments += out.allSegments.count
            summary.backups.append(m.id)
            logger.info("re-keyed backup", metadata: ["backup": "\(m.id)", "segments": "\(out.allSegments.count)"])
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Change events one by one (each has its own namespace and key), counted under the
    /// event's namespace. Shared by backups' event segments and, later, the change log.
    func reprotectEvents(_ events: [Document]) throws -> [Document] {
        try events.map { event in
            let before = reprotector.target.encryptedValues
            let (sealed, failed) = try reprotector.reprotectEvent(event)
            let ns = Namespace(changeEvent: event)?.description ?? "?"
            count(ns, encrypted: reprotector.target.encryptedValues - before, failed: failed)
            return sealed
        }
    }

    private func count(_ ns: String, encrypted: Int64, failed: [DecryptFailure]) {
        if encrypted > 0 { encryptedPerNamespace[ns, default: 0] += encrypted }
        if !failed.isEmpty { failures.add(ns, failed) }
    }
    private var encryptedPerNamespace: [String: Int64] = [:]

    /// One source segment (described by `s`, read from `path`) re-read, every block checked
    /// and then the whole file against `s`, its records transformed in batches and written by
    /// the writer `makeWriter` opens for the segment's record kind. Backups and, later, the
    /// change log only differ in where the segment is and who names the new file.
    func rewrite(_ s: SegmentInfo, at path: String, into makeWriter: (RecordKind) throws -> SegmentWriter,
                 batch limit: (documents: Int, bytes: Int), report: (Int64) -> Void,
                 _ transform: ([Document]) throws -> [Document]) throws -> SegmentInfo {
        let reader = try SegmentReader(path: path)
        let out = try makeWriter(reader.kind)
        do {
            var batch: [Document] = []
            var bytes = 0
            var records: Int64 = 0
            func flush() throws {
                guard !batch.isEmpty else { return }
                let sealed = try transform(batch)
                precondition(sealed.count == batch.count)
                for d in sealed { try out.append(d.bytes) }
                batch.removeAll(keepingCapacity: true)
                bytes = 0
            }
            while let block = try reader.nextBlock() {
                var index = 0
                try block.forEachRecord { raw in
                    do { batch.append(try Document(bytes: Array(raw))) } catch {
                        throw ArchiveError.damaged(segment: reader.path, offset: block.offset, reason: "record \(index) of the block: \(error)")
                    }
                    index += 1
                    bytes += raw.count
                    if batch.count >= limit.documents || bytes >= limit.bytes { try flush() }
                }
                try flush()
                records += Int64(block.recordCount)
                report(Int64(block.recordCount))
            }
            // The source must be what its manifest says before its re-keyed copy is kept.
            if reader.fileHash.finalize().hexString != s.sha256 {
                throw ArchiveError.damaged(segment: reader.path, offset: 0, reason: "file hash differs from the manifest")
            }
            if records != s.records {
                throw ArchiveError.damaged(segment: reader.path, offset: 0, reason: "\(records) records, the manifest says \(s.records)")
            }
            return try out.finish()
        } catch {
            out.abort()
            throw error
        }
    }

    // MARK: Change segments

    /// The change log, after the backups: each entry in sequence order that the destination
    /// does not have yet. A gap is copied as it is; a segment is re-read and its events
    /// re-protected into the same relative path, then its entry is written last, the source's
    /// with the new segment info and the target rules' `protectedFields`, and `previous` the
    /// hash of the destination's previous entry (the chain is hashed again; sequence numbers,
    /// lineages, cluster-time ranges and resume tokens are kept, so point-in-time restore
    /// reaches the same moments). Entries already in the destination are skipped after a check
    /// that they are the source's.
    func rekeyChanges(from src: Repository, into dst: Repository, summary: inout RekeySummary) throws {
        let log = ChangeLog(repository: src)
        let (entries, unreadable) = log.load()
        if let bad = unreadable.first {
            throw ArchiveError.badManifest(path: log.entryPath(bad.sequence), reason: "\(bad.error)")
        }
        guard !entries.isEmpty else { return }
        let writer = try ChangeLogWriter(repository: dst)
        defer { writer.close() }
        let have = writer.last?.entry.sequence ?? 0
        let present = have > 0 ? Dictionary(ChangeLog(repository: dst).load().entries.map { ($0.entry.sequence, $0.entry) },
                                             uniquingKeysWith: { a, _ in a }) : [:]
        let fields: [String: [String]] = Dictionary(reprotector.target.rules.map { ($0.namespace, $0.fields.map(\.path)) },
                                                    uniquingKeysWith: { a, _ in a })
        for (e, _) in entries {
            if e.sequence <= have {
                guard let d = present[e.sequence], d.kind == e.kind, d.from == e.from, d.to == e.to, d.lineage == e.lineage else {
                    throw RekeyError.destination(path: ChangeLog(repository: dst).entryPath(e.sequence),
                                                 reason: "change log entry \(e.sequence) there is not this source's: give an empty or new folder")
                }
                summary.skippedChangeEntries += 1
                continue
            }
            guard e.sequence == writer.nextSequence else {
                throw ArchiveError.damaged(segment: log.entryPath(writer.nextSequence), offset: 0,
                                           reason: "change log entry \(writer.nextSequence) is missing from the source")
            }
            var copy = e
            if e.kind == .segment, let s = e.segment {
                copy.segment = try rewrite(s, at: log.segmentPath(e), into: { _ in try writer.openSegment(level: 3, blockBytes: self.blockBytes) },
                                           batch: (1, 0), report: { _ in }, reprotectEvents)
                copy.protectedFields = fields
                summary.events += copy.segment?.records ?? 0
                summary.changeSegments += 1
            }
            try writer.append(copy)
            summary.changeEntries += 1
        }
    }
}
