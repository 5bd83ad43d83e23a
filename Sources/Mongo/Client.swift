import BSON
import CBSON
import CMongoC
import Foundation

/// A failure reported by libmongoc or the server. `message` comes from the driver or the
/// server and names hosts and namespaces; ciphertail never puts field values in it.
public struct MongoError: Error, CustomStringConvertible {
    public let domain: UInt32
    public let code: UInt32
    public let message: String
    public let reply: Document?

    public var description: String { message }

    init(_ e: bson_error_t, reply: Document? = nil) {
        domain = e.domain
        code = e.code
        message = Document.message(of: e)
        self.reply = reply
    }

    public init(message: String, code: UInt32 = 0) {
        domain = 0
        self.code = code
        self.message = message
        reply = nil
    }

    /// True when the server answered with this error code (e.g. 26 NamespaceNotFound).
    public func isServerError(_ c: UInt32) -> Bool { code == c }
    /// Connection or server-selection failures: worth retrying, never a data problem.
    public var isNetworkError: Bool {
        domain == MONGOC_ERROR_SERVER_SELECTION.rawValue || domain == MONGOC_ERROR_STREAM.rawValue
    }
}

private let initialize: Void = {
    mongoc_init()
    // libmongoc's default handler prints its debug and info lines (a server monitor failing
    // to reach a host that is down, every half second) on stdout, where they would corrupt a
    // command's --json output. Warnings and worse go to stderr; the rest is dropped.
    mongoc_log_set_handler({ level, domain, message, _ in
        guard level.rawValue <= MONGOC_LOG_LEVEL_WARNING.rawValue, let message else { return }
        let name = domain.map { String(cString: $0) } ?? "mongoc"
        FileHandle.standardError.write(Data("libmongoc \(name): \(String(cString: message))\n".utf8))
    }, nil)
    atexit { mongoc_cleanup() }
}()

/// A parsed connection string. Defaults chosen for a sidecar: bounded server selection so a
/// wrong address fails in seconds, not the driver's 30.
public struct ConnectionString: Sendable {
    public let text: String
    public init(_ text: String) { self.text = text }

    /// The host list, for error messages (never credentials).
    public var hosts: String {
        guard let rest = text.split(separator: "/", maxSplits: 3).dropFirst(1).first(where: { !$0.isEmpty }) else { return text }
        let hostPart = rest.split(separator: "@").last.map(String.init) ?? String(rest)
        return hostPart.split(separator: "?").first.map(String.init) ?? hostPart
    }

    /// The connection string with any password replaced, for manifests and logs.
    public var redacted: String {
        guard let at = text.range(of: "@"), let scheme = text.range(of: "://") else { return text }
        return text[..<scheme.upperBound] + "***" + text[at.lowerBound...]
    }

    func makeURI() throws -> OpaquePointer {
        _ = initialize
        var error = bson_error_t()
        guard let uri = mongoc_uri_new_with_error(text, &error) else {
            throw MongoError(message: "invalid MongoDB connection string: \(Document.message(of: error))")
        }
        if !text.contains("serverSelectionTimeoutMS") {
            mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 10_000)
        }
        if !text.contains("connectTimeoutMS") {
            mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 5_000)
        }
        return uri
    }
}

/// A thread-safe pool of clients; each thread borrows its own client.
public final class ClientPool: @unchecked Sendable {
    private let pool: OpaquePointer
    public let connection: ConnectionString

    public init(_ connection: ConnectionString, appName: String = "ciphertail", maxSize: Int32 = 16) throws {
        let uri = try connection.makeURI()
        defer { mongoc_uri_destroy(uri) }
        var error = bson_error_t()
        guard let pool = mongoc_client_pool_new_with_error(uri, &error) else {
            throw MongoError(error)
        }
        mongoc_client_pool_set_error_api(pool, Int32(MONGOC_ERROR_API_VERSION_2))
        mongoc_client_pool_set_appname(pool, appName)
        mongoc_client_pool_max_size(pool, UInt32(maxSize))
        self.pool = pool
        self.connection = connection
    }

    deinit { mongoc_client_pool_destroy(pool) }

    public func withClient<R>(_ body: (Client) throws -> R) rethrows -> R {
        let raw = mongoc_client_pool_pop(pool)!
        let client = Client(borrowed: raw, connection: connection)
        defer { client.release(); mongoc_client_pool_push(pool, raw) }
        return try body(client)
    }
}

