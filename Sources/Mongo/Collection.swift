import BSON
import CBSON
import CMongoC

public final class Collection {
    let client: Client
    let raw: OpaquePointer
    public let namespace: Namespace

    init(client: Client, namespace: Namespace) {
        self.client = client
        self.namespace = namespace
        raw = mongoc_client_get_collection(client.raw, namespace.database, namespace.collection)!
    }

    deinit { mongoc_collection_destroy(raw) }

    public func find(_ filter: Document = Document(), options: Document = Document()) -> Cursor {
        let c = filter.withUnsafeBSON { f in options.withUnsafeBSON { o in mongoc_collection_find_with_opts(raw, f, o, nil)! } }
        return Cursor(c, retaining: self)
    }

    public func aggregate(_ pipeline: [Document], options: Document = Document()) -> Cursor {
        let pipe = Document(["pipeline": .array(pipeline.map { .document($0) })])
        let c = pipe.withUnsafeBSON { p in
            options.withUnsafeBSON { o in mongoc_collection_aggregate(raw, MONGOC_QUERY_NONE, p, o, nil)! }
        }
        return Cursor(c, retaining: self)
    }

    /// Index specifications as the server lists them; none when the collection does not exist.
    public func listIndexes() throws -> [Document] {
        let c = Document().withUnsafeBSON { mongoc_collection_find_indexes_with_opts(raw, $0)! }
        do {
            return try Cursor(c, retaining: self).all()
        } catch let e as MongoError where e.isServerError(26) {
            return []
        }
    }

    public func countDocuments(_ filter: Document = Document()) throws -> Int64 {
        var error = bson_error_t()
        let n = filter.withUnsafeBSON { f in mongoc_collection_count_documents(raw, f, nil, nil, nil, &error) }
        if n < 0 { throw MongoError(error) }
        return n
    }

    public func estimatedCount() throws -> Int64 {
        var error = bson_error_t()
        let n = mongoc_collection_estimated_document_count(raw, nil, nil, nil, &error)
        if n < 0 { throw MongoError(error) }
        return n
    }

    /// Drops the collection; a missing one is not an error.
    public func drop() throws {
        do {
            try client.runCommand(["drop": .string(namespace.collection)], database: namespace.database)
        } catch let e as MongoError where e.isServerError(26) {}
    }

    /// A bulk write; unordered by default, documents passed through unvalidated so that
    /// `$`-prefixed and dotted field names survive.
    /// `bypassValidation` is for restores: the source may hold documents its own validator
    /// would now reject (validationLevel moderate), and they must come back as they were.
    public func bulk(ordered: Bool = false, bypassValidation: Bool = false) -> BulkWrite {
        let opts = Document(["ordered": .bool(ordered)])
        let b = opts.withUnsafeBSON { mongoc_collection_create_bulk_operation_with_opts(raw, $0)! }
        if bypassValidation { mongoc_bulk_operation_set_bypass_document_validation(b, true) }
        return BulkWrite(b, owner: self)
    }
}

/// Iterates server results. The driver reuses its document buffer, so `nextRaw` hands out a
/// view valid until the next call, and `next` copies.
extension Collection {
    /// A change stream over this collection; a drop or rename invalidates it.
    public func watch(pipeline: [Document], options: Document) throws -> ChangeStream {
        let pipe = Document(["pipeline": .array(pipeline.map { .document($0) })])
        let stream = pipe.withUnsafeBSON { p in options.withUnsafeBSON { o in mongoc_collection_watch(raw, p, o)! } }
        return try ChangeStream(stream, owner: self)
    }
}

public final class Cursor {
    private let raw: OpaquePointer
    private let owner: AnyObject

    init(_ raw: OpaquePointer, retaining owner: AnyObject) {
        self.raw = raw
        self.owner = owner
    }

    deinit { mongoc_cursor_destroy(raw) }

    public func next() throws -> Document? {
        var out: Document?
        _ = try nextRaw { bson in out = Document(copying: bson) }
        return out
    }

    /// Calls `body` with the raw bytes of the next document; false at the end.
    public func nextRaw(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        try nextRaw { (bson: OpaquePointer) in
            let len = Int(ct_bson_len(bson))
            try body(UnsafeRawBufferPointer(start: bson_get_data(bson), count: len))
        }
    }

    private func nextRaw(_ body: (OpaquePointer) throws -> Void) throws -> Bool {
        var doc: OpaquePointer?
        if mongoc_cursor_next(raw, &doc), let doc {
            try body(doc)
            return true
        }
        var error = bson_error_t()
        var reply: OpaquePointer?
        if mongoc_cursor_error_document(raw, &error, &reply) {
            throw MongoError(error, reply: reply.map { Document(copying: $0) })
        }
        return false
    }

    public func all() throws -> [Document] {
        var out: [Document] = []
        while let d = try next() { out.append(d) }
        return out
    }
}

/// A failed write inside a bulk: its position in the bulk and the server's code.
public struct WriteError {
    public let index: Int
    public let code: Int32
}

extension MongoError {
    /// The per-operation errors of a failed bulk write.
    public var writeErrors: [WriteError] {
        (reply?["writeErrors"]?.arrayValue ?? []).compactMap { v in
            guard let d = v.documentValue, let i = d["index"]?.int64Value, let c = d["code"]?.int64Value else { return nil }
            return WriteError(index: Int(i), code: Int32(c))
        }
    }
}

