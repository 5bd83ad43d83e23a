import Archive
import BSON
import Export
import Foundation
import Mongo
import Pipeline
import Restore
import TestSupport
import XCTest

/// The in-memory replay against the server's: the same events through `EventApplier` on a
/// real mongod and through `InMemoryApplier` must leave the same bytes.
final class InMemoryReplayExportTests: XCTestCase {
    func event(_ type: String, _ db: String, _ id: BSONValue, _ extra: KeyValuePairs<String, BSONValue> = [:]) -> Document {
        var b = DocumentBuilder()
        b.append("operationType", .string(type))
        b.append("ns", ["db": .string(db), "coll": "c"])
        b.append("documentKey", ["_id": id])
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func update(_ db: String, _ id: BSONValue, set: Document = Document(), unset: [String] = [], truncate: [(String, Int32)] = []) -> Document {
        var desc = DocumentBuilder()
        desc.append("updatedFields", .document(set))
        desc.append("removedFields", .array(unset.map { .string($0) }))
        if !truncate.isEmpty { desc.append("truncatedArrays", .array(truncate.map { ["field": .string($0.0), "newSize": .int32($0.1)] })) }
        return event("update", db, id, ["updateDescription": .document(desc.document)])
    }

    func testInMemoryReplayMatchesTheServer() throws {
        let db = TestEnv.uniqueName("ctexport_diff")
        defer { dropDatabases(db) }
        let client = try TestEnv.client()
        let ns = Namespace(database: db, collection: "c")
        let initial: [Document] = [
            Document(["_id": 1, "a": ["b": 1, "c": [1, 2, 3]], "arr": [["x": 1], ["x": 2]], "tail": true]),
            Document(["_id": 2, "m": 0]),
            Document(["_id": 3, "arr": [1]]),
            Document(["_id": 4, "a": ["b": 1, "c": 2], "arr": [1, 2, 3], "s": "scalar", "gone": 1]),
            Document(["_id": 5, "arr": [1, 2, 3, 4, 5], "in": ["list": [1, 2, 3]]]),
            Document(["_id": 6, "a": "now a string", "n": 5, "arr": [1, 2, 3], "v": 0]),
            Document(["_id": 7, "v": 1]),
            Document(["_id": .int32(8), "v": 0]),
            Document(["_id": 9, "d": ["z": 1, "a": 1], "deep": ["x": ["y": ["z": 1]]]]),
            Document(["_id": 10, "arr": [["k": [1, 2]], 5]]),
            Document(["_id": 13, "v": 13]),
        ]
        let events: [Document] = [
            update(db, 1, set: ["a.b": 5, "a.c.1": 20, "arr.1.x": 9, "arr.0.y": "new", "a.new.deep": true]),
            update(db, 2, set: ["z": 1, "b": 2, "10": 3, "9": 4, "m": 5, "n.0.x": 6, "B": 7, "_a": 8, "100": 9, "a10": 10, "a9": 11]),
            update(db, 3, set: ["arr.4": "e", "arr.2.k": true, "arr.11": 11, "arr.10": 10]),
            update(db, 4, unset: ["a.b", "arr.1", "missing", "s.x", "arr.7", "gone", "arr.name", "a.c.d"]),
            update(db, 5, set: ["arr.1": 20], truncate: [("arr", 3), ("in.list", 1), ("fresh", 2), ("new.nested", 0)]),
            update(db, 6, set: ["a.deep": 1, "v": 1], truncate: [("n", 1), ("arr", 2)]),
            update(db, 6, set: ["arr.name": 1]),
            event("insert", db, 11, ["fullDocument": ["_id": 11, "$price": 5, "$gone": 1, "keep": 1, "a.b": "dotted"]]),
            update(db, 11, set: ["$price": 7, "keep": 2, "$new": true], unset: ["$gone"]),
            event("replace", db, 7, ["fullDocument": ["_id": 7, "replaced": true]]),
            event("replace", db, 12, ["fullDocument": ["v": 12, "_id": 12]]),
            event("delete", db, 13),
            update(db, 13, set: ["v": 3]),
            update(db, 99, set: ["v": 3]),
            update(db, .int64(8), set: ["v": 1]),
            update(db, .double(8), set: ["w": 2]),
            update(db, 9, set: ["d.m": 1, "d.b": 2, "deep.x.y.w": 2, "deep.x.a": 3, "deep.q": 4], unset: ["deep.x.y.z"]),
            update(db, 10, set: ["arr.0.k.3": 9, "arr.1.x": 1, "arr.2": ["new": 1]]),
            update(db, 10, set: ["arr.0.k.0": 0]),
        ]
        try insert(client, ns, initial)
        let server = EventApplier(client: client, logger: testLogger) { $0 }
        for e in events { try server.apply(e) }
        try server.flush()

        let memory = InMemoryApplier()
        for d in initial { try memory.hold(d.bytes) }
        for e in events { try memory.apply(e) }

        let expected = try TestEnv.documents(client, ns)
        let got = memory.survivors().map { Document(trusted: $0.bytes) }.sorted { a, b in
            (a["_id"]?.int64Value ?? 0) < (b["_id"]?.int64Value ?? 0)
        }
        XCTAssertEqual(got.count, expected.count)
        XCTAssertEqual(expected.count, 12)
        for (g, e) in zip(got, expected) {
            XCTAssertEqual(g.bytes, e.bytes, "in memory: \(g)\n   server: \(e)")
        }
        XCTAssertEqual(Int64(memory.superseded), server.superseded)
    }
}

/// `ciphertail export` end to end: a backup taken while a thread writes, exported through
/// the CLI, read back with the strict reader, and compared document by document with what
/// `ciphertail restore` of the same backup gives (restore is the reference), plus the
/// prelude's options and indexes against the source.
final class ExportTests: XCTestCase {
    var src: String!, ref: String!, loaded: String!, dir: String!

