import Archive
import BSON
import Capture
import Foundation
import Mongo
import TestSupport
import XCTest

/// Writes to one collection on its own thread until stopped: inserts, updates and deletes,
/// each acknowledged before the next. `pause` waits until no write is in flight.
final class WriteLoad: @unchecked Sendable {
    private let lock = NSLock()
    private var paused = false
    private var stopped = false
    private var busy = false
    private(set) var writes = 0
    private let done = DispatchSemaphore(value: 0)

    init(_ ns: Namespace, uri: String = TestEnv.uri) {
        let t = Thread { [self] in
            defer { done.signal() }
            guard let client = try? Client(ConnectionString(uri)) else { return }
            var rng = SystemRandomNumberGenerator()
            var next = 1_000_000
            while true {
                lock.lock()
                if stopped { lock.unlock(); return }
                if paused { lock.unlock(); usleep(5_000); continue }
                busy = true
                lock.unlock()
                let id = Int32(Int.random(in: 0..<2000, using: &rng))
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<4:
                    next += 1
                    _ = try? client.runCommand(["insert": .string(ns.collection), "documents": [["_id": .int32(Int32(next)), "v": .int32(id), "pad": .string(String(repeating: "p", count: 200))]]], database: ns.database)
                case 4..<8:
                    _ = try? client.runCommand(["update": .string(ns.collection), "updates": [["q": ["_id": .int32(id)], "u": ["$inc": ["n": 1], "$set": ["w": .int32(Int32(next))]]]]], database: ns.database)
                default:
                    _ = try? client.runCommand(["delete": .string(ns.collection), "deletes": [["q": ["_id": .int32(id)], "limit": 1]]], database: ns.database)
                }
                lock.lock(); busy = false; writes += 1; lock.unlock()
            }
        }
        t.start()
    }

    func pause() {
        lock.lock(); paused = true; lock.unlock()
        while true { lock.lock(); let b = busy; lock.unlock(); if !b { return }; usleep(1_000) }
    }

    func resume() { lock.lock(); paused = false; lock.unlock() }

    func stop() { lock.lock(); stopped = true; lock.unlock(); done.wait() }
}

/// `ciphertail tail` as its own process, so it can be killed.
func startTailProcess(_ args: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: TestEnv.binary)
    p.arguments = ["tail", "--segment-max-age", "0.2", "--idle-checkpoint", "0.5"] + args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
}

