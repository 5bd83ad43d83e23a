import Archive
import BSON
import Capture
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import Replication
import Restore
import TestSupport
import XCTest

/// The replication target: a second replica set (CIPHERTAIL_TEST_TARGET_URI, started by
/// ops/test.sh as ct-target on port 27119). The tests are skipped without it.
enum TargetEnv {
    static var uri: String? {
        guard let u = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_TARGET_URI"], !u.isEmpty else { return nil }
        return u
    }

    /// The ops/mongod.sh name (the replica set name) and port of the target.
    static var nameAndPort: (String, Int)? {
        guard let u = uri, let c = URLComponents(string: u), let port = c.port,
              let name = c.queryItems?.first(where: { $0.name == "replicaSet" })?.value else { return nil }
        return (name, port)
    }

    static func client() throws -> Client { try Client(ConnectionString(uri!)) }
}

/// A CLI process that can be killed, with its stdout and stderr in files (posix_spawn, as
/// `TestEnv.run`: the files are opened by the child itself).
final class CLIProcess {
    let pid: pid_t
    let out: String
    let err: String
    private var status: Int32?

    init(_ args: [String], logs: String, environment: [String: String] = [:]) throws {
        out = logs + ".out"
        err = logs + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([TestEnv.binary] + args).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, TestEnv.binary, &actions, nil, argv, envp)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        pid = child
    }

    var stderr: String { (try? String(contentsOfFile: err, encoding: .utf8)) ?? "" }
    var stdout: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }

    var isRunning: Bool {
        if status != nil { return false }
        var s: Int32 = 0
        if waitpid(pid, &s, WNOHANG) == pid { status = s; return false }
        return true
    }

    func kill9() {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        _ = wait(timeout: 60)
    }

    private func wait(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning && Date() < deadline { usleep(20_000) }
        guard let s = status else { return nil }
        return (s & 0x7F) == 0 ? (s >> 8) & 0xFF : 128 + (s & 0x7F)
    }

    /// SIGTERM, then the exit status (SIGKILL after `timeout`).
    @discardableResult
    func terminate(timeout: TimeInterval = 120) -> Int32 {
        if isRunning { kill(pid, SIGTERM) }
        if let code = wait(timeout: timeout) { return code }
        kill9()
        return -1
    }
}

/// Writes to the users (protected fields, canaries) and orders (plain) collections on its own
/// thread until stopped: inserts, updates with `$inc` and `$set`, deletes, and re-inserts.
final class UserLoad: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private(set) var writes = 0
    private let done = DispatchSemaphore(value: 0)

    init(database: String, firstID: Int) {
        let t = Thread { [self] in
            defer { done.signal() }
            guard let client = try? TestEnv.client() else { return }
            var next = firstID
            while true {
                lock.lock(); let stop = stopped; lock.unlock()
                if stop { return }
                let id = Int32(Int.random(in: 0..<next))
                var cmd: Document
                switch Int.random(in: 0..<10) {
                case 0..<4:
                    next += 1
                    cmd = ["insert": "users", "documents": [.document(ReplicationTests.user(next))]]
                case 4..<6:
                    cmd = ["update": "users", "updates": [["q": ["_id": .int32(id)], "u": ["$inc": ["visits": 1], "$set": ["email": .string(ReplicationTests.canary("MAIL2", Int(id)))]]]]]
                case 6:
                    cmd = ["update": "users", "updates": [["q": ["_id": .int32(id)], "u": ["$set": ["address.street": .string(ReplicationTests.canary("STREET2", Int(id))), "note": "moved"]]]]]
                case 7:
                    cmd = ["update": "orders", "updates": [["q": ["_id": .int32(id % 50)], "u": ["$inc": ["qty": 1]], "upsert": true]]]
                case 8:
                    cmd = ["delete": "users", "deletes": [["q": ["_id": .int32(id)], "limit": 1]]]
                default:
                    cmd = ["update": "users", "updates": [["q": ["_id": .int32(id)], "u": .document(ReplicationTests.user(Int(id))), "upsert": true]]]
                }
                _ = try? client.runCommand(cmd, database: database)
                lock.lock(); writes += 1; lock.unlock()
                usleep(2_000)
            }
        }
        t.start()
    }

    func stop() { lock.lock(); let was = stopped; stopped = true; lock.unlock(); if !was { done.wait() } }
}

