/// `db.coll`, `db.*`, `*.coll` or `*.*`: which namespaces a backup or restore covers.
public struct NamespacePattern: Hashable, Codable, Sendable, CustomStringConvertible {
    public let database: String
    public let collection: String

    public init(_ text: String) throws {
        guard let ns = Namespace(text) else {
            throw MongoError(message: "namespace pattern '\(text)' is not of the form db.coll or db.*")
        }
        database = ns.database
        collection = ns.collection
        for part in [database, collection] where part.contains("*") && part != "*" {
            throw MongoError(message: "namespace pattern '\(text)': '*' must stand alone for a whole part")
        }
    }

    public var description: String { "\(database).\(collection)" }

    public func matches(_ ns: Namespace) -> Bool {
        (database == "*" || database == ns.database) && (collection == "*" || collection == ns.collection)
    }

    public func matches(database db: String) -> Bool { database == "*" || database == db }
}

extension Array where Element == NamespacePattern {
    /// No patterns means every user namespace.
    public func matches(_ ns: Namespace) -> Bool { isEmpty || contains { $0.matches(ns) } }
}

/// `--ns-from A --ns-to B`: renames namespaces on restore. `*` in A captures that part and
/// `*` in B puts it back (`shop.*` to `shop_copy.*`).
public struct NamespaceMapping: Sendable {
    public let from: NamespacePattern
    public let to: NamespacePattern

    public init(from: String, to: String) throws {
        self.from = try NamespacePattern(from)
        self.to = try NamespacePattern(to)
        if (self.to.database == "*" && self.from.database != "*") || (self.to.collection == "*" && self.from.collection != "*") {
            throw MongoError(message: "--ns-to \(to): '*' there needs a '*' in the same place in --ns-from \(from)")
        }
    }

    public func map(_ ns: Namespace) -> Namespace {
        guard from.matches(ns) else { return ns }
        return Namespace(database: to.database == "*" ? ns.database : to.database,
                         collection: to.collection == "*" ? ns.collection : to.collection)
    }
}
