import Archive
import BSON
import Foundation
import Mongo
import TestSupport
import XCTest

/// Writes keep going while the backup copies. Restoring must give exactly the state at the
/// backup's consistent cluster time T1: the initial data plus every write at or before T1
/// and none after. The reference is built by re-running those same writes on the initial data.
final class ConsistencyTests: XCTestCase {
    final class Writer {
        let client: Client
        let db: String
        var ops: [(time: Timestamp, collection: String, command: Document)] = []
        private let lock = NSLock()
        private var stopped = false
        private var thread: Thread?
        var failure: Error?

        init(db: String) throws {
            client = try TestEnv.client()
            self.db = db
        }

        func start() {
            let t = Thread { [self] in
                var i: Int32 = 0
                var rng = SystemRandomNumberGenerator()
                while true {
                    lock.lock(); let stop = stopped; lock.unlock()
                    if stop { break }
                    i += 1
                    let coll = i % 3 == 0 ? "b" : "a"
                    let id = BSONValue.int32(Int32.random(in: 0..<2000, using: &rng))
                    let newId = BSONValue.int32(100_000 + i)
                    let command: Document
                    switch i % 8 {
                    case 0: command = ["insert": .string(coll), "documents": [["_id": newId, "v": .int32(i), "nested": ["a": .int32(i)], "arr": [1, 2, 3]]]]
                    case 1: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["$set": ["v": .int32(i), "nested.a": .int32(-i)]]]]]
                    case 2: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["$unset": ["nested": ""]]]]]
                    case 3: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["$push": ["arr": .int32(i)], "$inc": ["counter": 1]]]]]
                    case 4: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["$pop": ["arr": 1]]]]]
                    case 5: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["_id": id, "replaced": .int32(i), "arr": [.int32(i)]]]]]
                    case 6: command = ["delete": .string(coll), "deletes": [["q": ["_id": id], "limit": 1]]]
                    default: command = ["update": .string(coll), "updates": [["q": ["_id": id], "u": ["$set": ["arr.1": .int32(i), "s": .string("x\(i)")]], "upsert": true]]]
                    }
                    do {
                        let reply = try client.runCommand(command, database: db)
                        guard let t = reply["operationTime"]?.timestampValue else { continue }
                        lock.lock(); ops.append((t, coll, command)); lock.unlock()
                    } catch {
                        failure = error
                        break
                    }
                }
            }
            thread = t
            t.start()
        }

        func stop() {
            lock.lock(); stopped = true; lock.unlock()
            while thread?.isFinished == false { usleep(10_000) }
        }
    }

    func testWritesDuringTheCopyAreReplayedToTheConsistentPoint() throws {
        let src = TestEnv.uniqueName("cons_src"), dst = TestEnv.uniqueName("cons_dst"), ref = TestEnv.uniqueName("cons_ref")
        defer { dropDatabases(src, dst, ref) }
        let client = try TestEnv.client()
        func initial(_ coll: String) -> [Document] {
            (0..<2000).map { Document(["_id": .int32(Int32($0)), "v": 0, "nested": ["a": 0], "arr": [1, 2, 3, 4]]) }
        }
        let padding = String(repeating: "p", count: 300)
        for db in [src, ref] {
            try insert(client, Namespace(database: db, collection: "a"), initial("a"))
            try insert(client, Namespace(database: db, collection: "b"), initial("b"))
        }
        // Bulk that makes the copy take long enough for writes to overlap it.
        try insert(client, Namespace(database: src, collection: "bulk"), (0..<150_000).map {
            Document(["_id": .int32(Int32($0)), "pad": .string(padding)])
        })

        let writer = try Writer(db: src)
        writer.start()
        usleep(100_000)
        let repo = TestEnv.temporaryDirectory("cons-repo")
        let manifest = try backup(["\(src).a", "\(src).b", "\(src).bulk"], repo: repo) { $0.blockBytes = 256 * 1024 }
        usleep(100_000)
        writer.stop()
        XCTAssertNil(writer.failure)
        let t1 = manifest.clusterTime.end
        let during = writer.ops.filter { $0.time > manifest.clusterTime.start && $0.time <= t1 }.count
        let after = writer.ops.filter { $0.time > t1 }.count
        XCTAssertGreaterThan(during, 20, "the test needs writes during the backup window")
        XCTAssertGreaterThan(after, 0, "the test needs writes after the consistent point")
        XCTAssertGreaterThan(manifest.events.count, 0)

        // The capture itself stops at T1: no archived event lies past it.
        let repository = try Repository(path: repo)
        var archived: Int64 = 0
        for s in manifest.events.segments {
            let reader = try SegmentReader(path: repository.segmentPath(backup: manifest.id, s))
            while let block = try reader.nextBlock() {
                block.forEachRecord { raw in
                    let ts = Document(trusted: Array(raw))["clusterTime"]?.timestampValue
                    XCTAssertNotNil(ts)
                    XCTAssertLessThanOrEqual(ts!, t1)
                    archived += 1
                }
            }
        }
        XCTAssertEqual(archived, manifest.events.count)

        for op in writer.ops where op.time <= t1 {
            try client.runCommand(op.command, database: ref)
        }
        var o = RestoreOptionsFor(repo: repo)
        o.include = [try NamespacePattern("\(src).a"), try NamespacePattern("\(src).b")]
        o.mapping = try NamespaceMapping(from: "\(src).*", to: "\(dst).*")
        _ = try RestoreRunnerFor(o).run()
        for coll in ["a", "b"] {
            try assertSameDocuments(client, Namespace(database: ref, collection: coll), Namespace(database: dst, collection: coll))
        }
        // And the source has moved on past T1, so the comparison is not trivially "equal to now".
        let now = try TestEnv.documents(client, Namespace(database: src, collection: "a")) + TestEnv.documents(client, Namespace(database: src, collection: "b"))
        let restored = try TestEnv.documents(client, Namespace(database: dst, collection: "a")) + TestEnv.documents(client, Namespace(database: dst, collection: "b"))
        XCTAssertNotEqual(now, restored)
    }
}