final class ReplicationTests: XCTestCase {
    var dir: String!
    var src: String!
    var target: String!
    var checkpointDB: String!
    var pipe: String!
    var keySettings: KeySettings!
    var processes: [CLIProcess] = []

    static let protectedFields = ["ssn", "email", "name", "address"]

    static func canary(_ kind: String, _ i: Int) -> String { "CANARY\(kind)\(String(format: "%05d", i))Z" }

    static func user(_ i: Int) -> Document {
        ["_id": .int32(Int32(i)), "userId": .string("u\(i % 40)"), "name": .string(canary("NAME", i)), "email": .string(canary("MAIL", i)),
         "ssn": .string(canary("SSN", i)), "address": ["street": .string(canary("STREET", i)), "zip": "12345"], "visits": .int32(0),
         "plain": .string("visible-\(i)")]
    }

    override func setUpWithError() throws {
        guard let t = TargetEnv.uri else { throw XCTSkip("CIPHERTAIL_TEST_TARGET_URI is not set (ops/test.sh starts the target replica set)") }
        target = t
        dir = TestEnv.temporaryDirectory("repl")
        src = TestEnv.uniqueName("repl_src")
        checkpointDB = TestEnv.uniqueName("repl_ckpt")
        XCTAssertEqual(TestEnv.ciphertail(["keys", "init", "--key-vault", dir + "/keyvault", "--master-key-file", dir + "/master.key"]).status, 0)
        keySettings = KeySettings(keyVault: .file(dir + "/keyvault"), masterKeyFile: dir + "/master.key")
        pipe = dir + "/pipeline.yaml"
        try writeUsersPipeline(pipe, database: src, dir: dir, vault: dir + "/keyvault", master: dir + "/master.key",
                               ruleNamespace: "\(src!).users",
                               fields: ["ssn": "deterministic", "email": "deterministic", "name": "random", "address": "random"],
                               extra: "name: repl-test\nreplication: {uri: \"\(t)\", checkpointNamespace: \(checkpointDB!).replication}\n")
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<200).map(Self.user))
        try insert(client, Namespace(database: src, collection: "orders"), (0..<50).map { ["_id": .int32(Int32($0)), "qty": .int32(1)] })
    }

    override func tearDown() {
        for p in processes where p.isRunning { p.kill9() }
        guard TargetEnv.uri != nil else { return }
        dropDatabases(src)
        if let c = try? TargetEnv.client() {
            try? c.database(src).drop()
            try? c.database(checkpointDB).drop()
        }
    }

    func startTail() throws -> CLIProcess {
        let p = try CLIProcess(["tail", "--pipeline", pipe, "--segment-max-age", "0.2", "--idle-checkpoint", "0.5"], logs: dir + "/tail-\(processes.count)")
        processes.append(p)
        return p
    }

    func startReplicate(_ extra: [String] = []) throws -> CLIProcess {
        let p = try CLIProcess(["replicate", "--pipeline", pipe, "--poll-interval", "0.1", "--log-level", "info"] + extra,
                               logs: dir + "/replicate-\(processes.count)")
        processes.append(p)
        return p
    }

    func waitForBaseSnapshot() throws {
        let deadline = Date().addingTimeInterval(120)
        while ((try? Repository(path: dir + "/repo").backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(try Repository(path: dir + "/repo").backupIDs().isEmpty, "no base snapshot")
    }

    func checkpoint() -> ReplicationCheckpoint? {
        guard let c = try? TargetEnv.client(),
              let d = try? c.collection(Namespace(database: checkpointDB, collection: "replication")).find(["_id": "repl-test"]).next() else { return nil }
        return try? ReplicationCheckpoint(document: d)
    }

    /// Waits (generously) until the target's checkpoint reaches `time`.
    func waitApplied(_ time: ClusterTime, timeout: TimeInterval = 240, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let cp = checkpoint(), cp.phase == .following, let at = cp.appliedTo, at >= time { return }
            usleep(100_000)
        }
        XCTFail("replication did not reach \(time) within \(timeout) s; checkpoint \(String(describing: checkpoint()))", file: file, line: line)
    }

    /// Three transactions through pymongo: each inserts two users and updates one.
    func runTransactions() {
        let py = """
        import sys
        from pymongo import MongoClient
        c = MongoClient(sys.argv[1])
        db = c["\(src!)"]
        for t in range(3):
            with c.start_session() as s:
                with s.start_transaction():
                    for k in range(2):
                        i = 90000 + t * 10 + k
                        db.users.insert_one({"_id": i, "userId": "u%d" % (i % 40), "name": "CANARYTXNNAME%dZ" % i,
                                             "email": "CANARYTXNMAIL%dZ" % i, "ssn": "CANARYTXNSSN%dZ" % i,
                                             "address": {"street": "CANARYTXNSTREET%dZ" % i, "zip": "1"}, "visits": 0,
                                             "plain": "txn-%d" % i}, session=s)
                    db.users.update_one({"_id": t}, {"$inc": {"visits": 100}, "$set": {"ssn": "CANARYTXNSSNUPD%dZ" % t}}, session=s)
                    db.orders.update_one({"_id": t}, {"$set": {"txn": t}}, session=s)
        """
        let script = dir + "/txn.py"
        try? py.write(toFile: script, atomically: true, encoding: .utf8)
        let out = TestEnv.shell("\"$(\(TestEnv.root)/ops/pyenv.sh)\" \(script) '\(TestEnv.uri)'")
        XCTAssertEqual(out.status, 0, out.stderr)
    }

    /// Source and target, collection by collection: the same ids; in users the unprotected
    /// fields equal and every protected one ciphertext (subtype 6); no canary in any document of
    /// the target; decrypted with the pipeline's keys, the target equals the source byte for byte.
    /// Stops the load, waits until the replica has applied its last write, and compares.
    @discardableResult
    func stopAndAssertCaughtUp(_ load: UserLoad, file: StaticString = #filePath, line: UInt = #line) throws -> ClusterTime {
        load.stop()
        let end = try operationTime(try TestEnv.client())
        waitApplied(end, file: file, line: line)
        try assertTargetMatchesSource(file: file, line: line)
        return end
    }

    func assertTargetMatchesSource(file: StaticString = #filePath, line: UInt = #line) throws {
        let source = try TestEnv.client(), dest = try TargetEnv.client()
        let names = try source.database(src).listCollections().compactMap { $0["name"]?.stringValue }.sorted()
        let targetNames = try dest.database(src).listCollections().compactMap { $0["name"]?.stringValue }.sorted()
        XCTAssertEqual(names, targetNames, "collections", file: file, line: line)
        let decryptor = LenientDecryptor(engine: try keySettings.openEngine())
        for name in names {
            let ns = Namespace(database: src, collection: name)
            let a = try TestEnv.documents(source, ns), b = try TestEnv.documents(dest, ns)
            XCTAssertEqual(a.map { $0["_id"]!.int64Value ?? -1 }, b.map { $0["_id"]!.int64Value ?? -1 }, "ids of \(name)", file: file, line: line)
            XCTAssertGreaterThan(a.count, 0, file: file, line: line)
            for (s, t) in zip(a, b) {
                XCTAssertNil(Data(t.bytes).range(of: Data("CANARY".utf8)), "plaintext canary in the target: \(name) \(t["_id"]!)", file: file, line: line)
                if name == "users" {
                    for f in Self.protectedFields where s[f] != nil {
                        guard case .binary(6, _)? = t[f] else { XCTFail("\(name) \(t["_id"]!).\(f) is not ciphertext in the target", file: file, line: line); return }
                    }
                    let strip = { (d: Document) in Document(elements: d.elements.filter { !Self.protectedFields.contains($0.key) }.map { ($0.key, $0.value) }) }
                    XCTAssertEqual(strip(s).bytes, strip(t).bytes, "unprotected fields of \(name) \(s["_id"]!)", file: file, line: line)
                }
                let (opened, failures) = decryptor.decrypt(t)
                XCTAssertTrue(failures.isEmpty, "\(failures)", file: file, line: line)
                if opened.bytes != s.bytes {
                    XCTFail("\(name) \(s["_id"]!) decrypted from the target differs from the source:\n  \(s.relaxedJSON.prefix(300))\n  \(opened.relaxedJSON.prefix(300))", file: file, line: line)
                    return
                }
            }
        }
        // No document of the target holds a canary, in any collection (the checkpoint included).
        for db in [src!, checkpointDB!] {
            for info in try dest.database(db).listCollections() {
                guard let name = info["name"]?.stringValue else { continue }
                for d in try TestEnv.documents(dest, Namespace(database: db, collection: name)) {
                    XCTAssertNil(Data(d.bytes).range(of: Data("CANARY".utf8)), "canary in \(db).\(name)", file: file, line: line)
                }
            }
        }
    }

    /// Tail and replicate as processes while a write load with a transaction runs; once caught
    /// up, the target equals the source with every protected field still ciphertext.
    func testEncryptedReplicationUnderLoad() throws {
        let tail = try startTail()
        try waitForBaseSnapshot()
        let replicate = try startReplicate()
        let load = UserLoad(database: src, firstID: 200)
        sleep(2)
        runTransactions()
        sleep(2)
        let end = try stopAndAssertCaughtUp(load)
        XCTAssertGreaterThan(load.writes, 100)
        let cp = try XCTUnwrap(checkpoint())
        XCTAssertEqual(cp.phase, .following)
        XCTAssertGreaterThan(cp.eventsApplied, 100)
        XCTAssertNotNil(cp.seededFrom)
        XCTAssertEqual(replicate.terminate(), 0, replicate.stderr)
        XCTAssertEqual(tail.terminate(), 0)
        XCTAssertFalse(replicate.stderr.contains("CANARY"), "no plaintext in the replicator's log")
        XCTAssertTrue(replicate.stderr.contains("seeding the target"), replicate.stderr)
        // A second run with --until returns at once: nothing left to apply, same state.
        let again = TestEnv.ciphertail(["replicate", "--pipeline", pipe, "--until", end.description, "--json"])
        XCTAssertEqual(again.status, 0, again.stderr)
        let summary = try JSONDecoder().decode(ReplicationSummary.self, from: Data(again.stdout.utf8))
        XCTAssertNil(summary.seededFrom, "resumed from the checkpoint, no new seed")
        try assertTargetMatchesSource()
    }

    /// The replicator killed with SIGKILL five times and the tailer twice, under load: the final
    /// state equals the source (updates with $inc included: events carry final values).
    func testKilledReplicatorAndTailerLoseNothing() throws {
        var tail = try startTail()
        try waitForBaseSnapshot()
        var replicate = try startReplicate()
        let load = UserLoad(database: src, firstID: 200)
        for round in 1...5 {
            usleep(useconds_t(Int.random(in: 400_000...1_500_000)))
            replicate.kill9()
            if round == 2 || round == 4 {
                tail.kill9()
                tail = try startTail()
            }
            if round == 3 { runTransactions() }
            replicate = try startReplicate()
        }
        sleep(1)
        try stopAndAssertCaughtUp(load)
        XCTAssertEqual(replicate.terminate(), 0, replicate.stderr)
        XCTAssertEqual(tail.terminate(), 0)
        let log = ChangeLog(repository: try Repository(path: dir + "/repo"))
        XCTAssertTrue(log.coverage().breaks.isEmpty, "killing the tailer breaks nothing: \(log.coverage().breaks)")
    }

    /// The target mongod stopped while writes go on: the replicator alerts and retries; once the
    /// target is back it catches up, and nothing is lost.
    func testTargetDownIsRetriedAndCaughtUp() throws {
        let (name, port) = try XCTUnwrap(TargetEnv.nameAndPort, "the target URI names no replicaSet and port")
        let tail = try startTail()
        try waitForBaseSnapshot()
        let replicate = try startReplicate(["--json"])
        let load = UserLoad(database: src, firstID: 200)
        // Seeded and following before the target goes away.
        let deadline = Date().addingTimeInterval(120)
        while (checkpoint()?.entriesApplied ?? 0) < 2 && Date() < deadline { usleep(100_000) }
        let stop = TestEnv.shell("\(TestEnv.root)/ops/mongod.sh stop \(name)")
        XCTAssertEqual(stop.status, 0, stop.stderr)
        var restarted = false
        defer { if !restarted { TestEnv.shell("\(TestEnv.root)/ops/mongod.sh start \(name) \(port)") } }
        // The replicator notices and alerts, while the load keeps writing.
        let alertDeadline = Date().addingTimeInterval(120)
        while !replicate.stderr.contains("ALERT retrying") && Date() < alertDeadline { usleep(200_000) }
        XCTAssertTrue(replicate.stderr.contains("ALERT retrying"), replicate.stderr)
        sleep(2)
        let start = TestEnv.shell("\(TestEnv.root)/ops/mongod.sh start \(name) \(port)")
        XCTAssertEqual(start.status, 0, start.stderr)
        restarted = true
        sleep(1)
        try stopAndAssertCaughtUp(load)
        XCTAssertEqual(replicate.terminate(), 0, replicate.stderr)
        let summary = try JSONDecoder().decode(ReplicationSummary.self, from: Data(replicate.stdout.utf8))
        XCTAssertGreaterThan(summary.retries, 0)
        XCTAssertGreaterThan(summary.alerts, 0)
        XCTAssertGreaterThan(summary.entries, 0)
        XCTAssertEqual(tail.terminate(), 0)
    }
}