    override func setUp() {
        src = TestEnv.uniqueName("ctexport_src")
        ref = src.replacingOccurrences(of: "_src", with: "_ref")
        loaded = src.replacingOccurrences(of: "_src", with: "_mr")
        dir = TestEnv.temporaryDirectory("export")
    }

    override func tearDown() {
        dropDatabases(src, ref, loaded)
        try? FileManager.default.removeItem(atPath: dir)
    }

    func seed(_ client: Client) throws {
        let items = Namespace(database: src, collection: "items")
        try insert(client, items, (0..<3000).map { i in
            Document(["_id": .int32(Int32(i)), "sku": .string("sku-\(i)"), "cat": .int32(Int32(i % 7)), "price": .double(Double(i) / 4),
                      "nested": ["a": .int32(Int32(i)), "tags": ["x", "y"]], "arr": [1, 2, 3, 4]])
        })
        try client.runCommand(["createIndexes": "items", "indexes": [
            ["key": ["sku": 1], "name": "sku_unique", "unique": true],
            ["key": ["cat": 1, "price": -1], "name": "cat_price"],
            ["key": ["nested.a": 1], "name": "partial_a", "partialFilterExpression": ["cat": ["$gt": 2]]],
        ]], database: src)
        try client.runCommand(["create": "capped", "capped": true, "size": 4_194_304, "max": 100_000], database: src)
        try insert(client, Namespace(database: src, collection: "capped"), (0..<500).map { Document(["_id": .int32(Int32($0)), "n": .int32(Int32($0))]) })
        try client.runCommand(["create": "validated", "validator": ["$jsonSchema": ["bsonType": "object", "required": ["name"]]],
                               "validationLevel": "moderate"], database: src)
        try insert(client, Namespace(database: src, collection: "validated"), (0..<200).map { Document(["_id": .int32(Int32($0)), "name": .string("n\($0)")]) })
        try client.runCommand(["create": "collated", "collation": ["locale": "fr", "strength": 2]], database: src)
        try insert(client, Namespace(database: src, collection: "collated"), (0..<50).map { Document(["_id": .int32(Int32($0)), "word": .string("Été\($0)")]) })
        try client.runCommand(["createIndexes": "collated", "indexes": [["key": ["word": 1], "name": "word_1"]]], database: src)
        try client.runCommand(["create": "cheap", "viewOn": "items", "pipeline": [["$match": ["price": ["$lt": 10]]]]], database: src)
        try client.runCommand(["create": "ts", "timeseries": ["timeField": "t", "metaField": "m"]], database: src)
        try insert(client, Namespace(database: src, collection: "ts"), (0..<300).map {
            Document(["t": .datetime(1_700_000_000_000 + Int64($0) * 60_000), "m": ["sensor": .int32(Int32($0 % 3))], "v": .int32(Int32($0))])
        })
        // Bulk that makes the copy last long enough for the writes to overlap it.
        let pad = String(repeating: "p", count: 300)
        try insert(client, Namespace(database: src, collection: "zbulk"), (0..<120_000).map { Document(["_id": .int32(Int32($0)), "pad": .string(pad)]) })
    }

