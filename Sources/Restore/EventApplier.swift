import BSON
import Logging
import Mongo

/// Applies change events to a target idempotently, in order: inserts and replaces become
/// upserting replacements, updates become `$set`/`$unset` of the final values, deletes delete
/// by document key. Applying an event twice, or to a document copied after the event, leaves
/// the same result, which is what makes a fuzzy copy plus replay consistent.
public final class EventApplier {
    private let client: Client
    private let mapping: (Namespace) -> Namespace?
    private let logger: Logger
    private var pending: (ns: Namespace, bulk: BulkWrite)?
    public private(set) var applied: Int64 = 0
    public private(set) var skipped: Int64 = 0
    private let flushEvery = 1000

    /// `mapping` gives the target namespace of a source namespace, nil to skip its events.
    public init(client: Client, logger: Logger, mapping: @escaping (Namespace) -> Namespace?) {
        self.client = client
        self.logger = logger
        self.mapping = mapping
    }

    public func apply(_ event: Document) throws {
        guard let type = event["operationType"]?.stringValue, let nsDoc = event["ns"]?.documentValue,
              let db = nsDoc["db"]?.stringValue
        else { skipped += 1; return }
        let source = Namespace(database: db, collection: nsDoc["coll"]?.stringValue ?? "")
        switch type {
        case "insert", "replace", "update", "delete":
            guard let target = mapping(source), let key = event["documentKey"]?.documentValue else { skipped += 1; return }
            let bulk = try bulk(for: target)
            switch type {
            case "insert", "replace":
                guard let full = event["fullDocument"]?.documentValue else { skipped += 1; return }
                if full.keys.contains(where: { $0.hasPrefix("$") }) {
                    // A replacement document may not hold top-level `$` names; a pipeline may.
                    try bulk.updateOne(key, update: ["pipeline": .array([.document(["$replaceWith": .document(["$literal": .document(full)])])])], upsert: true)
                } else {
                    try bulk.replaceOne(key, with: full, upsert: true)
                }
            case "update":
                guard let desc = event["updateDescription"]?.documentValue else { skipped += 1; return }
                for t in desc["truncatedArrays"]?.arrayValue ?? [] {
                    guard let t = t.documentValue, let field = t["field"]?.stringValue, let size = t["newSize"]?.int64Value else { continue }
                    try bulk.updateOne(key, update: ["$push": .document([field: .document(["$each": .array([]), "$slice": .int64(size)])])])
                }
                var update = DocumentBuilder()
                if let set = desc["updatedFields"]?.documentValue, !set.isEmpty { update.append("$set", .document(set)) }
                if let removed = desc["removedFields"]?.arrayValue, !removed.isEmpty {
                    update.append("$unset", .document(Document(elements: removed.compactMap { $0.stringValue }.map { ($0, .string("")) })))
                }
                let u = update.document
                if !u.isEmpty { try bulk.updateOne(key, update: u) }
            default:
                try bulk.deleteOne(key)
            }
            applied += 1
            if bulk.count >= flushEvery { try flush() }
        case "drop":
            try flush()
            if let target = mapping(source) { try client.collection(target).drop() }
            applied += 1
        case "rename":
            try flush()
            if let target = mapping(source), let to = event["to"]?.documentValue, let toDb = to["db"]?.stringValue,
               let toColl = to["coll"]?.stringValue, let dest = mapping(Namespace(database: toDb, collection: toColl)) {
                try client.runCommand(["renameCollection": .string(target.description), "to": .string(dest.description),
                                       "dropTarget": true])
            }
            applied += 1
        case "dropDatabase", "invalidate":
            try flush()
            skipped += 1  // collection drops arrive as their own events first
        default:
            logger.debug("event type not replayed", metadata: ["operationType": "\(type)"])
            skipped += 1
        }
    }

    private func bulk(for ns: Namespace) throws -> BulkWrite {
        if let p = pending, p.ns == ns { return p.bulk }
        try flush()
        let b = client.collection(ns).bulk(ordered: true)
        pending = (ns, b)
        return b
    }

    public func flush() throws {
        guard let p = pending else { return }
        pending = nil
        try p.bulk.execute()
    }
}
