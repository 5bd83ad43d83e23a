import Archive
import BSON
import Foundation
import Mongo
import TestSupport
import XCTest

final class RetentionTests: XCTestCase {
    /// Three base snapshots with a change log under them. keep-last 2 removes the oldest
    /// snapshot and the log entries only it needed; every point from the second snapshot on
    /// stays restorable, the log verifies whole, and a point before it is refused.
    func testPruneKeepsWhatTheKeptWindowsNeed() throws {
        let src = TestEnv.uniqueName("prune"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<300).map { Document(["_id": .int32(Int32($0)), "v": .int32(0)]) })
        let repo = TestEnv.temporaryDirectory("prune")
        let tail = try startTailProcess(["--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"])
        defer { kill(tail.processIdentifier, SIGTERM); tail.waitUntilExit() }
        var moments: [ClusterTime] = []
        for round in 1...3 {
            if round > 1 { XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0) }
            try client.runCommand(["update": "c", "updates": [["q": .document(Document()), "u": ["$set": ["v": .int32(Int32(round))]], "multi": true]]], database: src)
            moments.append(try operationTime(client))
            try waitCovered(repo, moments.last!)
        }
        let before = try Repository(path: repo).listBackups().manifests.sorted { $0.clusterTime.end < $1.clusterTime.end }
        XCTAssertEqual(before.count, 3)

        let dry = TestEnv.ciphertail(["prune", "--repo", repo, "--keep-last", "2", "--dry-run", "--json"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains(before[0].id) && dry.stdout.contains("\"dryRun\" : true"), dry.stdout)
        XCTAssertEqual(try Repository(path: repo).backupIDs().count, 3, "a dry run changes nothing")

        let entriesBefore = ChangeLog(repository: try Repository(path: repo)).sequences()
        let r = TestEnv.ciphertail(["prune", "--repo", repo, "--keep-last", "2", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let repository = try Repository(path: repo)
        XCTAssertEqual(Set(repository.backupIDs()), Set([before[1].id, before[2].id]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: repository.backupPath(before[0].id)))
        let log = ChangeLog(repository: repository)
        let remaining = log.load().entries.map(\.entry)
        XCTAssertLessThan(remaining.count, entriesBefore.count, "entries only the removed snapshot needed are gone")
        XCTAssertTrue(remaining.allSatisfy { $0.to > before[1].clusterTime.end || $0.sequence == remaining.first!.sequence },
                      "an entry after the first kept one ends before the oldest kept snapshot")
        XCTAssertLessThanOrEqual(remaining.first!.from, before[1].clusterTime.end.successor, "the kept window starts covered")
        XCTAssertTrue(log.coverage().breaks.isEmpty, "a pruned start is no break: \(log.coverage().breaks)")
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", repo]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: repo + "/prune.json"))

        // Restorable from the oldest kept snapshot on; not before it.
        for (i, moment) in moments.enumerated() {
            let res = restoreAt(repo, moment.description, from: "\(src).*", to: "\(dst).*")
            if moment < before[1].clusterTime.end {
                XCTAssertNotEqual(res.status, 0, "moment \(i) lies before every kept snapshot")
                continue
            }
            XCTAssertEqual(res.status, 0, "moment \(i): \(res.stderr)")
            let docs = try TestEnv.documents(client, Namespace(database: dst, collection: "c"))
            XCTAssertEqual(docs.count, 300)
            XCTAssertTrue(docs.allSatisfy { $0["v"] == .int32(Int32(i + 1)) }, "moment \(i)")
        }
    }

    /// A prune interrupted after it removed a manifest (its plan on disk, the folder still
    /// there) is completed by the next prune before anything else.
    func testInterruptedPruneIsCompleted() throws {
        let src = TestEnv.uniqueName("prune_crash")
        defer { dropDatabases(src) }
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "c"), (0..<50).map { Document(["_id": .int32(Int32($0))]) })
        let repo = TestEnv.temporaryDirectory("prunecrash")
        for _ in 0..<3 { XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0) }
        let repository = try Repository(path: repo)
        let ids = repository.backupIDs()
        // What a crash right after the first manifest went leaves behind.
        let plan = Retention.plan(repository, policy: RetentionPolicy(keepLast: 1, keepDays: nil))
        XCTAssertEqual(plan.remove, Array(ids.prefix(2)))
        let encoder = JSONEncoder()
        try Data(encoder.encode(plan)).write(to: URL(fileURLWithPath: repo + "/prune.json"))
        XCTAssertEqual(unlink(repository.manifestPath(ids[0])), 0)
        // keep-last 3 would keep everything; the pending plan still completes first.
        let r = TestEnv.ciphertail(["prune", "--repo", repo, "--keep-last", "3", "--log-level", "info"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("completing an interrupted prune"), r.stderr)
        XCTAssertEqual(repository.backupIDs(), [ids[2]])
        XCTAssertFalse(FileManager.default.fileExists(atPath: repository.backupPath(ids[0])))
        XCTAssertFalse(FileManager.default.fileExists(atPath: repo + "/prune.json"))
    }

    /// keepDays keeps every snapshot of the period and the newest one before it (the start
    /// of the period's oldest points); keepLast and keepDays together keep the union.
    func testKeepDaysAndUnion() throws {
        let src = TestEnv.uniqueName("prune_days")
        defer { dropDatabases(src) }
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "c"), [Document(["_id": 1])])
        let repo = TestEnv.temporaryDirectory("prunedays")
        for i in 0..<4 {
            // A write a second apart, so each consistent point is a second later.
            sleep(1)
            try insert(client, Namespace(database: src, collection: "c"), [Document(["_id": .int32(Int32(10 + i))])])
            XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0)
        }
        let repository = try Repository(path: repo)
        let ids = repository.listBackups().manifests.sorted { $0.clusterTime.end < $1.clusterTime.end }.map(\.id)
        let ends = repository.listBackups().manifests.sorted { $0.clusterTime.end < $1.clusterTime.end }.map { Double($0.clusterTime.end.t) }
        // "Now" one day after the third snapshot: the period holds the 3rd and 4th; the 2nd
        // is the newest before it.
        let now = Date(timeIntervalSince1970: ends[2] + 86_400)
        let days = Retention.plan(repository, policy: RetentionPolicy(keepLast: nil, keepDays: 1), now: now)
        XCTAssertEqual(days.keep, Array(ids[1...]))
        XCTAssertEqual(days.remove, [ids[0]])
        let union = Retention.plan(repository, policy: RetentionPolicy(keepLast: 1, keepDays: 1.0 / 86_400), now: Date(timeIntervalSince1970: ends[3] + 10))
        XCTAssertEqual(union.keep, [ids[3]], "a period with no snapshot in it keeps the one before it, which here is also the newest")
        let both = Retention.plan(repository, policy: RetentionPolicy(keepLast: 3, keepDays: 1), now: now)
        XCTAssertEqual(both.keep, Array(ids[1...]))
    }
}