    /// Inserts, updates by dotted path, unsets, pushes and pops, replaces, deletes and
    /// upserts on three collections, until stopped.
    func startWriter(_ stop: StopFlag) -> Thread {
        let db = src!
        let t = Thread {
            guard let c = try? TestEnv.client() else { return }
            var i: Int32 = 0
            while !stop.isSet {
                i += 1
                let id = BSONValue.int32(Int32.random(in: 0..<3000))
                let command: Document
                switch i % 10 {
                case 0: command = ["insert": "items", "documents": [["_id": .int32(100_000 + i), "sku": .string("new-\(i)"), "cat": 1, "arr": [1, 2]]]]
                case 1: command = ["update": "items", "updates": [["q": ["_id": id], "u": ["$set": ["price": .double(Double(i)), "nested.a": .int32(-i), "nested.new.deep": .int32(i)]]]]]
                case 2: command = ["update": "items", "updates": [["q": ["_id": id], "u": ["$unset": ["nested.tags": ""]]]]]
                case 3: command = ["update": "items", "updates": [["q": ["_id": id], "u": ["$push": ["arr": .int32(i)], "$inc": ["counter": 1]]]]]
                case 4: command = ["update": "items", "updates": [["q": ["_id": id], "u": ["$pop": ["arr": 1]]]]]
                case 5: command = ["update": "items", "updates": [["q": ["_id": id], "u": ["_id": id, "sku": .string("replaced-\(i)"), "arr": [.int32(i)]]]]]
                case 6: command = ["delete": "items", "deletes": [["q": ["_id": id], "limit": 1]]]
                case 7: command = ["update": "items", "updates": [["q": ["_id": .int32(200_000 + i % 50)], "u": ["$set": ["arr.3": .int32(i), "sku": .string("up-\(i % 50)")]], "upsert": true]]]
                case 8: command = ["update": "capped", "updates": [["q": ["_id": .int32(Int32.random(in: 0..<500))], "u": ["$set": ["n": .int32(-i)]]]]]
                default:
                    command = i % 20 == 9
                        ? ["insert": "capped", "documents": [["_id": .int32(10_000 + i), "n": .int32(i)]]]
                        : ["update": "validated", "updates": [["q": ["_id": .int32(Int32.random(in: 0..<200))], "u": ["$set": ["name": .string("w\(i)"), "extra": .int32(i)]]]]]
                }
                _ = try? c.runCommand(command, database: db)
            }
        }
        t.start()
        return t
    }

    /// The restored reference, in _id order (natural order for capped collections).
    func reference(_ client: Client, _ coll: String, natural: Bool = false) throws -> [Document] {
        let ns = Namespace(database: ref, collection: coll)
        return natural ? try client.collection(ns).find(Document(), options: ["sort": ["$natural": 1]]).all() : try TestEnv.documents(client, ns)
    }

    static func byId(_ docs: [[UInt8]]) -> [Document] {
        docs.map { Document(trusted: $0) }.sorted { ($0["_id"]?.int64Value ?? 0) < ($1["_id"]?.int64Value ?? 0) }
    }

