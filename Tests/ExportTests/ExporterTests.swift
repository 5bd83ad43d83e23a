import Archive
import BSON
@testable import Export
import Foundation
import Logging
import XCTest

/// The Exporter on a backup built by hand (no server): namespace events (rename, drop,
/// dropDatabase), collections that events create, `--ns` filtering, capped order, and
/// later change segments up to a target time.
final class ExporterTests: XCTestCase {
    var dir: String!
    let logger = Logger(label: "ciphertail.tests")

    override func setUp() {
        dir = NSTemporaryDirectory() + "exp-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    struct Coll {
        var name: String
        var type = "collection"
        var options = Document()
        var docs: [Document] = []
    }

    static func ts(_ t: UInt32) -> Timestamp { Timestamp(t: t, i: 1) }
    static let t1 = ts(20)

    func event(_ type: String, _ ns: String, _ id: BSONValue? = nil, at t: UInt32, _ extra: KeyValuePairs<String, BSONValue> = [:]) -> Document {
        let parts = ns.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let (db, coll) = (parts[0], parts[1])
        var b = DocumentBuilder()
        b.append("_id", ["_data": .string("token\(t)")])
        b.append("operationType", .string(type))
        b.append("clusterTime", .timestamp(Self.ts(t)))
        b.append("ns", ["db": .string(db), "coll": .string(coll)])
        if let id { b.append("documentKey", ["_id": id]) }
        for (k, v) in extra { b.append(k, v) }
        return b.document
    }

    func set(_ ns: String, _ id: BSONValue, at t: UInt32, _ fields: Document) -> Document {
        event("update", ns, id, at: t, ["updateDescription": ["updatedFields": .document(fields), "removedFields": []]])
    }

    func segment(_ path: String, kind: RecordKind, _ records: [Document]) throws -> SegmentInfo {
        let w = try SegmentWriter(path: path, relativePath: (path as NSString).lastPathComponent, kind: kind, level: 1, blockBytes: 4096)
        for r in records { try w.append(r.bytes) }
        return try w.finish()
    }

    func backup(_ colls: [Coll], events: [Document]) throws -> (Repository, Manifest) {
        let repo = try Repository(path: dir + "/repo", create: true)
        let bw = try repo.beginBackup()
        var entries: [NamespaceEntry] = []
        for (i, c) in colls.enumerated() {
            let (db, name) = ReplayPlan.split(c.name)!
            let data = c.type == "view" ? "" : c.type == "timeseries" ? "system.buckets.\(name)" : name
            var e = NamespaceEntry(namespace: c.name, type: c.type, options: c.options.canonicalJSON,
                                   indexes: c.type == "view" ? [] : [Document(["v": 2, "key": ["_id": 1], "name": "_id_"]).canonicalJSON,
                                                                     Document(["v": 2, "key": ["k": 1], "name": .string("k_\(name)")]).canonicalJSON],
                                   dataCollection: data)
            if c.type != "view" {
                let rel = String(format: "data/%04d-000001.seg", i)
                var info = try segment(bw.path + "/" + rel, kind: .document, c.docs)
                info.path = rel
                e.segments = [info]
                e.documents = Int64(c.docs.count)
                e.bytes = Int64(c.docs.reduce(0) { $0 + $1.count })
            }
            _ = db
            entries.append(e)
        }
        var ev = try segment(bw.path + "/events/000001.seg", kind: .changeEvent, events)
        ev.path = "events/000001.seg"
        let m = Manifest(id: bw.id, createdAt: Date(), completedAt: Date(), source: SourceInfo(hosts: "h", replicaSet: "rs", serverVersion: "6.0.5"),
                         compression: CompressionInfo(), clusterTime: ClusterTimeRange(start: Self.ts(10), end: Self.t1),
                         resumeTokens: ResumeTokens(start: nil, end: nil), namespaces: entries, events: EventLog(count: Int64(events.count), segments: [ev]))
        try bw.commit(m)
        return (repo, m)
    }

