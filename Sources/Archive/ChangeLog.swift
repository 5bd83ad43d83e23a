import BSON
import Digest
import Durable
import Foundation

/// One entry of the change log (docs/FORMAT.md, "The change log"): a change segment the
/// tailer closed, or a gap it could not capture. Entries are numbered 1, 2, 3, ... and each
/// names the SHA-256 of the previous entry's file, so a lost or replaced entry breaks the chain
/// where it happened instead of silently joining what comes before and after it.
public struct ChangeEntry: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case segment
        case gap
    }

    public static let formatName = "ciphertail-changes"
    public var format: String = ChangeEntry.formatName
    public var version: Int = 1
    public var sequence: Int64
    public var kind: Kind
    /// The tailer run line this entry belongs to; a gap starts a new one.
    public var lineage: String
    /// SHA-256 (hex) of the previous entry's file; absent for sequence 1.
    public var previous: String?
    /// For a segment: every change with a cluster time in [from, to] is in this segment (or in
    /// an earlier one of the same unbroken chain). For a gap: the range that was not captured.
    public var from: ClusterTime
    public var to: ClusterTime
    /// The namespace patterns the stream followed (`db.coll`, `db.*`, `*.coll`); empty: every
    /// database except admin, config and local.
    public var namespaces: [String]
    public var createdAt: Date
    /// When the entry was durable, in milliseconds since the Unix epoch (lag measurements).
    public var durableAtMillis: Int64

    /// Segment entries.
    public var segment: SegmentInfo?
    public var events: Int64?
    /// Canonical extended JSON of the token the stream resumes after (`startAfter`).
    public var resumeToken: String?
    /// `cluster`, `database` or `collection`: how wide the stream was when the entry closed.
    public var scope: String?
    public var firstEvent: ClusterTime?
    public var lastEvent: ClusterTime?
    /// Field paths encrypted per namespace in this segment's events (absent: no rules).
    public var protectedFields: [String: [String]]?

    /// With `ciphertail run`: the term of the lease its writer held (a fencing token; terms
    /// never decrease along the log).
    public var leaseTerm: Int64?

    /// Gap entries: why the history is missing, and the server's error code if one was given.
    public var reason: String?
    public var code: Int?

    public init(sequence: Int64, kind: Kind, lineage: String, previous: String?, from: ClusterTime, to: ClusterTime,
                namespaces: [String], createdAt: Date = Date()) {
        self.sequence = sequence
        self.kind = kind
        self.lineage = lineage
        self.previous = previous
        self.from = from
        self.to = to
        self.namespaces = namespaces
        self.createdAt = createdAt
        durableAtMillis = Int64(createdAt.timeIntervalSince1970 * 1000)
    }

    public func encoded() throws -> [UInt8] { Array(try Manifest.encoder.encode(self)) + [0x0A] }

    public static func decode(_ bytes: [UInt8], path: String) throws -> ChangeEntry {
        do {
            let e = try Manifest.decoder.decode(ChangeEntry.self, from: Data(bytes))
            guard e.format == formatName, e.version == 1 else {
                throw ArchiveError.badManifest(path: path, reason: "format \(e.format) version \(e.version) is not \(formatName) version 1")
            }
            if e.kind == .segment {
                guard let s = e.segment else { throw ArchiveError.badManifest(path: path, reason: "segment entry without a segment") }
                guard s.path == ChangeLog.segmentName(e.sequence) else {
                    throw ArchiveError.badManifest(path: path, reason: "segment path \(s.path) is not \(ChangeLog.segmentName(e.sequence))")
                }
            }
            guard e.from <= e.to || e.kind == .gap else {
                throw ArchiveError.badManifest(path: path, reason: "covers \(e.from) after \(e.to)")
            }
            return e
        } catch let e as ArchiveError {
            throw e
        } catch {
            throw ArchiveError.badManifest(path: path, reason: "\(error)")
        }
    }
}

extension ClusterTime {
    /// The next cluster time: the earliest one after this.
    public var successor: ClusterTime { i == .max ? ClusterTime(t: t &+ 1, i: 0) : ClusterTime(t: t, i: i + 1) }
    /// The latest cluster time before this.
    public var predecessor: ClusterTime { i == 0 ? ClusterTime(t: t &- 1, i: .max) : ClusterTime(t: t, i: i - 1) }
}