    func testExportMatchesTheRestoreOfTheSameBackup() throws {
        let client = try TestEnv.client()
        try seed(client)
        let repo = dir + "/repo"
        let stop = StopFlag()
        let writer = startWriter(stop)
        usleep(200_000)
        let backup = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src!).*"])
        stop.set()
        while !writer.isFinished { usleep(10_000) }
        XCTAssertEqual(backup.status, 0, backup.stderr)
        let manifest = try Repository(path: repo).latest()
        XCTAssertGreaterThan(manifest.events.count, 20, "the test needs change events to replay")

        let out = dir + "/shop.archive"
        let export = TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", out, "--json"])
        XCTAssertEqual(export.status, 0, export.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(export.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(summary?["file"] as? String, out)
        XCTAssertEqual(summary?["backup"] as? String, manifest.id)
        XCTAssertEqual(summary?["clusterTime"] as? String, manifest.clusterTime.end.description)
        XCTAssertGreaterThan(summary?["eventsApplied"] as? Int ?? 0, 0)
        let attributes = try FileManager.default.attributesOfItem(atPath: out)
        XCTAssertEqual(summary?["bytes"] as? Int, (attributes[.size] as? NSNumber)?.intValue)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasSuffix(".tmp") })

        let restored = TestEnv.ciphertail(["restore", "--repo", repo, "--uri", TestEnv.uri, "--ns-from", "\(src!).*", "--ns-to", "\(ref!).*"])
        XCTAssertEqual(restored.status, 0, restored.stderr)

        let reader = try MongodumpArchiveReader(path: out)
        let (prelude, docs) = try reader.readAll()
        XCTAssertEqual(prelude.header.serverVersion, manifest.source.serverVersion)
        XCTAssertEqual(prelude.header.version, "0.1")
        let byName = Dictionary(uniqueKeysWithValues: prelude.collections.map { ($0.collection, $0) })
        XCTAssertEqual(Set(byName.keys), ["items", "capped", "validated", "collated", "cheap", "ts", "zbulk"])
        XCTAssertEqual(summary?["documents"] as? Int, docs.values.reduce(0) { $0 + $1.count })

        // Documents: byte for byte what the restore produced.
        for coll in ["items", "validated", "collated", "zbulk"] {
            let got = Self.byId(docs["\(src!).\(coll)"] ?? [])
            let want = try reference(client, coll)
            XCTAssertEqual(got.count, want.count, coll)
            XCTAssertGreaterThan(got.count, 0, coll)
            for (g, w) in zip(got, want) where g.bytes != w.bytes {
                XCTFail("\(coll) differs from the restore:\n  export:  \(g.relaxedJSON.prefix(300))\n  restore: \(w.relaxedJSON.prefix(300))")
                break
            }
        }
        // A capped collection keeps its natural order.
        XCTAssertEqual(docs["\(src!).capped"]?.map { Document(trusted: $0) }, try reference(client, "capped", natural: true))
        // A time series comes as its bucket documents, a view without documents.
        XCTAssertNil(docs["\(src!).ts"])
        XCTAssertEqual(Self.byId(docs["\(src!).system.buckets.ts"] ?? []).map(\.bytes).sorted { $0.lexicographicallyPrecedes($1) },
                       try client.collection(Namespace(database: ref, collection: "system.buckets.ts")).find(Document()).all().map(\.bytes).sorted { $0.lexicographicallyPrecedes($1) })
        XCTAssertEqual(docs["\(src!).cheap"], [])
        // The replay reached the events: documents changed during the backup are there.
        XCTAssertTrue(Self.byId(docs["\(src!).items"]!).contains { $0["counter"] != nil || $0["_id"]?.int64Value ?? 0 >= 100_000 })

        // Metadata: the source's options and indexes, as mongodump writes them.
        let options = try TestEnv.collectionOptions(client, database: src)
        for (name, c) in byName {
            let meta = try Document(json: c.metadata)
            XCTAssertEqual(meta["collectionName"], .string(name))
            XCTAssertEqual(c.type, options[name]?["type"]?.stringValue, name)
            XCTAssertEqual(meta["type"], .string(c.type))
            XCTAssertEqual(meta["options"] ?? .document(Document()), options[name]?["options"], name)
            let indexes = c.type == "view" ? [] : try client.collection(Namespace(database: src, collection: name)).listIndexes()
            XCTAssertEqual(meta["indexes"], .array(indexes.map { .document($0) }), name)
        }
        XCTAssertTrue(byName["items"]!.metadata.contains("\"unique\" : true"))
        XCTAssertEqual(byName["capped"].flatMap { try? Document(json: $0.metadata) }?["options"]?.documentValue?["capped"], true)
        XCTAssertNotNil(byName["validated"].flatMap { try? Document(json: $0.metadata) }?["options"]?.documentValue?["validator"])