final class TailFaultTests: XCTestCase {
    /// The tailer killed with SIGKILL at random moments, 20 times, under a steady write load.
    /// After each restart, a point-in-time restore to the last acknowledged write equals the
    /// source collection, document by document.
    func testKilledTwentyTimesUnderLoadLosesNothing() throws {
        let src = TestEnv.uniqueName("tail_kill"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<2000).map { Document(["_id": .int32(Int32($0)), "v": .int32(Int32($0))]) })
        let repo = TestEnv.temporaryDirectory("tailkill")
        let args = ["--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).c"]
        var tailer = try startTailProcess(args)
        // The kills start once the first base snapshot is complete: one killed before it
        // leaves nothing to resume, and the restart rightly takes the snapshot again.
        let deadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: repo).backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        let load = WriteLoad(ns)
        defer { load.stop() }
        var killedWithOpenSegment = 0
        for round in 1...20 {
            usleep(useconds_t(Int.random(in: 150_000...900_000)))
            let before = ChangeLog(repository: try Repository(path: repo)).sequences().count
            kill(tailer.processIdentifier, SIGKILL)
            tailer.waitUntilExit()
            let orphans = try FileManager.default.subpathsOfDirectory(atPath: repo + "/changes").filter {
                $0.hasSuffix(".tmp") || ($0.hasSuffix(".seg") && !FileManager.default.fileExists(atPath: repo + "/changes/" + $0.dropLast(4) + ".json"))
            }
            if !orphans.isEmpty { killedWithOpenSegment += 1 }
            tailer = try startTailProcess(args)
            // Stop the writes, note the last acknowledged one, and restore to it.
            load.pause()
            let target = try operationTime(client)
            let expected = try TestEnv.documents(client, ns)
            try waitCovered(repo, target)
            let r = restoreAt(repo, target.description, from: "\(src).*", to: "\(dst).*")
            XCTAssertEqual(r.status, 0, "round \(round): \(r.stderr)")
            let restored = try TestEnv.documents(client, Namespace(database: dst, collection: "c"))
            XCTAssertEqual(restored.count, expected.count, "round \(round)")
            if restored.map(\.bytes) != expected.map(\.bytes) {
                XCTFail("round \(round): the restore to \(target) differs from the source (entries before the kill: \(before))")
                break
            }
            load.resume()
        }
        kill(tailer.processIdentifier, SIGTERM)
        tailer.waitUntilExit()
        XCTAssertEqual(tailer.terminationStatus, 0, "SIGTERM ends a tail cleanly")
        XCTAssertGreaterThan(load.writes, 100)
        let r = try Repository(path: repo)
        XCTAssertEqual(r.backupIDs().count, 1, "the first run's base snapshot; restarts resume the same line")
        let log = ChangeLog(repository: r)
        XCTAssertTrue(log.coverage().breaks.isEmpty, "\(log.coverage().breaks)")
        XCTAssertEqual(log.coverage().intervals.count, 1)
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", repo]).status, 0)
        print("kills that left an unfinished segment behind: \(killedWithOpenSegment) of 20")
    }

    /// A missing or damaged change segment in the middle of the log: verify names it; a
    /// restore past it is refused before the target is touched; before it, restores work.
    func testMissingOrDamagedSegmentInTheMiddle() throws {
        let src = TestEnv.uniqueName("tail_dmg"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<50).map { ["_id": .int32(Int32($0))] })
        let repo = TestEnv.temporaryDirectory("taildmg")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("\(src).c")]; $0.idleSeconds = 3600 }, repo: repo)
        var times: [ClusterTime] = []
        var states: [[Document]] = []
        for round in 0..<5 {
            try insert(client, ns, (0..<20).map { ["_id": .int32(Int32(1000 * (round + 1) + $0))] })
            times.append(try operationTime(client))
            states.append(try TestEnv.documents(client, ns))
            try waitCovered(repo, times.last!)
        }
        try run.stop()
        let r = try Repository(path: repo)
        let log = ChangeLog(repository: r)
        let entries = log.load().entries.map(\.entry).filter { ($0.events ?? 0) > 0 }
        XCTAssertGreaterThanOrEqual(entries.count, 4)
        // The segment holding round 2's inserts.
        let victim = try XCTUnwrap(entries.first { $0.from <= times[2] && times[2] <= $0.to && $0.to > times[1] })
        let path = log.segmentPath(victim)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))

        // Damaged: one byte flipped inside a block.
        var bad = original
        bad[bad.count / 2] ^= 0xFF
        try bad.write(to: URL(fileURLWithPath: path))
        let verify = TestEnv.ciphertail(["verify", "--repo", repo])
        XCTAssertEqual(verify.status, 6)
        XCTAssertTrue(verify.stdout.contains(ChangeLog.segmentName(victim.sequence)), verify.stdout)
        try insert(client, Namespace(database: dst, collection: "c"), [["_id": "untouched"]])
        let past = restoreAt(repo, times[4].description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(past.status, 6, past.stderr)
        XCTAssertTrue(past.stderr.contains(ChangeLog.segmentName(victim.sequence)), past.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "c")).count, 1, "the target was not touched")
        let before = restoreAt(repo, times[1].description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(before.status, 0, before.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "c")).map(\.bytes), states[1].map(\.bytes))

        // Missing: the log breaks there; past it is refused with the windows, before it works.
        try FileManager.default.removeItem(atPath: path)
        let verify2 = TestEnv.ciphertail(["verify", "--repo", repo])
        XCTAssertEqual(verify2.status, 6)
        XCTAssertTrue(verify2.stdout.contains(ChangeLog.segmentName(victim.sequence)), verify2.stdout)
        let past2 = restoreAt(repo, times[4].description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(past2.status, 5, past2.stderr)
        XCTAssertTrue(past2.stderr.contains("missing"), past2.stderr)
        let before2 = restoreAt(repo, times[1].description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(before2.status, 0, before2.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "c")).map(\.bytes), states[1].map(\.bytes))
        let windows = PointInTime.windows(r)
        XCTAssertEqual(windows.count, 1)
        XCTAssertLessThan(windows[0].to, times[2])
    }

    /// The source mongod restarts while the tailer follows it: the tailer retries, resumes from
    /// its token, records no gap, and loses nothing.
    /// The fault tests' own replica set (a fixed port: the set's configuration names it), so
    /// that the shared test mongod never goes down under other tests, with test commands on
    /// for the server's failCommand fail point.
    static let faultMongod = (name: "ct-tail-faults", port: 27127)

    func startFaultMongod() throws -> String {
        let start = TestEnv.shell("CIPHERTAIL_MONGOD_ARGS='--setParameter enableTestCommands=1' \(TestEnv.root)/ops/mongod.sh start \(Self.faultMongod.name) \(Self.faultMongod.port)")
        XCTAssertEqual(start.status, 0, start.stderr)
        return start.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    override class func tearDown() { TestEnv.shell("\(TestEnv.root)/ops/mongod.sh stop \(faultMongod.name)") }

    /// The server refuses to resume the stream (286, ChangeStreamHistoryLost): the tailer
    /// records the lost stretch as a gap, alerts, takes a new base snapshot and carries on.
    /// Restores into the gap are refused; after the new snapshot they work. A replica set
    /// whose oplog never rolled over cannot tell lost history from none (its oplog starts at
    /// its own beginning), so the test has the server fail the resuming aggregate with 286
    /// through its failCommand fail point.
    func testHistoryLostIsRecordedAsAGapAndANewBaseSnapshotIsTaken() throws {
        let uri = try startFaultMongod()
        let source = try Client(ConnectionString(uri))
        let db = "gap", dst = TestEnv.uniqueName("tail_gap_r")
        defer { dropDatabases(dst) }
        try? source.database(db).drop()
        try? source.database("gap_other").drop()  // a duplicate _id there would make the write below a no-op
        let ns = Namespace(database: db, collection: "c")
        let bulk = source.collection(ns).bulk(ordered: true)
        for i in 0..<20 { try bulk.insert(["_id": .int32(Int32(i))]) }
        try bulk.execute()
        let repo = TestEnv.temporaryDirectory("tailgap")
        let first = TailRun({ $0.namespaces = [try! NamespacePattern("gap.*")] }, repo: repo, uri: uri)
        try waitCovered(repo, try operationTime(source))
        XCTAssertEqual(try first.stop().snapshots.count, 1)
        let r = try Repository(path: repo)
        let before = try XCTUnwrap(ChangeLog(repository: r).load().entries.last?.entry)
        // Written while no tailer runs: the history the resume then fails to find.
        try source.runCommand(["insert": "c", "documents": .array((50..<55).map { ["_id": .int32(Int32($0))] })], database: db)
        let lost = try operationTime(source)
        // The cluster's time moves on, majority-committed, so that the time the tailer reads
        // next (a ping's operationTime) is past the writes above.
        // (A ping's operationTime is the committed snapshot, which may trail the newest write
        // for a moment: wait until it is past them.)
        try source.runCommand(["insert": "c", "documents": [["_id": 1]], "writeConcern": ["w": "majority"]], database: "gap_other")
        let moved = try operationTime(source)
        let waitUntil = Date().addingTimeInterval(30)
        while try operationTime(try Client(ConnectionString(uri))) <= lost && Date() < waitUntil { usleep(20_000) }
        XCTAssertGreaterThan(moved, lost)

        try source.runCommand(["configureFailPoint": "failCommand", "mode": ["times": 1],
                               "data": ["failCommands": ["aggregate"], "errorCode": 286, "appName": "ciphertail-tail"]])
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("gap.*")] }, repo: repo, uri: uri)
        let deadline = Date().addingTimeInterval(60)
        while run.alerts.allSatisfy({ $0.kind != .gap }) && Date() < deadline && !run.finished { usleep(50_000) }
        try source.runCommand(["insert": "c", "documents": [["_id": 100]]], database: db)
        let end = try operationTime(source)
        try waitCovered(repo, end)
        let summary = try run.stop()
        XCTAssertEqual(summary.gaps, 1)
        XCTAssertEqual(summary.snapshots.count, 1, "a new base snapshot after the gap")
        XCTAssertTrue(run.alerts.contains { $0.kind == .gap })
        let gap = try XCTUnwrap(ChangeLog(repository: r).load().entries.map(\.entry).first { $0.kind == .gap })
        XCTAssertEqual(gap.code, 286)
        XCTAssertEqual(gap.from, before.to.successor, "the gap starts right after what was captured")
        XCTAssertEqual(r.backupIDs().count, 2)
        XCTAssertGreaterThanOrEqual(gap.to, lost, "the gap holds what was written while no tailer ran")
        // Inside the gap: refused, with the windows listed; exit 5.
        let inside = restoreAt(repo, lost.description, from: "gap.*", to: "\(dst).*")
        XCTAssertEqual(inside.status, 5, inside.stderr)
        XCTAssertTrue(inside.stderr.contains("restorable:"), inside.stderr)
        let windows = PointInTime.windows(r)
        XCTAssertEqual(windows.count, 2, "\(windows)")
        // Before the gap and after it: both restorable (into the shared test mongod).
        XCTAssertEqual(restoreAt(repo, before.to.description, from: "gap.*", to: "\(dst).*").status, 0)
        XCTAssertEqual(try TestEnv.documents(try TestEnv.client(), Namespace(database: dst, collection: "c")).count, 20)
        let after = restoreAt(repo, end.description, from: "gap.*", to: "\(dst).*")
        XCTAssertEqual(after.status, 0, after.stderr)
        XCTAssertEqual(try TestEnv.documents(try TestEnv.client(), Namespace(database: dst, collection: "c")).count, 26)
        let verify = TestEnv.ciphertail(["verify", "--repo", repo])
        XCTAssertEqual(verify.status, 0, verify.stdout)
        XCTAssertTrue(verify.stdout.contains("recorded gap"), verify.stdout)
    }

    func testMongodRestartWhileTailing() throws {
        let uri = try startFaultMongod()
        let name = Self.faultMongod.name, port = Self.faultMongod.port
        let client = try Client(ConnectionString(uri))
        let ns = Namespace(database: "restart", collection: "c")
        try? client.database("restart").drop()
        let bulk = client.collection(ns).bulk(ordered: true)
        for i in 0..<100 { try bulk.insert(["_id": .int32(Int32(i))]) }
        try bulk.execute()
        let repo = TestEnv.temporaryDirectory("tailrestart")
        let run = TailRun({ $0.namespaces = [try! NamespacePattern("restart.*")] }, repo: repo, uri: uri)
        try waitCovered(repo, try operationTime(client))
        XCTAssertEqual(TestEnv.shell("\(TestEnv.root)/ops/mongod.sh stop \(name)").status, 0)
        usleep(1_500_000)
        XCTAssertEqual(TestEnv.shell("CIPHERTAIL_MONGOD_ARGS='--setParameter enableTestCommands=1' \(TestEnv.root)/ops/mongod.sh start \(name) \(port)").status, 0)
        let after = try Client(ConnectionString(uri))
        var done = false
        for _ in 0..<100 where !done {
            done = (try? after.runCommand(["insert": "c", "documents": [["_id": 1000, "after": true]]], database: "restart")) != nil
            if !done { usleep(200_000) }
        }
        XCTAssertTrue(done)
        try after.runCommand(["update": "c", "updates": [["q": ["_id": 5], "u": ["$set": ["x": 1]]]]], database: "restart")
        let end = try operationTime(after)
        let expected = try after.collection(ns).find(Document(), options: ["sort": ["_id": 1]]).all()
        try waitCovered(repo, end)
        let summary = try run.stop()
        XCTAssertEqual(summary.gaps, 0, "a restart is not a gap")
        XCTAssertTrue(run.alerts.contains { $0.kind == .retrying }, "the outage was retried")
        let log = ChangeLog(repository: try Repository(path: repo))
        XCTAssertTrue(log.coverage().breaks.isEmpty, "\(log.coverage().breaks)")
        let r = TestEnv.ciphertail(["restore", "--repo", repo, "--uri", uri, "--at", end.description,
                                    "--ns-from", "restart.*", "--ns-to", "restart_r.*", "--drop"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try after.collection(Namespace(database: "restart_r", collection: "c")).find(Document(), options: ["sort": ["_id": 1]]).all().map(\.bytes),
                       expected.map(\.bytes))
    }

    /// A restore killed in the middle and run again (with --drop) ends in the same state:
    /// nothing duplicated, nothing missing.
    func testInterruptedRestoreRunAgainEndsTheSame() throws {
        let src = TestEnv.uniqueName("rst_int"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<60_000).map { Document(["_id": .int32(Int32($0)), "t": .string(String(repeating: "r", count: 300))]) })
        let repo = TestEnv.temporaryDirectory("rstint")
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnv.binary)
        p.arguments = ["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--batch-size", "500", "--workers", "2"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while (try? client.collection(Namespace(database: dst, collection: "c")).estimatedCount()) ?? 0 < 5000 && Date() < deadline { usleep(20_000) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let partial = try client.collection(Namespace(database: dst, collection: "c")).estimatedCount()
        XCTAssertLessThan(partial, 60_000, "the restore was interrupted")
        let refused = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*"])
        XCTAssertEqual(refused.status, 4, "a half-restored target is not silently added to")
        let again = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--drop", "--batch-size", "500"])
        XCTAssertEqual(again.status, 0, again.stderr)
        try assertSameDocuments(client, ns, Namespace(database: dst, collection: "c"))
    }
}