/// One connection to a deployment; use from one thread at a time.
public final class Client {
    let raw: OpaquePointer
    private let owned: Bool
    private var released = false
    public let connection: ConnectionString

    public init(_ connection: ConnectionString, appName: String = "ciphertail") throws {
        let uri = try connection.makeURI()
        defer { mongoc_uri_destroy(uri) }
        var error = bson_error_t()
        guard let c = mongoc_client_new_from_uri_with_error(uri, &error) else { throw MongoError(error) }
        mongoc_client_set_error_api(c, Int32(MONGOC_ERROR_API_VERSION_2))
        mongoc_client_set_appname(c, appName)
        raw = c
        owned = true
        self.connection = connection
    }

    init(borrowed: OpaquePointer, connection: ConnectionString) {
        raw = borrowed
        owned = false
        self.connection = connection
    }

    func release() { released = true }

    deinit { if owned { mongoc_client_destroy(raw) } }

    /// Runs a command on `database` against the primary and returns the server's reply.
    @discardableResult
    public func runCommand(_ command: Document, database: String = "admin") throws -> Document {
        precondition(!released, "client used after it went back to its pool")
        let reply = ct_reply_new()!
        defer { ct_reply_free(reply) }
        var error = bson_error_t()
        let ok = command.withUnsafeBSON { cmd in
            mongoc_client_command_with_opts(raw, database, cmd, nil, nil, reply, &error)
        }
        let doc = Document(copying: reply)
        if !ok { throw MongoError(error, reply: doc) }
        return doc
    }

    public func database(_ name: String) -> Database { Database(client: self, name: name) }

    public func collection(_ namespace: Namespace) -> Collection {
        Collection(client: self, namespace: namespace)
    }

    public func databaseNames() throws -> [String] {
        let reply = try runCommand(["listDatabases": 1, "nameOnly": true])
        return (reply["databases"]?.arrayValue ?? []).compactMap { $0.documentValue?["name"]?.stringValue }
    }

    /// A change stream over the whole deployment.
    public func watch(pipeline: [Document], options: Document) throws -> ChangeStream {
        let pipe = Document(["pipeline": .array(pipeline.map { .document($0) })])
        let stream = pipe.withUnsafeBSON { p in options.withUnsafeBSON { o in mongoc_client_watch(raw, p, o)! } }
        return try ChangeStream(stream, owner: self)
    }
}

/// `database.collection`. The first dot separates them; collection names may hold dots.
public struct Namespace: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public var database: String
    public var collection: String
    public init(database: String, collection: String) {
        self.database = database
        self.collection = collection
    }
    public init?(_ text: String) {
        guard let dot = text.firstIndex(of: "."), dot != text.startIndex, text.index(after: dot) != text.endIndex else { return nil }
        database = String(text[..<dot])
        collection = String(text[text.index(after: dot)...])
    }
    /// The namespace a change event names in `ns` (nil for events without a collection,
    /// such as dropDatabase).
    public init?(changeEvent event: Document) {
        guard let ns = event["ns"]?.documentValue, let db = ns["db"]?.stringValue, let coll = ns["coll"]?.stringValue else { return nil }
        self.init(database: db, collection: coll)
    }
    public var description: String { "\(database).\(collection)" }
    public static func < (a: Namespace, b: Namespace) -> Bool { a.description < b.description }
}

public struct Database {
    let client: Client
    public let name: String

    /// listCollections entries (name, type, options, info), all of them.
    public func listCollections(filter: Document = Document()) throws -> [Document] {
        let db = mongoc_client_get_database(client.raw, name)!
        defer { mongoc_database_destroy(db) }
        let opts = Document(["filter": .document(filter)])
        let cursor = opts.withUnsafeBSON { mongoc_database_find_collections_with_opts(db, $0)! }
        return try Cursor(cursor, retaining: client).all()
    }

    public func drop() throws {
        try client.runCommand(["dropDatabase": 1], database: name)
    }

    /// A change stream over one database; a dropDatabase invalidates it.
    public func watch(pipeline: [Document], options: Document) throws -> ChangeStream {
        let db = mongoc_client_get_database(client.raw, name)!
        defer { mongoc_database_destroy(db) }
        let pipe = Document(["pipeline": .array(pipeline.map { .document($0) })])
        let stream = pipe.withUnsafeBSON { p in options.withUnsafeBSON { o in mongoc_database_watch(db, p, o)! } }
        return try ChangeStream(stream, owner: client)
    }
}