        try loadWithMongorestore(out, client: client, collections: ["items", "validated", "collated", "zbulk", "capped"])
    }

    /// mongorestore itself, when a binary is at hand (CIPHERTAIL_TEST_MONGORESTORE, or
    /// .cache/mongo-tools/mongorestore); Debian 12 packages none (see docs/FORMAT.md).
    func loadWithMongorestore(_ archive: String, client: Client, collections: [String]) throws {
        let candidates = [ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_MONGORESTORE"], "\(TestEnv.root)/.cache/mongo-tools/mongorestore"]
        guard let tool = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("mongorestore not available: the archive was not loaded with it")
            return
        }
        let r = TestEnv.run(tool, ["--uri", TestEnv.uri, "--archive=\(archive)", "--nsFrom", "\(src!).*", "--nsTo", "\(loaded!).*"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for coll in collections {
            XCTAssertEqual(try TestEnv.documents(client, Namespace(database: loaded, collection: coll)), try reference(client, coll), "mongorestore of \(coll)")
        }
        let a = try TestEnv.collectionOptions(client, database: loaded), b = try TestEnv.collectionOptions(client, database: ref)
        XCTAssertEqual(a, b)
        for coll in collections {
            let names = { (db: String) in try client.collection(Namespace(database: db, collection: coll)).listIndexes().map { $0.removing(["v"]) } }
            XCTAssertEqual(Set(try names(loaded)), Set(try names(ref)), "indexes of \(coll)")
        }
        XCTAssertEqual(try client.collection(Namespace(database: loaded, collection: "cheap")).find(Document()).all().count,
                       try client.collection(Namespace(database: ref, collection: "cheap")).find(Document()).all().count)
    }

    func testUsageErrors() throws {
        let repo = dir + "/repo"
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "one"), [Document(["_id": 1])])
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src!).*"]).status, 0)
        let at = TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", dir + "/a", "--at", "1700000000:1"])
        XCTAssertEqual(at.status, 5, "before every backup: nothing to export")
        XCTAssertTrue(at.stderr.contains("no base snapshot"), at.stderr)
        XCTAssertEqual(TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", dir + "/a",
                                           "--at", "1700000000:1", "--backup", "x"]).status, 64, "--at picks its own base snapshot")
        XCTAssertEqual(TestEnv.ciphertail(["export", "--repo", repo, "--format", "bson", "--out", dir + "/a"]).status, 64)
        XCTAssertEqual(TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", dir + "/a", "--decrypt"]).status, 64)
        XCTAssertEqual(TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", dir + "/a", "--backup", "nope"]).status, 5)
        XCTAssertEqual(TestEnv.ciphertail(["export", "--repo", dir + "/none", "--format", "mongodump-archive", "--out", dir + "/a"]).status, 5)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/a"))
        // A damaged segment fails the export (exit 6) and leaves no file behind.
        let manifest = try Repository(path: repo).latest()
        let seg = try Repository(path: repo).segmentPath(backup: manifest.id, XCTUnwrap(manifest.namespaces.first?.segments.first))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: seg))
        bytes[bytes.count - 70] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: seg))
        let damaged = TestEnv.ciphertail(["export", "--repo", repo, "--format", "mongodump-archive", "--out", dir + "/a"])
        XCTAssertEqual(damaged.status, 6, damaged.stderr)
        XCTAssertTrue(damaged.stderr.contains(seg), damaged.stderr)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasPrefix("a") })
    }

    /// `--out -`: the archive on stdout, the summary on stderr.
    func testArchiveOnStdout() throws {
        let repo = dir + "/repo"
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "one"), (0..<10).map { Document(["_id": .int32(Int32($0))]) })
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src!).*"]).status, 0)
        let out = dir + "/stdout.archive"
        let r = TestEnv.shell("'\(TestEnv.binary)' export --repo '\(repo)' --format mongodump-archive --out - --json > '\(out)'")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("\"documents\" : 10"), r.stderr)
        let (_, docs) = try MongodumpArchiveReader(path: out).readAll()
        XCTAssertEqual(docs["\(src!).one"]?.count, 10)
        // A relative --out lands in the current folder, renamed into place there.
        let rel = TestEnv.shell("cd '\(dir!)' && '\(TestEnv.binary)' export --repo repo --format mongodump-archive --out relative.archive")
        XCTAssertEqual(rel.status, 0, rel.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("relative") }, ["relative.archive"])
        XCTAssertEqual(try MongodumpArchiveReader(path: dir + "/relative.archive").readAll().documents["\(src!).one"]?.count, 10)
    }
}

