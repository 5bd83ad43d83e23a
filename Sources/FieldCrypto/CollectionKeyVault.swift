import BSON
import Foundation
import Mongo

/// A key vault that is a MongoDB collection, the way drivers keep one
/// (`encryption.__keyVault` by default), ideally on a cluster other than the data's.
/// Drivers configured with the same collection and master key read the same keys.
///
/// Like the drivers' documentation asks, the collection gets a unique index on
/// `keyAltNames` (partial: only keys that have names), so two writers cannot give one
/// name to two keys. Writes wait for a majority of the replica set and its journal; reads
/// use majority read concern, so a key once written is never read back as missing after a
/// failover.
public final class CollectionKeyVault: KeyVault, @unchecked Sendable {
    public let namespace: Namespace
    private let pool: ClientPool
    /// What errors name: the server list without credentials, and the namespace.
    public let location: String

    public static let keyAltNamesIndex = "keyAltNames_1"
    static let duplicateKey: UInt32 = 11000

    /// Connects and makes sure the keyAltNames index exists; an unreachable cluster or a
    /// refused index is an error naming the vault.
    public init(connection: ConnectionString, namespace: Namespace) throws {
        self.namespace = namespace
        self.location = "\(connection.redacted) \(namespace)"
        do {
            pool = try ClientPool(connection, appName: "ciphertail-keyvault", maxSize: 4)
        } catch {
            throw FieldCryptoError.keyVault(path: "\(connection.redacted) \(namespace)", problem: "cannot connect: \(error)")
        }
        _ = try run("create the keyAltNames index") { client in
            try client.runCommand([
                "createIndexes": .string(namespace.collection),
                "indexes": [[
                    "key": ["keyAltNames": 1], "name": .string(Self.keyAltNamesIndex), "unique": true,
                    "partialFilterExpression": ["keyAltNames": ["$exists": true]],
                ]],
                "writeConcern": ["w": "majority"],
            ], database: namespace.database)
        }
    }

    private func run<R>(_ what: String, _ body: (Client) throws -> R) throws -> R {
        do {
            return try pool.withClient(body)
        } catch let e as FieldCryptoError {
            throw e
        } catch {
            throw FieldCryptoError.keyVault(path: location, problem: "\(what): \(error)")
        }
    }

    private func find(_ filter: Document, projection: Document? = nil) throws -> [Document] {
        try run("read keys") { client in
            var command: [(String, BSONValue)] = [
                ("find", .string(namespace.collection)), ("filter", .document(filter)),
                ("readConcern", ["level": "majority"]), ("batchSize", .int32(100_000)),
            ]
            if let projection { command.append(("projection", .document(projection))) }
            var reply = try client.runCommand(Document(elements: command), database: namespace.database)
            var out: [Document] = []
            while true {
                guard let cursor = reply["cursor"]?.documentValue else {
                    throw FieldCryptoError.keyVault(path: location, problem: "find answered without a cursor")
                }
                let batch = (cursor["firstBatch"] ?? cursor["nextBatch"])?.arrayValue ?? []
                out += batch.compactMap(\.documentValue)
                guard case .int64(let id)? = cursor["id"], id != 0 else { return out }
                reply = try client.runCommand(["getMore": .int64(id), "collection": .string(namespace.collection)],
                                              database: namespace.database)
            }
        }
    }

    public func keys(matching query: KeyVaultQuery) throws -> [Document] {
        guard !query.isEmpty else { return [] }
        return try find(query.filter)
    }

    public func keyIds(forAltNames names: [String]) throws -> [String: UUID] {
        guard !names.isEmpty else { return [:] }
        let wanted = Set(names)
        var out: [String: UUID] = [:]
        let docs = try find(["keyAltNames": ["$in": .array(wanted.sorted().map { .string($0) })]],
                            projection: ["_id": 1, "keyAltNames": 1])
        for d in docs {
            guard case .binary(4, let bytes)? = d["_id"], let id = UUID(keyIdBytes: bytes) else { continue }
            for case .string(let n) in d["keyAltNames"]?.arrayValue ?? [] where wanted.contains(n) { out[n] = id }
        }
        return out
    }

    public func insert(_ keyDocument: Document) throws { try insert(contentsOf: [keyDocument]) }

    /// One ordered insert acknowledged by a majority with journaling; a duplicate id or
    /// keyAltName is refused like the file vault refuses it.
    public func insert(contentsOf keyDocuments: [Document]) throws {
        try write(keyDocuments, what: "write") { part in
            ["insert": .string(namespace.collection), "documents": .array(part.map { .document($0) })]
        }
    }

    public func allKeys() throws -> [Document] {
        try find(Document())
    }

    /// Replaces each key by `_id` (majority, journaled). Not atomic across keys: a rotation
    /// that stops half way leaves keys under both master keys, each still readable, and is
    /// finished by running it again.
    public func replace(_ keyDocuments: [Document]) throws {
        try write(keyDocuments, what: "replace") { part in
            ["update": .string(namespace.collection),
             "updates": .array(part.map { ["q": ["_id": $0["_id"]!], "u": .document($0)] })]
        }
    }

