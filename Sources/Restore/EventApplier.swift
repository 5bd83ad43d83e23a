import BSON
import Logging
import Mongo

/// Applies change events to a target idempotently, in order: inserts and replaces become
/// upserting replacements, updates become `$set`/`$unset` of the final values, deletes delete
/// by document key. Applying an event twice, or to a document copied after the event, leaves
/// the same result, which is what makes a fuzzy copy plus replay consistent.
public final class EventApplier {
    enum Op {
        case replace(filter: Document, document: Document)
        case update(filter: Document, update: Document)
        case pipeline(filter: Document, stages: [Document])
        case delete(filter: Document)
    }

    /// Errors an update can meet only because the copied document is newer than the event
    /// (a later event changed a field's type or shape); later events set the final state.
    static let supersededCodes: Set<Int32> = [2, 14, 28, 16837]

    private let client: Client
    private let mapping: (Namespace) -> Namespace?
    private let logger: Logger
    private var pending: (ns: Namespace, ops: [Op])?
    public private(set) var applied: Int64 = 0
    public private(set) var skipped: Int64 = 0
    /// Updates that did not apply to the copied state and were superseded by later events.
    public private(set) var superseded: Int64 = 0
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
            var ops: [Op] = []
            switch type {
            case "insert", "replace":
                guard let full = event["fullDocument"]?.documentValue else { skipped += 1; return }
                ops.append(.replace(filter: key, document: full))
            case "update":
                guard let desc = event["updateDescription"]?.documentValue else { skipped += 1; return }
                for t in desc["truncatedArrays"]?.arrayValue ?? [] {
                    guard let t = t.documentValue, let field = t["field"]?.stringValue, let size = t["newSize"]?.int64Value else { continue }
                    ops.append(.update(filter: key, update: ["$push": .document([field: ["$each": [], "$slice": .int64(size)]])]))
                }
                // `$set`/`$unset` cannot name a top-level field that starts with `$`; those go
                // through $setField/$unsetField in a pipeline, with the name as a literal.
                let set = desc["updatedFields"]?.documentValue?.elements ?? []
                let removed = (desc["removedFields"]?.arrayValue ?? []).compactMap { $0.stringValue }
                var update = DocumentBuilder()
                let plainSet = set.filter { !$0.key.hasPrefix("$") }
                let plainUnset = removed.filter { !$0.hasPrefix("$") }
                if !plainSet.isEmpty { update.append("$set", .document(Document(elements: plainSet.map { ($0.key, $0.value) }))) }
                if !plainUnset.isEmpty { update.append("$unset", .document(Document(elements: plainUnset.map { ($0, .string("")) }))) }
                let u = update.document
                if !u.isEmpty { ops.append(.update(filter: key, update: u)) }
                var stages: [Document] = []
                for (k, v) in set where k.hasPrefix("$") {
                    stages.append(["$replaceWith": ["$setField": ["field": ["$literal": .string(k)], "input": "$$ROOT", "value": ["$literal": v]]]])
                }
                for k in removed where k.hasPrefix("$") {
                    stages.append(["$replaceWith": ["$unsetField": ["field": ["$literal": .string(k)], "input": "$$ROOT"]]])
                }
                if !stages.isEmpty { ops.append(.pipeline(filter: key, stages: stages)) }
            default:
                ops.append(.delete(filter: key))
            }
            if pending?.ns != target { try flush() }
            if pending == nil { pending = (target, []) }
            pending!.ops.append(contentsOf: ops)
            applied += 1
            if pending!.ops.count >= flushEvery { try flush() }
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

    /// Sends the pending operations as one ordered bulk. When an update is superseded, the
    /// bulk stopped there: skip that operation and send the rest.
    public func flush() throws {
        guard let p = pending else { return }
        pending = nil
        var rest = p.ops[...]
        while !rest.isEmpty {
            let bulk = client.collection(p.ns).bulk(ordered: true, bypassValidation: true)
            for op in rest {
                switch op {
                case .replace(let filter, let doc):
                    if doc.keys.contains(where: { $0.hasPrefix("$") }) {
                        // A replacement document may not hold top-level `$` names; a pipeline may.
                        try bulk.updateOne(filter, pipeline: [["$replaceWith": ["$literal": .document(doc)]]], upsert: true)
                    } else {
                        try bulk.replaceOne(filter, with: doc, upsert: true)
                    }
                case .update(let filter, let update): try bulk.updateOne(filter, update: update)
                case .pipeline(let filter, let stages): try bulk.updateOne(filter, pipeline: stages)
                case .delete(let filter): try bulk.deleteOne(filter)
                }
            }
            do {
                try bulk.execute()
                return
            } catch let e as MongoError {
                guard let first = e.writeErrors.first, EventApplier.supersededCodes.contains(first.code) else { throw e }
                switch rest[rest.startIndex + first.index] {
                case .update, .pipeline: break
                default: throw e
                }
                superseded += 1
                rest = rest[(rest.startIndex + first.index + 1)...]
            }
        }
    }
}