/// Exports of an encrypted backup: ciphertext kept (no canary anywhere in the archive or
/// the output), or decrypted with the keys to what a decrypting restore gives; values
/// whose key is missing stay ciphertext and are counted, or fail with --strict.
final class EncryptedExportTests: XCTestCase {
    var dir: String!, src: String!, ref: String!

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("export-enc")
        src = TestEnv.uniqueName("ctexport_enc")
        ref = src + "_ref"
        let r = TestEnv.ciphertail(["keys", "init", "--key-vault", dir + "/keyvault", "--master-key-file", dir + "/master.key"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDown() {
        dropDatabases(src, ref)
        try? FileManager.default.removeItem(atPath: dir)
    }

    func pipeline(repo: String) -> String {
        let path = dir + "/pipeline.yaml"
        let yaml = """
        source:
          uri: \(TestEnv.uri)
          namespaces: [\(src!).*]
        archive:
          repo: \(repo)
        encryption:
          keyVault: \(dir!)/keyvault
          masterKey:
            provider: local
            local: {keyFile: \(dir!)/master.key}
          rules:
            - namespace: \(src!).users
              subject: userId
              fields:
                - {path: ssn, algorithm: deterministic}
                - {path: email, algorithm: deterministic}
                - {path: name, algorithm: random}
                - {path: address, algorithm: random}
                - {path: orders.card, algorithm: random}
        """
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8)))
        return path
    }

    static func canary(_ kind: String, _ i: Int) -> String { "CANARY\(kind)\(String(format: "%05d", i))Z" }

    func export(_ args: [String], out: String) -> CLIResult {
        let r = TestEnv.ciphertail(["export", "--format", "mongodump-archive", "--out", out] + args)
        XCTAssertFalse(r.stdout.contains("CANARY") || r.stderr.contains("CANARY"), "plaintext in the output of export")
        return r
    }

    func users(_ archive: String) throws -> [Document] {
        ExportTests.byId(try MongodumpArchiveReader(path: archive).readAll().documents["\(src!).users"] ?? [])
    }

    func testKeepsCiphertextOrDecrypts() throws {
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<300).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 40)"), "name": .string(Self.canary("NAME", i)),
                      "email": .string(Self.canary("MAIL", i)), "ssn": .string(Self.canary("SSN", i)),
                      "address": ["street": .string(Self.canary("STREET", i)), "zip": "12345"],
                      "orders": [["n": 1, "card": .string(Self.canary("CARD", i))]], "visits": .int32(Int32(i))])
        })
        try insert(client, Namespace(database: src, collection: "plain"), [Document(["_id": 1, "note": "not protected"])])
        let repo = dir + "/repo"
        let pipe = pipeline(repo: repo)
        let stop = StopFlag()
        let db = src!
        let writer = Thread {
            guard let c = try? TestEnv.client() else { return }
            var i = 1000
            while !stop.isSet {
                i += 1
                _ = try? c.runCommand(["update": "users", "updates": [[
                    "q": ["_id": .int32(Int32(i % 300))],
                    "u": ["$set": ["ssn": .string(Self.canary("SSN", i)), "address.street": .string(Self.canary("STREET", i)), "visits": .int32(Int32(i))]]]]],
                    database: db)
                _ = try? c.runCommand(["insert": "users", "documents": [["_id": .int32(Int32(i)), "userId": "u-new", "email": .string(Self.canary("MAIL", i))]]],
                                      database: db)
            }
        }
        writer.start()
        let backup = TestEnv.ciphertail(["backup", "--pipeline", pipe])
        stop.set()
        while !writer.isFinished { usleep(10_000) }
        XCTAssertEqual(backup.status, 0, backup.stderr)
        XCTAssertGreaterThan(try Repository(path: repo).latest().events.count, 0, "the test needs change events")

        // --keep-encrypted, and no keys at all: ciphertext only, the same archive.
        let sealed = dir + "/sealed.archive", nokeys = dir + "/nokeys.archive"
        XCTAssertEqual(export(["--pipeline", pipe, "--keep-encrypted"], out: sealed).status, 0)
        let bare = export(["--repo", repo], out: nokeys)
        XCTAssertEqual(bare.status, 0, bare.stderr)
        XCTAssertTrue(bare.stdout.contains("protected fields were written as ciphertext"), bare.stdout)
        for path in [sealed, nokeys] {
            let raw = try Data(contentsOf: URL(fileURLWithPath: path))
            XCTAssertNil(raw.range(of: Data("CANARY".utf8)), "plaintext in \(path)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: sealed)), try Data(contentsOf: URL(fileURLWithPath: nokeys)))
        let sealedUsers = try users(sealed)
        XCTAssertGreaterThan(sealedUsers.count, 300)
        XCTAssertTrue(sealedUsers.allSatisfy { if case .binary(6, _)? = $0["email"] { return true }; return false })

        // With the keys: what a decrypting restore of the same backup gives.
        let open = dir + "/open.archive"
        let decrypted = export(["--pipeline", pipe, "--json"], out: open)
        XCTAssertEqual(decrypted.status, 0, decrypted.stderr)
        XCTAssertTrue(decrypted.stdout.contains("\"decrypted\" : true"), decrypted.stdout)
        let restored = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--ns-from", "\(src!).*", "--ns-to", "\(ref!).*"])
        XCTAssertEqual(restored.status, 0, restored.stderr)
        let openUsers = try users(open)
        let want = try TestEnv.documents(client, Namespace(database: ref, collection: "users"))
        XCTAssertEqual(openUsers.count, want.count)
        XCTAssertEqual(openUsers.map(\.bytes), want.map(\.bytes))
        XCTAssertEqual(openUsers.first?["name"], .string(Self.canary("NAME", 0)))
        XCTAssertFalse(openUsers.contains { $0.contains(binarySubtype: 6) })
        // The sealed archive holds the same documents, encrypted.
        let engine = try KeySettings(keyVault: .file(dir + "/keyvault"), masterKeyFile: dir + "/master.key").openEngine()
        for (s, o) in zip(sealedUsers, openUsers) { XCTAssertEqual(try engine.decryptDocument(s).bytes, o.bytes) }

        // A key vault without these keys: values stay ciphertext and are counted; --strict fails.
        let other = dir + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", other + "/keyvault", "--master-key-file", other + "/master.key"]).status, 0)
        let partial = export(["--repo", repo, "--key-vault", other + "/keyvault", "--master-key-file", other + "/master.key", "--json"], out: dir + "/partial.archive")
        XCTAssertEqual(partial.status, 0, partial.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(partial.stdout.utf8)) as? [String: Any]
        XCTAssertGreaterThan((summary?["undecryptable"] as? [String: Int])?["\(src!).users"] ?? 0, 300)
        XCTAssertNil(try Data(contentsOf: URL(fileURLWithPath: dir + "/partial.archive")).range(of: Data("CANARY".utf8)))
        let strict = export(["--repo", repo, "--key-vault", other + "/keyvault", "--master-key-file", other + "/master.key", "--strict"], out: dir + "/strict.archive")
        XCTAssertEqual(strict.status, 8, strict.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/strict.archive"))
    }
}
