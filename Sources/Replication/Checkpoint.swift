import Archive
import BSON
import Foundation
import Mongo

/// Where replication stands, kept in the target cluster (docs/FORMAT.md, "The replication
/// checkpoint"): one document per pipeline in the checkpoint namespace, `_id` the pipeline
/// name, written with `{w: "majority", j: true}` after each change-log entry is applied.
public struct ReplicationCheckpoint: Equatable, Sendable {
    public enum Phase: String, Sendable {
        /// A base snapshot is being loaded; a restart drops the followed namespaces and loads again.
        case seeding
        /// Entries up to `sequence` are applied.
        case following
    }

    public var id: String
    /// The repository (`ciphertail-repo.json` `id`) whose change log this target follows.
    public var repositoryID: String
    public var phase: Phase
    /// The base snapshot the target was (or is being) seeded from, and its consistent point.
    public var seededFrom: String?
    public var seededAt: ClusterTime?
    /// The tailer line and followed namespace patterns of the stretch being followed.
    public var lineage: String?
    public var namespaces: [String]?
    /// The last change-log entry whose events are applied (0: none yet), and the SHA-256 of its
    /// file; nil when that entry is not part of the followed stretch (right after seeding).
    public var sequence: Int64 = 0
    public var entryHash: String?
    /// Events of entry `sequence + 1` already applied (set around renames; 0 otherwise).
    public var entryEvents: Int64 = 0
    /// Every change of the followed namespaces up to this cluster time is in the target.
    public var appliedTo: ClusterTime?
    public var entriesApplied: Int64 = 0
    public var eventsApplied: Int64 = 0
    public var updatedAt = Date()

    public init(id: String, repositoryID: String, phase: Phase) {
        self.id = id
        self.repositoryID = repositoryID
        self.phase = phase
    }

    public static let formatName = "ciphertail-replication"

    public var document: Document {
        var b = DocumentBuilder()
        b.append("_id", .string(id))
        b.append("format", .string(Self.formatName))
        b.append("version", 1)
        b.append("repositoryId", .string(repositoryID))
        b.append("phase", .string(phase.rawValue))
        if let s = seededFrom { b.append("seededFrom", .string(s)) }
        if let t = seededAt { b.append("seededAt", .timestamp(t)) }
        if let l = lineage { b.append("lineage", .string(l)) }
        if let n = namespaces { b.append("namespaces", .array(n.map { .string($0) })) }
        b.append("sequence", .int64(sequence))
        if entryEvents > 0 { b.append("entryEvents", .int64(entryEvents)) }
        if let h = entryHash { b.append("entryHash", .string(h)) }
        if let t = appliedTo { b.append("appliedTo", .timestamp(t)) }
        b.append("entriesApplied", .int64(entriesApplied))
        b.append("eventsApplied", .int64(eventsApplied))
        b.append("updatedAt", .datetime(Int64(updatedAt.timeIntervalSince1970 * 1000)))
        return b.document
    }

    public init(document d: Document) throws {
        guard let id = d["_id"]?.stringValue, d["format"]?.stringValue == Self.formatName,
              let repo = d["repositoryId"]?.stringValue,
              let phase = d["phase"]?.stringValue.flatMap(Phase.init(rawValue:)), let seq = d["sequence"]?.int64Value
        else { throw ReplicationError.badCheckpoint("not a \(Self.formatName) document: \(d.keys.joined(separator: ", "))") }
        self.init(id: id, repositoryID: repo, phase: phase)
        seededFrom = d["seededFrom"]?.stringValue
        seededAt = d["seededAt"]?.timestampValue
        lineage = d["lineage"]?.stringValue
        namespaces = d["namespaces"]?.arrayValue?.compactMap(\.stringValue)
        sequence = seq
        entryHash = d["entryHash"]?.stringValue
        entryEvents = d["entryEvents"]?.int64Value ?? 0
        appliedTo = d["appliedTo"]?.timestampValue
        entriesApplied = d["entriesApplied"]?.int64Value ?? 0
        eventsApplied = d["eventsApplied"]?.int64Value ?? 0
        if case .datetime(let ms)? = d["updatedAt"] { updatedAt = Date(timeIntervalSince1970: Double(ms) / 1000) }
    }
}

/// Reads and writes the checkpoint document in the target.
struct CheckpointStore {
    let namespace: Namespace
    let id: String

    func load(_ client: Client) throws -> ReplicationCheckpoint? {
        let cursor = client.collection(namespace).find(["_id": .string(id)], options: ["limit": 1, "readConcern": ["level": "majority"]])
        guard let d = try cursor.next() else { return nil }
        return try ReplicationCheckpoint(document: d)
    }

    /// Replaces the checkpoint, acknowledged by a majority with journaling. The write is after
    /// the entry's own writes in the target's oplog, so once it is majority-committed, they are.
    func save(_ checkpoint: ReplicationCheckpoint, _ client: Client) throws {
        var c = checkpoint
        c.updatedAt = Date()
        let reply = try client.runCommand([
            "update": .string(namespace.collection),
            "updates": [["q": ["_id": .string(id)], "u": .document(c.document), "upsert": true]],
            "writeConcern": ["w": "majority", "j": true, "wtimeout": 60_000],
        ], database: namespace.database)
        if let first = reply["writeErrors"]?.arrayValue?.first?.documentValue {
            throw ReplicationError.checkpointRefused("\(first["errmsg"]?.stringValue ?? "write error") (code \(first["code"]?.int64Value ?? 0))")
        }
        if let wce = reply["writeConcernError"]?.documentValue {
            // Not acknowledged by a majority in time: retried like a network error.
            throw MongoError(message: "checkpoint write concern: \(wce["errmsg"]?.stringValue ?? "failed")",
                             code: UInt32(truncatingIfNeeded: wce["code"]?.int64Value ?? 64))
        }
    }
}

public enum ReplicationError: Error, CustomStringConvertible {
    /// The target's checkpoint belongs to another repository's change log.
    case otherRepository(target: String, checkpoint: String, repository: String)
    case badCheckpoint(String)
    case checkpointRefused(String)

    public var description: String {
        switch self {
        case .otherRepository(let t, let c, let r):
            return "the target \(t) follows repository \(c), not \(r): drop its checkpoint (and data) or use another pipeline name"
        case .badCheckpoint(let why): return "unreadable replication checkpoint: \(why)"
        case .checkpointRefused(let why): return "the target refused the replication checkpoint: \(why)"
        }
    }
}