public struct BulkResult {
    public var inserted: Int64 = 0
    public var matched: Int64 = 0
    public var modified: Int64 = 0
    public var upserted: Int64 = 0
    public var deleted: Int64 = 0
}

/// Queues writes and sends them in as few round trips as the server allows.
public final class BulkWrite {
    private let raw: OpaquePointer
    private let owner: AnyObject
    public private(set) var count = 0
    private static let unvalidated = Document(["validate": false])
    private static let upsertUnvalidated = Document(["upsert": true, "validate": false])

    init(_ raw: OpaquePointer, owner: AnyObject) {
        self.raw = raw
        self.owner = owner
    }

    deinit { mongoc_bulk_operation_destroy(raw) }

    private func check(_ ok: Bool, _ error: bson_error_t) throws {
        if !ok { throw MongoError(error) }
        count += 1
    }

    public func insert(_ doc: Document) throws {
        var error = bson_error_t()
        let ok = doc.withUnsafeBSON { d in
            BulkWrite.unvalidated.withUnsafeBSON { o in mongoc_bulk_operation_insert_with_opts(raw, d, o, &error) }
        }
        try check(ok, error)
    }

    /// Inserts a document straight from a buffer (a record in a decompressed block).
    public func insert(raw bytes: UnsafeRawBufferPointer) throws {
        var error = bson_error_t()
        let ok = Document.withUnsafeBSON(raw: bytes) { d in
            BulkWrite.unvalidated.withUnsafeBSON { o in mongoc_bulk_operation_insert_with_opts(raw, d, o, &error) }
        }
        try check(ok, error)
    }

    public func replaceOne(_ filter: Document, with replacement: Document, upsert: Bool) throws {
        var error = bson_error_t()
        let opts = upsert ? BulkWrite.upsertUnvalidated : BulkWrite.unvalidated
        let ok = filter.withUnsafeBSON { f in
            replacement.withUnsafeBSON { r in
                opts.withUnsafeBSON { o in mongoc_bulk_operation_replace_one_with_opts(raw, f, r, o, &error) }
            }
        }
        try check(ok, error)
    }

    /// `update` is an update document (`$set` ...).
    public func updateOne(_ filter: Document, update: Document, upsert: Bool = false) throws {
        try updateOne(filter, raw: update, upsert: upsert)
    }

    /// An aggregation-pipeline update; libmongoc wants the stages as a BSON array.
    public func updateOne(_ filter: Document, pipeline: [Document], upsert: Bool = false) throws {
        let stages = Document(elements: pipeline.enumerated().map { (String($0.offset), .document($0.element)) })
        try updateOne(filter, raw: stages, upsert: upsert)
    }

    private func updateOne(_ filter: Document, raw update: Document, upsert: Bool) throws {
        var error = bson_error_t()
        let opts = Document(["upsert": .bool(upsert)])
        let ok = filter.withUnsafeBSON { f in
            update.withUnsafeBSON { u in
                opts.withUnsafeBSON { o in mongoc_bulk_operation_update_one_with_opts(raw, f, u, o, &error) }
            }
        }
        try check(ok, error)
    }

    public func deleteOne(_ filter: Document) throws {
        var error = bson_error_t()
        let ok = filter.withUnsafeBSON { f in mongoc_bulk_operation_remove_one_with_opts(raw, f, nil, &error) }
        try check(ok, error)
    }

    @discardableResult
    public func execute() throws -> BulkResult {
        if count == 0 { return BulkResult() }
        let reply = ct_reply_new()!
        defer { ct_reply_free(reply) }
        var error = bson_error_t()
        let ok = mongoc_bulk_operation_execute(raw, reply, &error)
        let doc = Document(copying: reply)
        if ok == 0 { throw MongoError(error, reply: doc) }
        return BulkResult(
            inserted: doc["nInserted"]?.int64Value ?? 0, matched: doc["nMatched"]?.int64Value ?? 0,
            modified: doc["nModified"]?.int64Value ?? 0, upserted: doc["nUpserted"]?.int64Value ?? 0,
            deleted: doc["nRemoved"]?.int64Value ?? 0)
    }
}

/// A change stream. `next` returns nil when no event arrived within maxAwaitTimeMS; the
/// resume token then is the server's post-batch token, which moves even when idle.
public final class ChangeStream {
    private let raw: OpaquePointer
    private let owner: AnyObject

    init(_ raw: OpaquePointer, owner: AnyObject) throws {
        self.raw = raw
        self.owner = owner
        try checkError()
    }

    deinit { mongoc_change_stream_destroy(raw) }

    private func checkError() throws {
        var error = bson_error_t()
        var reply: OpaquePointer?
        if mongoc_change_stream_error_document(raw, &error, &reply) {
            throw MongoError(error, reply: reply.map { Document(copying: $0) })
        }
    }

    public func next() throws -> Document? {
        var doc: OpaquePointer?
        if mongoc_change_stream_next(raw, &doc), let doc {
            return Document(copying: doc)
        }
        try checkError()
        return nil
    }

    public var resumeToken: Document? {
        mongoc_change_stream_get_resume_token(raw).map { Document(copying: $0) }
    }
}