/// The replicator as a library, with the tailer on a thread: applying entries again (a crash
/// between apply and checkpoint) leaves the same state, and a gap leads to a reseed.
final class ReplicationApplyTests: XCTestCase {
    func replicator(_ repo: String, checkpointDB: String, until: ClusterTime) -> ReplicationOptions {
        var o = ReplicationOptions(repository: repo, target: ConnectionString(TargetEnv.uri!))
        o.checkpointNamespace = Namespace(database: checkpointDB, collection: "replication")
        o.pipelineName = "apply-test"
        o.pollInterval = 0.05
        o.until = until
        return o
    }

    func writeRound(_ client: Client, _ ns: Namespace, _ round: Int) throws {
        for i in 0..<30 {
            let id = Int32(round * 100 + i)
            try client.runCommand(["insert": .string(ns.collection), "documents": [["_id": .int32(id), "n": 0]]], database: ns.database)
            try client.runCommand(["update": .string(ns.collection), "updates": [["q": ["_id": .int32(id % 40)], "u": ["$inc": ["n": 1], "$push": ["h": .int32(id)]]]]], database: ns.database)
            if i % 7 == 0 { try client.runCommand(["delete": .string(ns.collection), "deletes": [["q": ["_id": .int32(id - 3)], "limit": 1]]], database: ns.database) }
            if i % 11 == 0 { try client.runCommand(["insert": .string(ns.collection), "documents": [["_id": .int32(id - 3), "again": true]]], database: ns.database) }
        }
    }