/// A stretch of cluster time the change log covers without a break: every change to the
/// followed namespaces in [from, to] is in the segments `firstSequence...lastSequence`.
public struct Coverage: Codable, Equatable, Sendable {
    public var from: ClusterTime
    public var to: ClusterTime
    public var firstSequence: Int64
    public var lastSequence: Int64
    public var namespaces: [String]
    public var lineage: String
}

/// Why a chain stops where it stops: a recorded gap, or damage found by reading the log.
public struct ChainBreak: Codable, Equatable, Sendable, CustomStringConvertible {
    public var sequence: Int64
    public var after: ClusterTime?
    public var reason: String
    public var description: String { "entry \(sequence): \(reason)" }
}

/// The change log of a repository: `changes/NNNNNN/NNNNNNNNNNNN.seg` change segments (record
/// kind 2) and `.json` entries. An entry is written after its segment is durable, and its
/// existence is what makes the segment part of the log: a `.seg` without its `.json` is an
/// interrupted close, removed by the next writer.
public final class ChangeLog {
    public let repository: Repository
    public var path: String { (repository.path as NSString).appendingPathComponent("changes") }

    public init(repository: Repository) { self.repository = repository }

    /// Entries per folder, so that a year of one-second segments stays listable.
    static let perFolder: Int64 = 10_000

    public static func folderName(_ sequence: Int64) -> String { String(format: "%06lld", sequence / perFolder) }
    public static func segmentName(_ sequence: Int64) -> String { folderName(sequence) + String(format: "/%012lld.seg", sequence) }
    public static func entryName(_ sequence: Int64) -> String { folderName(sequence) + String(format: "/%012lld.json", sequence) }

    public func entryPath(_ sequence: Int64) -> String { (path as NSString).appendingPathComponent(ChangeLog.entryName(sequence)) }
    public func segmentPath(_ sequence: Int64) -> String { (path as NSString).appendingPathComponent(ChangeLog.segmentName(sequence)) }
    public func segmentPath(_ entry: ChangeEntry) -> String { segmentPath(entry.sequence) }

    /// The sequence numbers that have an entry file, in order.
    public func sequences() -> [Int64] {
        let fm = FileManager.default
        let folders = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter { $0.count == 6 && Int64($0) != nil }.sorted()
        var out: [Int64] = []
        for f in folders {
            let names = (try? fm.contentsOfDirectory(atPath: (path as NSString).appendingPathComponent(f))) ?? []
            for n in names where n.hasSuffix(".json") && n.count == 17 {
                if let s = Int64(n.prefix(12)) { out.append(s) }
            }
        }
        return out.sorted()
    }

    /// Every entry with its file hash, in sequence order; entries that do not load are reported.
    public func load() -> (entries: [(entry: ChangeEntry, hash: String)], unreadable: [(sequence: Int64, error: Error)]) {
        var ok: [(ChangeEntry, String)] = []
        var bad: [(Int64, Error)] = []
        for s in sequences() {
            let p = entryPath(s)
            do {
                let bytes = try Durable.readFile(p)
                let e = try ChangeEntry.decode(bytes, path: p)
                guard e.sequence == s else { throw ArchiveError.badManifest(path: p, reason: "sequence \(e.sequence) in file \(s)") }
                ok.append((e, SHA256.hash(bytes).hexString))
            } catch {
                bad.append((s, error))
            }
        }
        return (ok, bad)
    }

