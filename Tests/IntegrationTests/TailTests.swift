import Archive
import BSON
import Capture
import Export
import Foundation
import Mongo
import Restore
import TestSupport
import XCTest

/// A tailer running on its own thread in the test process.
final class TailRun: @unchecked Sendable {
    private let lock = NSLock()
    private var stopping = false
    private var done = false
    private(set) var summary: TailSummary?
    private(set) var error: Error?
    private(set) var alerts: [TailAlert] = []

    init(_ configure: (inout TailOptions) -> Void, repo: String, uri: String = TestEnv.uri) {
        var o = TailOptions(connection: ConnectionString(uri), repository: repo)
        o.segmentSeconds = 0.3
        o.maxBackoffSeconds = 1
        o.idleSeconds = 0.5
        configure(&o)
        let onAlert = o.onAlert
        o.onAlert = { [unowned self] a in lock.lock(); alerts.append(a); lock.unlock(); onAlert?(a) }
        o.shouldStop = { [unowned self] in lock.lock(); defer { lock.unlock() }; return stopping }
        let options = o
        let t = Thread { [self] in
            do {
                let s = try Tailer(options, logger: testLogger).run()
                lock.lock(); summary = s; lock.unlock()
            } catch {
                lock.lock(); self.error = error; lock.unlock()
            }
            lock.lock(); done = true; lock.unlock()
        }
        t.start()
    }

    var finished: Bool { lock.lock(); defer { lock.unlock() }; return done }

    /// Asks it to stop and waits; throws what the run threw.
    @discardableResult
    func stop(timeout: TimeInterval = 120) throws -> TailSummary {
        lock.lock(); stopping = true; lock.unlock()
        try wait(timeout: timeout)
        return summary!
    }

    func wait(timeout: TimeInterval = 120) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !finished {
            if Date() > deadline { XCTFail("tailer did not stop"); return }
            usleep(20_000)
        }
        if let error { throw error }
    }
}

/// The cluster time of the last acknowledged write of this client's session.
func operationTime(_ client: Client) throws -> ClusterTime {
    try client.runCommand(["ping": 1])["operationTime"]!.timestampValue!
}

/// Waits until the change log is durable up to `time` (and, with `snapshot`, a base snapshot exists).
func waitCovered(_ repo: String, _ time: ClusterTime, snapshot: Bool = true, timeout: TimeInterval = 60) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if let r = try? Repository(path: repo) {
            let covered = ChangeLog(repository: r).coverage().intervals.last.map { $0.to >= time } ?? false
            if covered && (!snapshot || !r.backupIDs().isEmpty) { return }
        }
        usleep(50_000)
    }
    XCTFail("the change log in \(repo) did not reach \(time) within \(timeout) s")
}

func restoreAt(_ repo: String, _ time: String, from: String, to: String, extra: [String] = []) -> CLIResult {
    TestEnv.ciphertail(["restore", "--repo", repo, "--uri", TestEnv.uri, "--at", time, "--ns-from", from, "--ns-to", to, "--drop", "--json"] + extra)
}