    /// One majority, journaled delete by `_id`. MongoDB keeps the deleted documents' bytes
    /// in its oplog and in free pages of the collection's files until they are overwritten:
    /// docs/SECURITY.md says what that means for erasure.
    public func delete(ids: [UUID]) throws -> Int {
        guard !ids.isEmpty else { return 0 }
        let reply = try run("delete keys") { client in
            try client.runCommand([
                "delete": .string(namespace.collection),
                "deletes": [["q": ["_id": ["$in": .array(ids.map { .binary(subtype: 4, data: $0.keyIdBytes) })]], "limit": 0]],
                "writeConcern": ["w": "majority", "j": true],
            ], database: namespace.database)
        }
        if let wce = reply["writeConcernError"]?.documentValue {
            throw FieldCryptoError.keyVault(path: location, problem: "delete not acknowledged by a majority: \(wce["errmsg"]?.stringValue ?? "")")
        }
        return Int(reply["n"]?.int64Value ?? 0)
    }

    /// Ordered writes of checked key documents, 10,000 per command (one command carries at
    /// most 100,000 documents and 48 MB; keys are ~300 bytes), each acknowledged by a
    /// majority with journaling and counted: a write that touched fewer keys than sent fails.
    private func write(_ keyDocuments: [Document], what: String, command: (ArraySlice<Document>) -> Document) throws {
        for d in keyDocuments { _ = try DataKeyInfo(d) }
        for start in stride(from: 0, to: keyDocuments.count, by: 10_000) {
            let part = keyDocuments[start..<min(start + 10_000, keyDocuments.count)]
            let body = command(part).setting("ordered", .bool(true)).setting("writeConcern", ["w": "majority", "j": true])
            let reply = try run("\(what) keys") { try $0.runCommand(body, database: namespace.database) }
            if let first = reply["writeErrors"]?.arrayValue?.first?.documentValue {
                let code = first["code"]?.int64Value
                if code == Int64(Self.duplicateKey) {
                    throw FieldCryptoError.invalidKeyDocument("a key with that id or keyAltName is already in \(location)")
                }
                throw FieldCryptoError.keyVault(path: location, problem: "\(what) refused: \(first["errmsg"]?.stringValue ?? "code \(code ?? 0)")")
            }
            if let wce = reply["writeConcernError"]?.documentValue {
                throw FieldCryptoError.keyVault(path: location, problem: "\(what) not acknowledged by a majority: \(wce["errmsg"]?.stringValue ?? "")")
            }
            guard let n = reply["n"]?.int64Value, n == Int64(part.count) else {
                throw FieldCryptoError.keyVault(path: location, problem: "\(what) touched \(reply["n"]?.int64Value ?? 0) of \(part.count) keys")
            }
        }
    }
}

extension KeySource {
    /// A path, or `mongodb://host/?replicaSet=rs0` with the namespace given apart (default
    /// `encryption.__keyVault`, as drivers name it), or the namespace as the URI's path
    /// (`mongodb://host/encryption.__keyVault?replicaSet=rs0`): MongoDB URIs hold only a
    /// database there, so a `db.coll` path is taken out before libmongoc sees the URI.
    public static func parse(_ text: String, namespace given: String? = nil) throws -> KeySource {
        guard text.hasPrefix("mongodb://") || text.hasPrefix("mongodb+srv://") else { return .file(text) }
        func namespace(_ s: String) throws -> Namespace {
            guard let ns = Namespace(s) else {
                throw FieldCryptoError.invalidArgument("key vault namespace \"\(s)\" is not of the form database.collection")
            }
            return ns
        }
        let rest = text[text.range(of: "://")!.upperBound...]
        if let slash = rest.firstIndex(of: "/") {
            let query = rest[slash...].firstIndex(of: "?")
            let path = String(rest[rest.index(after: slash)..<(query ?? rest.endIndex)])
            if path.contains(".") {
                if let given, given != path {
                    throw FieldCryptoError.invalidArgument("the key vault URI names \(path) but keyVaultNamespace says \(given)")
                }
                let uri = String(text[..<slash]) + "/" + (query.map { String(rest[$0...]) } ?? "")
                return .collection(ConnectionString(uri), try namespace(path))
            }
        }
        return .collection(ConnectionString(text), try namespace(given ?? "encryption.__keyVault"))
    }

    /// Opens the vault: the file must exist (`keys init` makes it); the collection is
    /// reached and indexed.
    public func open() throws -> any KeyVault {
        switch self {
        case .file(let path): return try FileKeyVault.open(at: path)
        case .collection(let c, let ns): return try CollectionKeyVault(connection: c, namespace: ns)
        }
    }

    /// The collection's namespace, which backups must leave out.
    public var collectionNamespace: Namespace? {
        if case .collection(_, let ns) = self { return ns }
        return nil
    }
}

/// Where a pipeline's key vault is: a file, or a MongoDB collection.
public enum KeySource: Equatable, CustomStringConvertible {
    case file(String)
    case collection(ConnectionString, Namespace)

    public var description: String {
        switch self {
        case .file(let p): return p
        case .collection(let c, let ns): return "\(c.redacted) \(ns)"
        }
    }

    public static func == (a: KeySource, b: KeySource) -> Bool { a.description == b.description }
}