    func targetDocuments(_ ns: Namespace) throws -> [[UInt8]] { try TestEnv.documents(try TargetEnv.client(), ns).map(\.bytes) }

    func testApplyingEntriesAgainLeavesTheSameState() throws {
        guard TargetEnv.uri != nil else { throw XCTSkip("CIPHERTAIL_TEST_TARGET_URI is not set") }
        let src = TestEnv.uniqueName("repl_idem"), ckpt = TestEnv.uniqueName("repl_ckpt")
        defer {
            dropDatabases(src)
            if let c = try? TargetEnv.client() { try? c.database(src).drop(); try? c.database(ckpt).drop() }
        }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<40).map { ["_id": .int32(Int32($0)), "n": 0] })
        let repo = TestEnv.temporaryDirectory("replidem")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).*")]; $0.segmentSeconds = 0.1 }, repo: repo)
        let snapshotDeadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: repo).backupIDs().isEmpty) ?? true) && Date() < snapshotDeadline { usleep(50_000) }
        for round in 1...4 {
            try writeRound(client, ns, round)
            if round == 2 {
                // A collection renamed after the snapshot, then written under its new name.
                try insert(client, Namespace(database: src, collection: "r"), (0..<20).map { ["_id": .int32(Int32($0))] })
                try client.runCommand(["renameCollection": .string("\(src).r"), "to": .string("\(src).r2")])
                try insert(client, Namespace(database: src, collection: "r2"), (20..<25).map { ["_id": .int32(Int32($0))] })
            }
            usleep(300_000)
        }
        let end = try operationTime(client)
        try waitCovered(repo, end)
        try run.stop()
        let first = try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run()
        XCTAssertNotNil(first.seededFrom)
        XCTAssertGreaterThan(first.entries, 2)
        func assertEqualToSource(_ what: String) throws {
            for name in ["c", "r2"] {
                let n = Namespace(database: src, collection: name)
                XCTAssertEqual(try targetDocuments(n), try TestEnv.documents(client, n).map(\.bytes), "\(what): \(name)")
            }
            let names = try TargetEnv.client().database(src).listCollections().compactMap { $0["name"]?.stringValue }
            XCTAssertEqual(names.sorted(), ["c", "r2"], what)
        }
        try assertEqualToSource("first run")

        // Where the rename is in the log.
        let log = ChangeLog(repository: try Repository(path: repo))
        let loaded = log.load().entries
        var renameAt: (sequence: Int64, index: Int)?
        for (e, _) in loaded where e.kind == .segment {
            let reader = try SegmentReader(path: log.segmentPath(e))
            var i = 0
            while let block = try reader.nextBlock() {
                block.forEachRecord { raw in
                    if Document(trusted: Array(raw))["operationType"]?.stringValue == "rename" { renameAt = (e.sequence, i) }
                    i += 1
                }
            }
        }
        let rename = try XCTUnwrap(renameAt, "the rename is in the change log")

        // A crash between applying entries and checkpointing them: the checkpoint goes back to
        // an entry that was applied, and the entries after it are applied again.
        let store = try TargetEnv.client().collection(Namespace(database: ckpt, collection: "replication"))
        func rollBack(to sequence: Int64, entryEvents: Int64 = 0) throws -> Int64 {
            var cp = try ReplicationCheckpoint(document: XCTUnwrap(store.find(["_id": "apply-test"]).next()))
            let back = try XCTUnwrap(loaded.first { $0.entry.sequence == sequence })
            let skipped = cp.sequence - sequence
            cp.sequence = sequence
            cp.entryHash = back.hash
            cp.appliedTo = back.entry.to
            cp.entryEvents = entryEvents
            try TargetEnv.client().runCommand(["update": "replication", "updates": [["q": ["_id": "apply-test"], "u": .document(cp.document)]]], database: ckpt)
            return skipped
        }
        let again = try rollBack(to: min(rename.sequence - 1, loaded.last!.entry.sequence - 3))
        let second = try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run()
        XCTAssertNil(second.seededFrom, "resumed, not seeded")
        XCTAssertEqual(second.entries, again)
        XCTAssertGreaterThan(second.eventsApplied, 0, "events were applied a second time")
        try assertEqualToSource("entries applied twice, the rename among them")

        // A crash right after the rename, before its checkpoint: the rename is found done.
        let third = try rollBack(to: rename.sequence - 1, entryEvents: Int64(rename.index))
        XCTAssertEqual(try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run().entries, third)
        try assertEqualToSource("the rename found applied")
    }

    /// A first seed refuses a target whose followed namespaces hold data; a seed cut short
    /// (checkpoint in phase seeding) is done again from scratch; a checkpoint of another
    /// repository is refused.
    func testSeedRefusalsAndAnInterruptedSeed() throws {
        guard TargetEnv.uri != nil else { throw XCTSkip("CIPHERTAIL_TEST_TARGET_URI is not set") }
        let src = TestEnv.uniqueName("repl_seed"), ckpt = TestEnv.uniqueName("repl_ckpt")
        defer {
            dropDatabases(src)
            if let c = try? TargetEnv.client() { try? c.database(src).drop(); try? c.database(ckpt).drop() }
        }
        let client = try TestEnv.client(), target = try TargetEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<40).map { ["_id": .int32(Int32($0)), "n": 0] })
        let repo = TestEnv.temporaryDirectory("replseed")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).*")]; $0.segmentSeconds = 0.1 }, repo: repo)
        try writeRound(client, ns, 1)
        let end = try operationTime(client)
        try waitCovered(repo, end)
        try run.stop()

        // Data in a followed namespace of the target, and no checkpoint: refused, untouched.
        try insert(target, Namespace(database: src, collection: "stray"), [["_id": "mine"]])
        XCTAssertThrowsError(try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run()) { error in
            guard case RestoreError.targetNotEmpty(let names) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(names, ["\(src).stray"])
        }
        XCTAssertEqual(try TestEnv.documents(target, Namespace(database: src, collection: "stray")).count, 1)
        XCTAssertTrue(try target.collection(Namespace(database: ckpt, collection: "replication")).find().all().isEmpty, "no checkpoint written")

        // A seed cut short: the checkpoint says seeding; what it left is dropped and loaded again.
        var cp = ReplicationCheckpoint(id: "apply-test", repositoryID: try repositoryID(repo), phase: .seeding)
        cp.seededFrom = "interrupted"
        try target.runCommand(["insert": "replication", "documents": [.document(cp.document)]], database: ckpt)
        try insert(target, ns, [["_id": 1, "half": "loaded"]])
        let summary = try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run()
        XCTAssertNotNil(summary.seededFrom)
        XCTAssertEqual(try targetDocuments(ns), try TestEnv.documents(client, ns).map(\.bytes))
        XCTAssertTrue(try TestEnv.documents(target, Namespace(database: src, collection: "stray")).isEmpty, "the followed namespaces were dropped")

        // The checkpoint of another repository.
        try target.runCommand(["update": "replication", "updates": [["q": ["_id": "apply-test"], "u": ["$set": ["repositoryId": "someone-else"]]]]], database: ckpt)
        XCTAssertThrowsError(try Replicator(replicator(repo, checkpointDB: ckpt, until: end), logger: testLogger).run()) { error in
            guard case ReplicationError.otherRepository = error else { return XCTFail("\(error)") }
        }
    }

    func repositoryID(_ repo: String) throws -> String {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try d.decode(Repository.Config.self, from: Data(contentsOf: URL(fileURLWithPath: repo + "/" + Repository.configName))).id
    }

    /// A gap in the change log (recorded as the tailer does when the history is lost): the
    /// replicator alerts, waits for the base snapshot after the gap, drops and reloads the
    /// followed namespaces, and continues; collections it does not follow are left alone.
    func testGapLeadsToAReseedFromTheNextSnapshot() throws {
        guard TargetEnv.uri != nil else { throw XCTSkip("CIPHERTAIL_TEST_TARGET_URI is not set") }
        let src = TestEnv.uniqueName("repl_gap"), ckpt = TestEnv.uniqueName("repl_ckpt"), other = TestEnv.uniqueName("repl_other")
        defer {
            dropDatabases(src)
            if let c = try? TargetEnv.client() { try? c.database(src).drop(); try? c.database(ckpt).drop(); try? c.database(other).drop() }
        }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<40).map { ["_id": .int32(Int32($0)), "n": 0] })
        try insert(try TargetEnv.client(), Namespace(database: other, collection: "keep"), [["_id": 1]])
        let repo = TestEnv.temporaryDirectory("replgap")
        let configure: (inout TailOptions) -> Void = { $0.namespaces = [try! NamespacePattern("\(src).*")]; $0.segmentSeconds = 0.1 }
        var run = TailRun(configure, repo: repo)
        try writeRound(client, ns, 1)
        let t1 = try operationTime(client)
        try waitCovered(repo, t1)
        try run.stop()
        let before = try Replicator(replicator(repo, checkpointDB: ckpt, until: t1), logger: testLogger).run()
        XCTAssertEqual(before.seeds, 1)
        // Writes while nothing tails, then a gap entry over them, as the tailer records one.
        try writeRound(client, ns, 2)
        try client.runCommand(["insert": "c", "documents": [["_id": 5000, "inGap": true]]], database: src)
        let r = try Repository(path: repo)
        let writer = try ChangeLogWriter(repository: r)
        let last = try XCTUnwrap(writer.last?.entry)
        try writer.recordGap(lineage: UUID().uuidString.lowercased(), from: last.to.successor, to: try operationTime(client),
                             namespaces: last.namespaces, reason: "test: history lost", code: 286)
        writer.close()
        run = TailRun(configure, repo: repo)
        try writeRound(client, ns, 3)
        let end = try operationTime(client)
        try waitCovered(repo, end)
        var alerts: [ReplicationAlertKind] = []
        var o = replicator(repo, checkpointDB: ckpt, until: end)
        o.onAlert = { kind, _ in alerts.append(kind) }
        let summary = try Replicator(o, logger: testLogger).run()
        try run.stop()
        XCTAssertEqual(summary.gaps, 1)
        XCTAssertEqual(summary.seeds, 1, "the reseed after the gap")
        XCTAssertTrue(alerts.contains(.gap), "\(alerts)")
        XCTAssertEqual(try targetDocuments(ns), try TestEnv.documents(client, ns).map(\.bytes), "the target equals the source, writes in the gap included")
        XCTAssertEqual(try TestEnv.documents(try TargetEnv.client(), Namespace(database: other, collection: "keep")).count, 1,
                       "a namespace the log does not follow is not dropped")
    }
}