    /// Walks the chain and cuts it wherever it is not whole: a gap entry, an entry that does
    /// not load or is missing, a `previous` hash that does not match, a jump in cluster time, a
    /// change of followed namespaces, or (with `checkSegments`) a segment file that is missing.
    /// `loaded`: what `load()` returned, when the caller also needs the entries (one read of the log).
    public func coverage(checkSegments: Bool = true,
                         of loaded: (entries: [(entry: ChangeEntry, hash: String)], unreadable: [(sequence: Int64, error: Error)])? = nil)
        -> (intervals: [Coverage], breaks: [ChainBreak]) {
        let (entries, unreadable) = loaded ?? load()
        let bad = Dictionary(unreadable.map { ($0.sequence, $0.error) }, uniquingKeysWith: { a, _ in a })
        var intervals: [Coverage] = []
        var breaks: [ChainBreak] = []
        var current: Coverage?
        var last: (entry: ChangeEntry, hash: String)?
        func close(_ b: ChainBreak?) {
            if let c = current { intervals.append(c) }
            current = nil
            if let b { breaks.append(b) }
        }
        let all = Set(entries.map(\.entry.sequence)).union(bad.keys)
        let maxSeq = all.max() ?? 0
        var index = 0
        var seq: Int64 = entries.first.map { min($0.entry.sequence, bad.keys.min() ?? .max) } ?? (bad.keys.min() ?? 1)
        // Entries below the retention marker were removed on purpose: the log starts there.
        if seq > 1 && (Retention.prunedBelow(self).map { seq > $0 } ?? true) {
            breaks.append(ChainBreak(sequence: 1, after: nil, reason: "entries 1 to \(seq - 1) are missing"))
        }
        while seq <= maxSeq {
            defer { seq += 1 }
            if let err = bad[seq] {
                close(ChainBreak(sequence: seq, after: current?.to, reason: "entry does not load: \(err)"))
                last = nil
                continue
            }
            guard index < entries.count, entries[index].entry.sequence == seq else {
                close(ChainBreak(sequence: seq, after: current?.to, reason: "entry \(ChangeLog.entryName(seq)) is missing"))
                last = nil
                continue
            }
            let (e, hash) = entries[index]
            index += 1
            defer { last = (e, hash) }
            if e.kind == .gap {
                close(ChainBreak(sequence: seq, after: current?.to,
                                 reason: "gap from \(e.from) to \(e.to): \(e.reason ?? "history not captured")" + (e.code.map { " (code \($0))" } ?? "")))
                continue
            }
            if checkSegments && !FileManager.default.fileExists(atPath: segmentPath(seq)) {
                close(ChainBreak(sequence: seq, after: current?.to, reason: "segment \(ChangeLog.segmentName(seq)) is missing"))
                continue
            }
            if var c = current, let prev = last, prev.entry.kind == .segment,
               e.previous == prev.hash, e.lineage == c.lineage, e.namespaces == c.namespaces, e.from <= c.to.successor {
                c.to = max(c.to, e.to)
                c.lastSequence = seq
                current = c
                continue
            }
            if current != nil, let prev = last, prev.entry.kind == .segment {
                let why: String
                if e.previous != prev.hash { why = "previous-entry hash does not match entry \(prev.entry.sequence)" }
                else if e.namespaces != current!.namespaces { why = "followed namespaces changed" }
                else if e.lineage != current!.lineage { why = "a new tailer line starts" }
                else { why = "starts at \(e.from), after \(current!.to)" }
                close(ChainBreak(sequence: seq, after: current?.to, reason: why))
            } else {
                close(nil)
            }
            current = Coverage(from: e.from, to: e.to, firstSequence: seq, lastSequence: seq, namespaces: e.namespaces, lineage: e.lineage)
        }
        close(nil)
        return (intervals, breaks)
    }

    /// The interval that covers `time`, if any.
    public static func interval(containing time: ClusterTime, in intervals: [Coverage]) -> Coverage? {
        intervals.first { $0.from <= time && time <= $0.to }
    }
}

/// Appends to the change log. One writer per repository: it holds an exclusive `flock` on
/// `changes/tail.lock` for its lifetime.
public final class ChangeLogWriter {
    public let log: ChangeLog
    private var lockFD: Int32
    public private(set) var last: (entry: ChangeEntry, hash: String)?

    /// Takes the lock, removes what an interrupted writer left (segments without an entry,
    /// temporary files) and finds the last entry.
    public init(repository: Repository) throws {
        log = ChangeLog(repository: repository)
        try Durable.makeDirectory(log.path)
        let lockPath = (log.path as NSString).appendingPathComponent("tail.lock")
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw FileError(operation: "open", path: lockPath, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw ArchiveError.locked(path: lockPath)
        }
        lockFD = fd
        removeInterrupted()
        if let s = log.sequences().last {
            let p = log.entryPath(s)
            let bytes = try Durable.readFile(p)
            last = (try ChangeEntry.decode(bytes, path: p), SHA256.hash(bytes).hexString)
        }
    }