final class TailTests: XCTestCase {
    /// Tailing, then point-in-time restores to several moments: each equals the source as it
    /// was at that moment, document by document.
    func testPointInTimeRestoreToSeveralMoments() throws {
        let src = TestEnv.uniqueName("tail_src"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<500).map { Document(["_id": .int32(Int32($0)), "v": .int32(Int32($0))]) })
        try client.runCommand(["createIndexes": "c", "indexes": [["key": ["v": 1], "name": "v_1"]]], database: src)
        let repo = TestEnv.temporaryDirectory("tail")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).*")] }, repo: repo)
        var moments: [(ClusterTime, [Document])] = []
        for round in 0..<4 {
            let bulk = client.collection(ns).bulk(ordered: true)
            for i in 0..<200 {
                let id = Int32(round * 1000 + 1000 + i)
                try bulk.insert(["_id": .int32(id), "v": .int32(id)])
            }
            try bulk.execute()
            _ = try client.collection(ns).bulk(ordered: true)
            try client.runCommand(["update": "c", "updates": [["q": ["_id": ["$lt": .int32(Int32(50 * (round + 1)))]], "u": ["$inc": ["n": 1]], "multi": true]]], database: src)
            try client.runCommand(["delete": "c", "deletes": [["q": ["_id": .int32(Int32(400 + round))], "limit": 1]]], database: src)
            moments.append((try operationTime(client), try TestEnv.documents(client, ns)))
            usleep(400_000)
        }
        // A transaction: its events stay in one segment.
        try waitCovered(repo, moments.last!.0)
        let summary = try run.stop()
        XCTAssertGreaterThan(summary.segments, 1)
        XCTAssertEqual(summary.snapshots.count, 1, "one base snapshot on first start")
        for (i, (time, expected)) in moments.enumerated() {
            let r = restoreAt(repo, time.description, from: "\(src).*", to: "\(dst).*")
            XCTAssertEqual(r.status, 0, r.stderr)
            let restored = try TestEnv.documents(client, Namespace(database: dst, collection: "c"))
            XCTAssertEqual(restored.count, expected.count, "moment \(i)")
            XCTAssertEqual(restored.map(\.bytes), expected.map(\.bytes), "moment \(i) differs")
        }
        // Indexes are built after the load.
        let indexes = try client.collection(Namespace(database: dst, collection: "c")).listIndexes().compactMap { $0["name"]?.stringValue }
        XCTAssertTrue(indexes.contains("v_1"))
        // Beyond the log: refused, naming what is restorable.
        let future = ClusterTime(t: moments.last!.0.t + 3600, i: 1)
        let refused = restoreAt(repo, future.description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(refused.status, 5)
        XCTAssertTrue(refused.stderr.contains("restorable:"), refused.stderr)
        // Before the first base snapshot: refused too.
        let early = restoreAt(repo, "2001-01-01T00:00:00Z", from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(early.status, 5)
        XCTAssertTrue(early.stderr.contains("no base snapshot"), early.stderr)
        let list = TestEnv.ciphertail(["list", "--repo", repo, "--json"])
        XCTAssertEqual(list.status, 0)
        XCTAssertTrue(list.stdout.contains("\"windows\""), list.stdout)
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", repo]).status, 0)
    }

    /// The events of one transaction are never split between segments, even when segments
    /// close every 50 ms.
    func testTransactionEventsStayInOneSegment() throws {
        let src = TestEnv.uniqueName("tail_txn")
        defer { dropDatabases(src) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, [["_id": -1]])
        let repo = TestEnv.temporaryDirectory("tailtxn")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).c")]; $0.segmentSeconds = 0.05; $0.baseSnapshots = false }, repo: repo)
        // Three transactions of 300 inserts each, through the shell's pymongo.
        let py = """
        import sys
        from pymongo import MongoClient
        c = MongoClient(sys.argv[1])
        coll = c["\(src)"]["c"]
        for t in range(3):
            with c.start_session() as s:
                with s.start_transaction():
                    for i in range(300):
                        coll.insert_one({"_id": t * 1000 + i, "t": t}, session=s)
        print(c["\(src)"].command("ping")["operationTime"].time, c["\(src)"].command("ping")["operationTime"].inc)
        """
        let script = TestEnv.temporaryDirectory("py") + "/txn.py"
        try py.write(toFile: script, atomically: true, encoding: .utf8)
        let out = TestEnv.shell("\"$(\(TestEnv.root)/ops/pyenv.sh)\" \(script) '\(TestEnv.uri)'")
        XCTAssertEqual(out.status, 0, out.stderr)
        let parts = out.stdout.split(separator: " ").compactMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        try waitCovered(repo, ClusterTime(t: parts[0], i: parts[1]), snapshot: false)
        try run.stop()
        let r = try Repository(path: repo)
        let log = ChangeLog(repository: r)
        var segmentsPerTxn: [String: Set<Int64>] = [:]
        var events = 0
        for e in log.load().entries.map(\.entry) where e.kind == .segment {
            let reader = try SegmentReader(path: log.segmentPath(e))
            while let b = try reader.nextBlock() {
                b.forEachRecord { raw in
                    let d = Document(trusted: Array(raw))
                    guard let txn = d["txnNumber"] else { return }
                    events += 1
                    segmentsPerTxn["\(d["lsid"]?.documentValue?.canonicalJSON ?? "")/\(txn)", default: []].insert(e.sequence)
                }
            }
        }
        XCTAssertEqual(events, 900)
        XCTAssertEqual(segmentsPerTxn.count, 3)
        for (txn, segs) in segmentsPerTxn { XCTAssertEqual(segs.count, 1, "transaction \(txn) spread over segments \(segs)") }
    }

    /// Tailing with encryption rules through the CLI, from an earlier cluster time
    /// (`--start-at`) to `--until`: events are sealed in batches on other threads, yet the log
    /// holds every event once, in cluster-time order, with no protected value in clear, and a
    /// decrypting `restore --at` equals the source. `--start-at` on a repository that already
    /// has a change log is refused.
    func testEncryptedTailFromAnEarlierTimeKeepsOrderAndHidesProtectedValues() throws {
        let src = TestEnv.uniqueName("tail_enc"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "users")
        let dir = TestEnv.temporaryDirectory("tailenc")
        let pipe = dir + "/p.yaml"
        try writeUsersPipeline(pipe, database: src, dir: dir, vault: dir + "/vault", master: dir + "/master.key", ruleNamespace: "\(src).*",
                               fields: ["ssn": "deterministic", "name": "random", "address": "random"])
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipe]).status, 0)
        func user(_ i: Int) -> Document {
            ["_id": .int32(Int32(i)), "userId": .string("u\(i % 150)"), "name": .string("SECRETNAME\(i)"), "ssn": .string("SECRETSSN\(i)"),
             "address": ["city": .string("SECRETCITY\(i)"), "zip": "12345"], "plan": "basic"]
        }
        try insert(client, ns, (0..<10).map(user))
        let base = TestEnv.ciphertail(["backup", "--pipeline", pipe, "--json"])
        XCTAssertEqual(base.status, 0, base.stderr)
        let end = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(base.stdout.utf8)) as? [String: Any])?["clusterTime"] as? [String: Any])["end"] as? [String: Any]
        // The snapshot holds every change up to its consistent point: the log starts right after.
        let t0 = ClusterTime(t: UInt32(end?["t"] as? Int ?? 0), i: UInt32(end?["i"] as? Int ?? 0)).successor

        // After the snapshot: inserts (150 users, so many keys), replacements, updates of a
        // protected field, of a field inside an encrypted subtree and of a plain one, deletes.
        var expected = 0
        for round in 0..<3 {
            try insert(client, ns, (0..<200).map { user(1000 * (round + 1) + $0) })
            let bulk = client.collection(ns).bulk(ordered: true)
            for i in 0..<40 {
                let id = BSONValue.int32(Int32(1000 * (round + 1) + i))
                try bulk.replaceOne(["_id": id], with: user(1000 * (round + 1) + i).setting("plan", "pro"), upsert: false)
                try bulk.updateOne(["_id": id], update: ["$set": ["ssn": .string("SECRETSSN-new\(i)"), "address.city": "SECRETCITY-moved", "n": .int32(Int32(round))]])
                try bulk.deleteOne(["_id": .int32(Int32(1000 * (round + 1) + 100 + i))])
            }
            try bulk.execute()
            expected += 200 + 3 * 40
        }
        let last = try operationTime(client)
        let repo = dir + "/repo"
        let tail = TestEnv.ciphertail(["tail", "--pipeline", pipe, "--no-base-snapshot", "--start-at", t0.description,
                                       "--until", last.description, "--segment-max-age", "0.2", "--json"])
        XCTAssertEqual(tail.status, 0, tail.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(tail.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(summary?["events"] as? Int, expected)
        XCTAssertGreaterThan(summary?["encryptedValues"] as? Int ?? 0, 0)

        let log = ChangeLog(repository: try Repository(path: repo))
        var times: [ClusterTime] = []
        var ids = Set<String>()
        for e in log.load().entries.map(\.entry) where e.kind == .segment {
            let reader = try SegmentReader(path: log.segmentPath(e))
            while let b = try reader.nextBlock() {
                XCTAssertNil(String(decoding: b.data, as: UTF8.self).range(of: "SECRET"), "plaintext in segment \(e.sequence)")
                b.forEachRecord { raw in
                    let event = Document(trusted: Array(raw))
                    times.append(event["clusterTime"]?.timestampValue ?? ClusterTime(t: 0, i: 0))
                    ids.insert(event["_id"]?.documentValue?.canonicalJSON ?? "")
                    if let full = event["fullDocument"]?.documentValue {
                        guard case .binary(6, _)? = full["name"] else { return XCTFail("name not encrypted in \(event.relaxedJSON)") }
                    }
                }
            }
        }
        XCTAssertEqual(times.count, expected)
        XCTAssertEqual(ids.count, expected, "an event is in the log twice")
        XCTAssertEqual(times, times.sorted(), "events out of cluster-time order")
        XCTAssertGreaterThanOrEqual(times.first ?? ClusterTime(t: 0, i: 0), t0)

        let r = TestEnv.ciphertail(["restore", "--pipeline", pipe, "--at", last.description, "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--drop", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "users")).map(\.bytes),
                       try TestEnv.documents(client, ns).map(\.bytes))

        let again = TestEnv.ciphertail(["tail", "--pipeline", pipe, "--no-base-snapshot", "--start-at", t0.description, "--until", last.description])
        XCTAssertEqual(again.status, 4, again.stderr)
        XCTAssertTrue(again.stderr.contains("--start-at"), again.stderr)
    }

    /// Dropping and renaming the followed collection invalidates a collection stream: the
    /// invalidate is recorded and the tailer goes on at database scope, so later writes to a
    /// re-created collection are still captured.
    func testInvalidateIsRecordedAndTheStreamWidens() throws {
        let src = TestEnv.uniqueName("tail_inv"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<10).map { ["_id": .int32(Int32($0))] })
        let repo = TestEnv.temporaryDirectory("tailinv")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).c")] }, repo: repo)
        try waitCovered(repo, try operationTime(client))
        try client.collection(ns).drop()
        try insert(client, ns, (100..<110).map { ["_id": .int32(Int32($0)), "after": true] })
        try client.runCommand(["update": "c", "updates": [["q": ["_id": 100], "u": ["$set": ["x": 1]]]]], database: src)
        let end = try operationTime(client)
        let expected = try TestEnv.documents(client, ns)
        try waitCovered(repo, end)
        try run.stop()
        let log = ChangeLog(repository: try Repository(path: repo))
        let entries = log.load().entries.map(\.entry)
        XCTAssertTrue(entries.contains { $0.scope == "collection" })
        XCTAssertEqual(entries.last?.scope, "database", "after the invalidate the stream follows the database")
        var types: [String] = []
        for e in entries where e.kind == .segment {
            let reader = try SegmentReader(path: log.segmentPath(e))
            while let b = try reader.nextBlock() {
                b.forEachRecord {
                    let d = Document(trusted: Array($0))
                    types.append(d["operationType"]?.stringValue ?? "")
                    if d["operationType"]?.stringValue == "insert", d["fullDocument"]?.documentValue?["after"]?.boolValue == true { types.append("insert-after-drop") }
                }
            }
        }
        XCTAssertTrue(types.contains("drop"))
        XCTAssertTrue(types.contains("invalidate"))
        XCTAssertEqual(types.filter { $0 == "insert-after-drop" }.count, 10, "the inserts after the drop are captured")
        let r = restoreAt(repo, end.description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "c")).map(\.bytes), expected.map(\.bytes))
        // A restart resumes at database scope from the invalidate's successor.
        try insert(client, ns, [["_id": 200]])
        let end2 = try operationTime(client)
        let again = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).c")] }, repo: repo)
        try waitCovered(repo, end2)
        let s2 = try again.stop()
        XCTAssertEqual(s2.events, 1)
        XCTAssertTrue(s2.snapshots.isEmpty, "a resumed line needs no new base snapshot")
    }

    /// An update whose event with its full document passes 16 MB: named (namespace and key)
    /// and, by policy, fatal or a gap after which tailing goes on.
    func testOversizedEventStopsOrBecomesAGap() throws {
        let src = TestEnv.uniqueName("tail_big")
        defer { dropDatabases(src) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        let big = String(repeating: "x", count: 7 << 20)
        try insert(client, ns, [["_id": "k1", "a": .string(big)]])
        for policy in [LargeEventPolicy.stop, .gap] {
            let repo = TestEnv.temporaryDirectory("tailbig")
            let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).*")]; $0.onLargeEvent = policy; $0.baseSnapshots = policy == .gap }, repo: repo)
            try waitCovered(repo, try operationTime(client), snapshot: policy == .gap)
            try client.runCommand(["update": "c", "updates": [["q": ["_id": "k1"], "u": ["$set": ["b": .string(big)]]]]], database: src)
            try insert(client, ns, [["_id": .string("after-\(policy)")]])
            let end = try operationTime(client)
            if policy == .stop {
                XCTAssertThrowsError(try run.wait(timeout: 60)) { e in
                    XCTAssertTrue("\(e)".contains("\(src).c"), "\(e)")
                    XCTAssertTrue("\(e)".contains("k1"), "\(e)")
                }
            } else {
                try waitCovered(repo, end)
                let s = try run.stop()
                XCTAssertEqual(s.gaps, 1)
                let gap = ChangeLog(repository: try Repository(path: repo)).load().entries.map(\.entry).first { $0.kind == .gap }
                XCTAssertTrue(gap?.reason?.contains("k1") ?? false, "\(String(describing: gap))")
                XCTAssertEqual(s.snapshots.count, 2, "a base snapshot at the start and one after the gap")
            }
            try client.runCommand(["update": "c", "updates": [["q": ["_id": "k1"], "u": ["$unset": ["b": 1]]]]], database: src)
        }
    }

    /// With encryption rules, the change log never holds a protected value in clear: not in
    /// full documents, update descriptions or pre-images (a collection with
    /// changeStreamPreAndPostImages gives them); a PITR with the keys gives the source back.
    func testEncryptedTailKeepsPlaintextOutOfTheLogIncludingPreImages() throws {
        let src = TestEnv.uniqueName("tail_enc"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let dir = TestEnv.temporaryDirectory("tailenc")
        let repo = dir + "/repo"
        let pipeline = dir + "/p.yaml"
        try """
        source: {uri: "\(TestEnv.uri)", namespaces: [\(src).*]}
        archive: {repo: \(repo)}
        tail: {segmentMaxAgeSeconds: 0.2, idleCheckpointSeconds: 0.5}
        encryption:
          keyVault: \(dir)/vault
          masterKey: {provider: local, local: {keyFile: \(dir)/master.key}}
          rules:
            - namespace: \(src).users
              subject: userId
              fields:
                - {path: ssn, algorithm: deterministic}
                - {path: profile.name, algorithm: random}
        """.write(toFile: pipeline, atomically: true, encoding: .utf8)
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--pipeline", pipeline]).status, 0)
        let client = try TestEnv.client()
        try client.runCommand(["create": "users", "changeStreamPreAndPostImages": ["enabled": true]], database: src)
        let users = Namespace(database: src, collection: "users")
        try insert(client, users, (0..<20).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 4)"), "ssn": .string("CANARYSSN\(i)"),
                      "profile": ["name": .string("CANARYNAME\(i)"), "age": .int32(Int32(30 + i))]])
        })
        let tail = try startTailProcess(["--pipeline", pipeline])
        defer { if tail.isRunning { kill(tail.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: repo).backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        for i in 0..<10 {
            try client.runCommand(["update": "users", "updates": [["q": ["_id": .int32(Int32(i))],
                                                                 "u": ["$set": ["ssn": .string("CANARYNEWSSN\(i)"), "profile.name": .string("CANARYNEWNAME\(i)")]]]]], database: src)
        }
        try client.runCommand(["delete": "users", "deletes": [["q": ["_id": 15], "limit": 1]]], database: src)
        try client.runCommand(["insert": "users", "documents": [["_id": 100, "userId": "u9", "ssn": "CANARYSSN100", "profile": ["name": "CANARYNAME100"]]]], database: src)
        let point = try operationTime(client)
        let expected = try TestEnv.documents(client, users)
        try waitCovered(repo, point)
        kill(tail.processIdentifier, SIGTERM)
        tail.waitUntilExit()
        XCTAssertEqual(tail.terminationStatus, 0)

        let log = ChangeLog(repository: try Repository(path: repo))
        var preImages = 0
        var events = 0
        for e in log.load().entries.map(\.entry) where e.kind == .segment {
            XCTAssertEqual(e.protectedFields?["\(src).users"], ["ssn", "profile.name"])
            let path = log.segmentPath(e)
            XCTAssertNil(try Data(contentsOf: URL(fileURLWithPath: path)).range(of: Data("CANARY".utf8)))
            let reader = try SegmentReader(path: path)
            while let b = try reader.nextBlock() {
                XCTAssertNil(Data(b.data).range(of: Data("CANARY".utf8)), "plaintext in a block of \(path)")
                b.forEachRecord { raw in
                    events += 1
                    let d = Document(trusted: Array(raw))
                    if let pre = d["fullDocumentBeforeChange"]?.documentValue {
                        preImages += 1
                        if case .binary(6, _)? = pre["ssn"] {} else { XCTFail("a pre-image's ssn is not ciphertext") }
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(events, 12)
        XCTAssertEqual(preImages, 11, "the updates' and the delete's pre-images are captured")
        let r = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--at", point.description, "--drop",
                                    "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse((r.stdout + r.stderr).contains("CANARY"))
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "users")).map(\.bytes), expected.map(\.bytes))
    }

    /// `export --at` reads the same plan as `restore --at`: the archive holds, document by
    /// document, what the point-in-time restore produces.
    func testExportAtAPointInTimeEqualsTheRestoreAtIt() throws {
        let src = TestEnv.uniqueName("tail_exp"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<300).map { Document(["_id": .int32(Int32($0)), "v": .int32(Int32($0))]) })
        let repo = TestEnv.temporaryDirectory("tailexp")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).*")] }, repo: repo)
        try waitCovered(repo, try operationTime(client))
        try client.runCommand(["update": "c", "updates": [["q": ["_id": ["$lt": 100]], "u": ["$set": ["x.y": 1], "$inc": ["v": 1000]], "multi": true]]], database: src)
        try client.runCommand(["delete": "c", "deletes": [["q": ["_id": ["$gte": 250]], "limit": 0]]], database: src)
        try insert(client, ns, [["_id": 1000, "new": true]])
        let point = try operationTime(client)
        try client.runCommand(["delete": "c", "deletes": [["q": ["_id": 1], "limit": 1]]], database: src)  // after the point
        try waitCovered(repo, try operationTime(client))
        try run.stop()
        let out = repo + "/../\(src).archive"
        let export = TestEnv.ciphertail(["export", "--repo", repo, "--at", point.description, "--format", "mongodump-archive", "--out", out, "--json"])
        XCTAssertEqual(export.status, 0, export.stderr)
        let r = restoreAt(repo, point.description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(r.status, 0, r.stderr)
        let (_, docs) = try MongodumpArchiveReader(path: out).readAll()
        let exported = (docs["\(src).c"] ?? []).map { Document(trusted: $0) }.sorted { ($0["_id"]?.int64Value ?? 0) < ($1["_id"]?.int64Value ?? 0) }
        let restored = try TestEnv.documents(client, Namespace(database: dst, collection: "c"))
        XCTAssertEqual(exported.count, 251)
        XCTAssertEqual(exported.map(\.bytes), restored.map(\.bytes))
        let refused = TestEnv.ciphertail(["export", "--repo", repo, "--at", "2001-01-01T00:00:00Z", "--format", "mongodump-archive", "--out", out])
        XCTAssertEqual(refused.status, 5, refused.stderr)
    }
}
