import BSON
import Foundation
import Logging
import Mongo

/// The lease that lets one `ciphertail run` of a pipeline write (docs/ARCHITECTURE.md,
/// "Beyond one replica set"). It is a document in the source cluster, which is already a
/// replicated, fault-tolerant store: `{_id: <pipeline>, owner, term, expiresAt, renewedAt,
/// host, pid}` in `lease.namespace` (default `ciphertail.leases`), written with majority
/// concern. Expiry is judged by the server's clock (`$$NOW`), so the nodes' clocks need not
/// agree; the holder judges its own validity by its monotonic clock from the moment it sent
/// the renewal, which is never later than the server's view. `term` grows by one at every
/// change of holder and is recorded in every change-log entry: a fencing token.
public final class PipelineLease: @unchecked Sendable {
    public let namespace: Namespace
    public let pipeline: String
    public let ttl: Double
    public let owner: String
    /// Stop writing this long before the lease could expire (the renewal's own travel time,
    /// the commit in progress).
    public let margin: Double
    private let connection: ConnectionString
    private let lock = NSLock()
    private var validUntil: Double = 0
    private var heldTerm: Int64?

    public init(connection: ConnectionString, namespace: Namespace, pipeline: String, ttl: Double) {
        self.connection = connection
        self.namespace = namespace
        self.pipeline = pipeline
        self.ttl = ttl
        margin = max(1, ttl * 0.2)
        owner = "\(ProcessInfo.processInfo.hostName):\(getpid()):\(UUID().uuidString.prefix(8).lowercased())"
    }

    static func monotonic() -> Double { ProcessInfo.processInfo.systemUptime }

    /// The term while the lease is held and not about to expire; nil otherwise.
    public var term: Int64? {
        lock.lock(); defer { lock.unlock() }
        return PipelineLease.monotonic() < validUntil ? heldTerm : nil
    }

    public var isHeld: Bool { term != nil }

    /// Takes the lease if it is free or expired, or renews it if this process holds it.
    /// Returns the term held, or nil when another holder's lease is still running.
    @discardableResult
    public func acquireOrRenew(client: Client) throws -> Int64? {
        let sent = PipelineLease.monotonic()
        let ttlMillis = Int64(ttl * 1000)
        let mine: BSONValue = ["$eq": ["$owner", .string(owner)]]
        let update: BSONValue = [["$set": [
            "term": ["$cond": [mine, "$term", ["$add": [["$ifNull": ["$term", .int64(0)]], .int64(1)]]]],
            "owner": .string(owner),
            "expiresAt": ["$add": ["$$NOW", .int64(ttlMillis)]],
            "renewedAt": "$$NOW",
            "host": .string(ProcessInfo.processInfo.hostName),
            "pid": .int32(getpid()),
        ]]]
        let writeConcern: BSONValue = ["w": "majority", "wtimeout": .int32(Int32(max(1000, ttlMillis / 2)))]
        // Ours, or expired (by the server's clock). The server refuses $expr in an upsert's
        // query, so a lease that does not exist yet is made by a second, upserting call whose
        // query only an absent document matches: when another process made it first, the
        // insert fails on the _id and this one stays standby.
        let takeOrRenew: Document = [
            "findAndModify": .string(namespace.collection),
            "query": ["_id": .string(pipeline), "$expr": ["$or": [mine, ["$lt": ["$expiresAt", "$$NOW"]]]]],
            "update": update, "new": true, "writeConcern": writeConcern,
        ]
        let create: Document = [
            "findAndModify": .string(namespace.collection),
            "query": ["_id": .string(pipeline), "owner": ["$exists": false]],
            "update": update, "upsert": true, "new": true, "writeConcern": writeConcern,
        ]
        do {
            var reply = try client.runCommand(takeOrRenew, database: namespace.database)
            if reply["value"]?.documentValue == nil { reply = try client.runCommand(create, database: namespace.database) }
            guard let doc = reply["value"]?.documentValue, doc["owner"]?.stringValue == owner else { return lost() }
            let term = doc["term"]?.int64Value ?? 1
            lock.lock()
            heldTerm = term
            validUntil = sent + ttl - margin
            lock.unlock()
            return term
        } catch let e as MongoError where e.code == 11000 {
            return lost()
        }
    }

    private func lost() -> Int64? {
        lock.lock(); heldTerm = nil; validUntil = 0; lock.unlock()
        return nil
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait for it to expire.
    public func release(client: Client) {
        lock.lock(); let held = heldTerm != nil; heldTerm = nil; validUntil = 0; lock.unlock()
        guard held else { return }
        let command: Document = [
            "update": .string(namespace.collection),
            "updates": [["q": ["_id": .string(pipeline), "owner": .string(owner)],
                         "u": ["$set": ["expiresAt": .datetime(0), "releasedAt": .datetime(Int64(Date().timeIntervalSince1970 * 1000))]]]],
            "writeConcern": ["w": "majority", "wtimeout": 5000],
        ]
        _ = try? client.runCommand(command, database: namespace.database)
    }

    /// The lease document as the cluster has it (for status output and tests).
    public func current(client: Client) throws -> Document? {
        try client.collection(namespace).find(["_id": .string(pipeline)]).next()
    }
}