    func export(_ repo: Repository, _ m: Manifest, target: Timestamp? = nil, extra: [(path: String, info: SegmentInfo)] = [],
                configure: (inout ExportOptions) -> Void = { _ in }) throws -> (ExportSummary, MongodumpArchiveReader.Prelude, [String: [Document]]) {
        var o = ExportOptions()
        configure(&o)
        let out = MemoryOutput()
        let summary = try Exporter(repository: repo, base: m, target: target ?? m.clusterTime.end, extraEventSegments: extra, options: o, logger: logger)
            .run(to: MongodumpArchiveWriter(output: out))
        let (prelude, docs) = try MongodumpArchiveReader(bytes: out.bytes).readAll()
        XCTAssertEqual(summary.bytes, Int64(out.bytes.count))
        return (summary, prelude, docs.mapValues { $0.map { Document(trusted: $0) } })
    }

    func docs(_ ids: ClosedRange<Int32>) -> [Document] { ids.map { Document(["_id": .int32($0), "k": .int32($0)]) } }

    func testNamespaceEventsFollowTheRestore() throws {
        let colls = [
            Coll(name: "d.a", options: ["validator": ["k": ["$gte": 0]]], docs: docs(1...3)),
            Coll(name: "d.b", docs: docs(10...10)),
            Coll(name: "d.c", options: ["collation": ["locale": "fr"]], docs: docs(20...20)),
            Coll(name: "d.gone", docs: docs(30...31)),
            Coll(name: "d.t", type: "timeseries", options: ["timeseries": ["timeField": "t"]], docs: [Document(["_id": ["$oid": "x"], "control": ["version": 1]])]),
            Coll(name: "d.v", type: "view", options: ["viewOn": "a", "pipeline": []]),
        ]
        let events = [
            set("d.a", 1, at: 11, ["x": 1]),
            event("rename", "d.a", at: 12, ["to": ["db": "d", "coll": "b"]]),
            set("d.b", 2, at: 13, ["y": 2]),
            event("drop", "d.gone", at: 14),
            event("insert", "d.new", 50, at: 15, ["fullDocument": ["_id": 50]]),
            event("drop", "d.c", at: 16),
            event("insert", "d.c", 21, at: 17, ["fullDocument": ["_id": 21]]),
            event("update", "d.nothing", 1, at: 18, ["updateDescription": ["updatedFields": ["z": 1], "removedFields": []]]),
            event("dropDatabase", "d.", at: 19),
            set("d.b", 3, at: 25, ["late": true]),  // after T1: ignored
        ]
        let (repo, m) = try backup(colls, events: events)
        let (summary, prelude, out) = try export(repo, m)
        XCTAssertEqual(prelude.collections.map(\.namespace), ["d.b", "d.c", "d.new", "d.t", "d.v"])
        // Documents no event touched come first, then the replayed ones.
        XCTAssertEqual(out["d.b"], [Document(["_id": 3, "k": 3]), Document(["_id": 1, "k": 1, "x": 1]), Document(["_id": 2, "k": 2, "y": 2])])
        XCTAssertEqual(out["d.c"], [Document(["_id": 21])])
        XCTAssertEqual(out["d.new"], [Document(["_id": 50])])
        XCTAssertEqual(out["d.system.buckets.t"], colls[4].docs)
        XCTAssertEqual(out["d.v"], [])
        XCTAssertEqual(summary.namespaces, ["d.b": 3, "d.c": 1, "d.new": 1, "d.t": 1, "d.v": 0])
        XCTAssertEqual(summary.eventsApplied, 7)  // a rename, 2 drops, 4 document events (not the update of a missing collection)
        let meta = Dictionary(uniqueKeysWithValues: try prelude.collections.map { ($0.collection, try Document(json: $0.metadata)) })
        // The renamed collection keeps its options and indexes under its new name.
        XCTAssertEqual(meta["b"]?["options"], ["validator": ["k": ["$gte": 0]]])
        XCTAssertEqual(meta["b"]?["indexes"]?.arrayValue?.last?.documentValue?["name"], "k_a")
        XCTAssertEqual(meta["b"]?["collectionName"], "b")
        // Re-created by an insert: no options; the recorded indexes, which the restore builds.
        XCTAssertNil(meta["c"]?["options"])
        XCTAssertEqual(meta["c"]?["indexes"]?.arrayValue?.count, 2)
        XCTAssertEqual(meta["new"]?["indexes"], [["v": 2, "key": ["_id": 1], "name": "_id_"]])
        XCTAssertEqual(prelude.collections.first { $0.collection == "t" }?.type, "timeseries")
        XCTAssertEqual(meta["v"]?["options"], ["viewOn": "a", "pipeline": []])
    }