    deinit { close() }

    /// Releases the lock; the writer must not be used afterwards.
    public func close() {
        if lockFD >= 0 { Glibc.close(lockFD) }
        lockFD = -1
    }

    private func removeInterrupted() {
        let fm = FileManager.default
        for f in (try? fm.contentsOfDirectory(atPath: log.path)) ?? [] where f.count == 6 && Int64(f) != nil {
            let dir = (log.path as NSString).appendingPathComponent(f)
            var removed = false
            for n in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] {
                let p = (dir as NSString).appendingPathComponent(n)
                let orphan = n.hasSuffix(".seg") && !fm.fileExists(atPath: String(p.dropLast(4)) + ".json")
                if n.hasSuffix(Durable.temporarySuffix) || orphan {
                    try? fm.removeItem(atPath: p)
                    removed = true
                }
            }
            if removed { try? Durable.fsyncDirectory(dir) }
        }
    }

    public var nextSequence: Int64 { (last?.entry.sequence ?? 0) + 1 }

    /// A writer for the next segment; it becomes part of the log only through `commit`.
    public func openSegment(level: Int32, blockBytes: Int = SegmentFormat.defaultBlockBytes) throws -> SegmentWriter {
        let seq = nextSequence
        try Durable.makeDirectory((log.path as NSString).appendingPathComponent(ChangeLog.folderName(seq)))
        return try SegmentWriter(path: log.segmentPath(seq), relativePath: ChangeLog.segmentName(seq), kind: .changeEvent,
                                 level: level, blockBytes: blockBytes)
    }

    /// Finishes the segment (fsync, rename, fsync the folder), then writes its entry the same
    /// way. Only then is the resume token in the entry the place to continue from.
    @discardableResult
    public func commit(_ writer: SegmentWriter, fill: (inout ChangeEntry) -> Void) throws -> ChangeEntry {
        let info = try writer.finish()
        var e = ChangeEntry(sequence: nextSequence, kind: .segment, lineage: "", previous: last?.hash,
                            from: ClusterTime(t: 0, i: 0), to: ClusterTime(t: 0, i: 0), namespaces: [])
        fill(&e)
        e.segment = info
        e.events = info.records
        return try write(e)
    }

    /// Records a stretch of history that is not in the log.
    @discardableResult
    public func recordGap(lineage: String, from: ClusterTime, to: ClusterTime, namespaces: [String], reason: String, code: Int?,
                          leaseTerm: Int64? = nil) throws -> ChangeEntry {
        try Durable.makeDirectory((log.path as NSString).appendingPathComponent(ChangeLog.folderName(nextSequence)))
        var e = ChangeEntry(sequence: nextSequence, kind: .gap, lineage: lineage, previous: last?.hash, from: from, to: to, namespaces: namespaces)
        e.reason = reason
        e.code = code
        e.leaseTerm = leaseTerm
        return try write(e)
    }

    /// Appends a copy of another log's entry (a re-key): its times and ranges kept, its
    /// sequence and `previous` those of this log. A segment entry's segment must already be
    /// durable at `segmentPath(nextSequence)`.
    @discardableResult
    public func append(_ entry: ChangeEntry) throws -> ChangeEntry {
        if entry.kind == .segment && !FileManager.default.fileExists(atPath: log.segmentPath(nextSequence)) {
            throw ArchiveError.missingSegment(log.segmentPath(nextSequence))
        }
        try Durable.makeDirectory((log.path as NSString).appendingPathComponent(ChangeLog.folderName(nextSequence)))
        return try write(entry, keepTimes: true)
    }

    private func write(_ entry: ChangeEntry, keepTimes: Bool = false) throws -> ChangeEntry {
        var e = entry
        e.sequence = nextSequence
        e.previous = last?.hash
        if !keepTimes {
            let now = Date().timeIntervalSince1970
            e.createdAt = Date(timeIntervalSince1970: now.rounded(.down))  // what the file holds: whole seconds
            e.durableAtMillis = Int64(now * 1000)
        }
        let bytes = try e.encoded()
        try Durable.writeFile(bytes, to: log.entryPath(e.sequence))
        last = (e, SHA256.hash(bytes).hexString)
        return e
    }
}