    /// As restore's `--ns`: events of other namespaces are skipped, and a rename happens only
    /// when both names are included.
    func testIncludeFilterAppliesToEventsAndRenames() throws {
        let (repo, m) = try backup([Coll(name: "d.a", docs: docs(1...2)), Coll(name: "d.b", docs: docs(5...5))], events: [
            event("rename", "d.a", at: 11, ["to": ["db": "d", "coll": "b"]]),
            set("d.a", 1, at: 12, ["x": 1]),
            event("insert", "d.b", 6, at: 13, ["fullDocument": ["_id": 6]]),
        ])
        let (_, prelude, out) = try export(repo, m) { $0.include = { db, coll in db == "d" && coll == "a" } }
        XCTAssertEqual(prelude.collections.map(\.namespace), ["d.a"])
        XCTAssertEqual(out["d.a"], [Document(["_id": 2, "k": 2]), Document(["_id": 1, "k": 1, "x": 1])])
    }

    func testCappedCollectionKeepsNaturalOrder() throws {
        let (repo, m) = try backup([Coll(name: "d.cap", options: ["capped": true, "size": 4096], docs: docs(1...5))], events: [
            set("d.cap", 3, at: 11, ["n": 3]),
            event("delete", "d.cap", 2, at: 12),
            event("insert", "d.cap", 6, at: 13, ["fullDocument": ["_id": 6]]),
            event("replace", "d.cap", 4, at: 14, ["fullDocument": ["_id": 4, "r": true]]),
        ])
        let (_, _, out) = try export(repo, m)
        XCTAssertEqual(out["d.cap"], [Document(["_id": 1, "k": 1]), Document(["_id": 3, "k": 3, "n": 3]), Document(["_id": 4, "r": true]),
                                      Document(["_id": 5, "k": 5]), Document(["_id": 6])])
    }

    /// Later change segments: their events after T1 and up to the target count, others not.
    func testExtraEventSegmentsBringTheDataToTheTarget() throws {
        let (repo, m) = try backup([Coll(name: "d.a", docs: docs(1...3))], events: [set("d.a", 1, at: 15, ["v": 15])])
        let later = dir + "/later.seg"
        let info = try segment(later, kind: .changeEvent, [
            set("d.a", 1, at: 18, ["v": 18]),  // at or before T1: the snapshot already has it
            set("d.a", 2, at: 25, ["v": 25]),
            event("delete", "d.a", 3, at: 28),
            set("d.a", 1, at: 35, ["v": 35]),  // after the target
        ])
        let (summary, _, out) = try export(repo, m, target: Self.ts(30), extra: [(later, info)])
        XCTAssertEqual(summary.clusterTime, "30:1")
        XCTAssertEqual(out["d.a"], [Document(["_id": 1, "k": 1, "v": 15]), Document(["_id": 2, "k": 2, "v": 25])])
        // Without a later target, the same segments change nothing past T1.
        XCTAssertEqual(try export(repo, m, extra: [(later, info)]).2["d.a"]?.count, 3)
        XCTAssertThrowsError(try export(repo, m, target: Self.ts(19))) {
            guard case ExportError.targetBeforeSnapshot = $0 else { return XCTFail("\($0)") }
        }
        // A document segment given as change events is refused.
        XCTAssertThrowsError(try export(repo, m, extra: [(repo.segmentPath(backup: m.id, m.namespaces[0].segments[0]), m.namespaces[0].segments[0])])) {
            guard case ExportError.wrongSegmentKind = $0 else { return XCTFail("\($0)") }
        }
    }

    /// Documents no event touches go through as the segment holds them.
    func testUntouchedDocumentsPassThroughUnchanged() throws {
        var body: [UInt8] = [0x10] + Array("_id".utf8) + [0, 1, 0, 0, 0]
        body += [0x0B] + Array("r".utf8) + [0] + Array("a".utf8) + [0] + Array("mi".utf8) + [0]
        let odd = Document(trusted: RawBSON.document(body))
        let (repo, m) = try backup([Coll(name: "d.a", docs: [odd] + docs(2...3))], events: [set("d.a", 2, at: 11, ["v": 1])])
        let (_, _, out) = try export(repo, m)
        XCTAssertEqual(out["d.a"]?.first?.bytes, odd.bytes)
        XCTAssertEqual(out["d.a"]?.count, 3)
    }
}
