@testable import Archive
import BSON
import Digest
import Foundation
import XCTest

/// The change log and point-in-time planning, on real files, without a server.
final class ChangeLogTests: XCTestCase {
    var dir: String!
    var repo: Repository!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "chg-\(UUID().uuidString.prefix(8))"
        repo = try Repository(path: dir, create: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func ts(_ t: UInt32, _ i: UInt32 = 1) -> ClusterTime { ClusterTime(t: t, i: i) }

    /// A segment entry covering [from, to] with `events` events at `to`.
    @discardableResult
    func segment(_ w: ChangeLogWriter, _ from: ClusterTime, _ to: ClusterTime, events: Int = 1, lineage: String = "L1",
                 namespaces: [String] = ["db.*"]) throws -> ChangeEntry {
        let s = try w.openSegment(level: 3)
        for k in 0..<events {
            try s.append(Document(["_id": ["_data": "x"], "operationType": "insert", "clusterTime": .timestamp(to), "k": .int32(Int32(k))]).bytes)
        }
        return try w.commit(s) { e in
            e.lineage = lineage
            e.from = from
            e.to = to
            e.namespaces = namespaces
            e.resumeToken = Document(["_data": "82"]).canonicalJSON
            e.scope = "cluster"
        }
    }

    func snapshot(at t1: ClusterTime) throws -> String {
        let w = try repo.beginBackup(at: Date(timeIntervalSince1970: TimeInterval(t1.t) + Double(t1.i) / 1000))
        let m = Manifest(id: w.id, createdAt: Date(), completedAt: Date(), source: SourceInfo(hosts: "h", replicaSet: "rs", serverVersion: "6.0.5"),
                         compression: CompressionInfo(), clusterTime: ClusterTimeRange(start: t1.predecessor, end: t1),
                         resumeTokens: ResumeTokens(start: nil, end: nil), namespaces: [], events: EventLog(count: 0, segments: []))
        try w.commit(m)
        return w.id
    }

    func testEntriesChainByHashAndCoverOneStretch() throws {
        let w = try ChangeLogWriter(repository: repo)
        let a = try segment(w, ts(100), ts(110))
        let b = try segment(w, ts(110, 2), ts(120))
        XCTAssertEqual(a.sequence, 1)
        XCTAssertNil(a.previous)
        XCTAssertEqual(b.previous, SHA256.hash(try Durable_read(w.log.entryPath(1))).hexString)
        XCTAssertEqual(b.segment?.path, "000000/000000000002.seg")
        let (intervals, breaks) = w.log.coverage()
        XCTAssertEqual(breaks, [])
        XCTAssertEqual(intervals.map { [$0.from, $0.to] }, [[ts(100), ts(120)]])
        XCTAssertEqual(intervals.first?.lastSequence, 2)
        // What is on disk decodes to what was written.
        XCTAssertEqual(w.log.load().entries.map(\.entry), [a, b])
    }

    func Durable_read(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    func testAGapAMissingEntryAMissingSegmentAndAForeignEntryEachBreakTheChain() throws {
        let w = try ChangeLogWriter(repository: repo)
        try segment(w, ts(100), ts(110))
        try w.recordGap(lineage: "L1", from: ts(110, 2), to: ts(130), namespaces: ["db.*"], reason: "history lost", code: 286)
        try segment(w, ts(130, 2), ts(140), lineage: "L2")
        try segment(w, ts(140, 2), ts(150), lineage: "L2")
        try segment(w, ts(150, 2), ts(160), lineage: "L2")
        try segment(w, ts(160, 2), ts(170), lineage: "L2")
        var c = w.log.coverage()
        XCTAssertEqual(c.intervals.map { [$0.from, $0.to] }, [[ts(100), ts(110)], [ts(130, 2), ts(170)]])
        XCTAssertEqual(c.breaks.count, 1)
        XCTAssertTrue(c.breaks[0].reason.contains("gap"), c.breaks[0].reason)

        // A missing segment file: the stretch ends before it and starts again after it.
        try FileManager.default.removeItem(atPath: w.log.segmentPath(4))
        c = w.log.coverage()
        XCTAssertEqual(c.intervals.map { [$0.from, $0.to] }, [[ts(100), ts(110)], [ts(130, 2), ts(140)], [ts(150, 2), ts(170)]])
        XCTAssertTrue(c.breaks.contains { $0.sequence == 4 && $0.reason.contains("missing") })
        XCTAssertEqual(w.log.coverage(checkSegments: false).intervals.count, 2, "without the file check only the gap breaks")

        // A missing entry, and an entry replaced by one that does not chain.
        try FileManager.default.removeItem(atPath: w.log.entryPath(5))
        let sixth = try Data(contentsOf: URL(fileURLWithPath: w.log.entryPath(6)))
        var e = try ChangeEntry.decode(Array(sixth), path: "6")
        e.previous = String(repeating: "0", count: 64)
        try Data(try e.encoded()).write(to: URL(fileURLWithPath: w.log.entryPath(6)))
        c = w.log.coverage()
        XCTAssertTrue(c.breaks.contains { $0.sequence == 5 && $0.reason.contains("missing") }, "\(c.breaks)")
        XCTAssertTrue(c.intervals.allSatisfy { $0.to < ts(160) || $0.from >= ts(160, 2) }, "\(c.intervals)")
    }

    func testAChangeOfFollowedNamespacesOrATimeJumpBreaksTheChain() throws {
        let w = try ChangeLogWriter(repository: repo)
        try segment(w, ts(100), ts(110))
        try segment(w, ts(110, 2), ts(120), namespaces: ["db.c"])
        try segment(w, ts(125), ts(130), namespaces: ["db.c"])
        let c = w.log.coverage()
        XCTAssertEqual(c.intervals.count, 3)
        XCTAssertTrue(c.breaks.contains { $0.reason.contains("namespaces") })
        XCTAssertTrue(c.breaks.contains { $0.reason.contains("starts at") })
    }

    func testAWriterRemovesAnInterruptedCloseAndLocksOutASecondWriter() throws {
        var w: ChangeLogWriter? = try ChangeLogWriter(repository: repo)
        try segment(w!, ts(100), ts(110))
        let orphan = try w!.openSegment(level: 3)
        try orphan.append(Document(["x": 1]).bytes)
        _ = try orphan.finish()  // the segment is durable, its entry never written: a crash
        XCTAssertTrue(FileManager.default.fileExists(atPath: w!.log.segmentPath(2)))
        XCTAssertThrowsError(try ChangeLogWriter(repository: repo)) { e in
            guard case ArchiveError.locked = e else { return XCTFail("\(e)") }
        }
        w!.close()
        w = nil
        let again = try ChangeLogWriter(repository: repo)
        XCTAssertFalse(FileManager.default.fileExists(atPath: again.log.segmentPath(2)), "the orphan segment is removed")
        XCTAssertEqual(again.nextSequence, 2)
        XCTAssertEqual(again.last?.entry.to, ts(110))
    }

    func testEntriesThatDoNotMatchTheFormatAreRefused() throws {
        let w = try ChangeLogWriter(repository: repo)
        let e = try segment(w, ts(100), ts(110))
        var bad = e
        bad.segment?.path = "../../etc/passwd"
        XCTAssertThrowsError(try ChangeEntry.decode(try bad.encoded(), path: "x"))
        bad = e
        bad.version = 2
        XCTAssertThrowsError(try ChangeEntry.decode(try bad.encoded(), path: "x"))
        XCTAssertThrowsError(try ChangeEntry.decode(Array("{".utf8), path: "x"))
        try Data("not json".utf8).write(to: URL(fileURLWithPath: w.log.entryPath(1)))
        XCTAssertEqual(w.log.load().unreadable.map(\.sequence), [1])
        XCTAssertTrue(w.log.coverage().breaks.first?.reason.contains("does not load") ?? false)
    }

    func testTargetsParseFromTimesClusterTimesAndResumeTokens() throws {
        XCTAssertEqual(try PointInTimeTarget.parse("1795367540:3"), ts(1_795_367_540, 3))
        XCTAssertEqual(try PointInTimeTarget.parse("2026-11-22T17:12:20Z"), ClusterTime(t: 1_795_367_540, i: .max))
        XCTAssertEqual(try PointInTimeTarget.parse("2026-11-22T18:12:20+01:00"), ClusterTime(t: 1_795_367_540, i: .max))
        XCTAssertEqual(try PointInTimeTarget.parse("2026-11-22T17:12:20.750Z"), ClusterTime(t: 1_795_367_540, i: .max))
        XCTAssertEqual(try PointInTimeTarget.parse("{\"_data\": \"826B032259000000012B0229296E04\"}"), ts(0x6B03_2259, 1))
        XCTAssertEqual(try PointInTimeTarget.parse("826B032259000000022B0229296E04"), ts(0x6B03_2259, 2))
        for bad in ["yesterday", "2026-11-22", "12:", "{\"_data\": \"zz\"}", ""] {
            XCTAssertThrowsError(try PointInTimeTarget.parse(bad), bad)
        }
    }

    func testPlansPickTheNewestSnapshotFromWhichTheLogReachesTheTarget() throws {
        let w = try ChangeLogWriter(repository: repo)
        try segment(w, ts(100), ts(110))
        try segment(w, ts(110, 2), ts(120))
        try w.recordGap(lineage: "L1", from: ts(120, 2), to: ts(130), namespaces: ["db.*"], reason: "history lost", code: 286)
        try segment(w, ts(130, 2), ts(140), lineage: "L2")
        try segment(w, ts(140, 2), ts(150), lineage: "L2")
        let s1 = try snapshot(at: ts(105))
        let s2 = try snapshot(at: ts(112))
        let s3 = try snapshot(at: ts(135))

        let p = try PointInTime.plan(repo, at: ts(118))
        XCTAssertEqual(p.base.id, s2, "the newest snapshot before the target")
        XCTAssertEqual(p.changes.map(\.sequence), [2], "only segments after its consistent point")
        XCTAssertEqual(try PointInTime.plan(repo, at: ts(108)).base.id, s1)
        XCTAssertEqual(try PointInTime.plan(repo, at: ts(108)).changes.map(\.sequence), [1, 2].filter { $0 == 1 })
        XCTAssertEqual(try PointInTime.plan(repo, at: ts(112)).changes, [], "a snapshot's own point needs no log")
        XCTAssertEqual(try PointInTime.plan(repo, at: ts(150)).base.id, s3)
        XCTAssertEqual(try PointInTime.plan(repo, at: ts(150)).changes.map(\.sequence), [4, 5])

        for (target, reason) in [(ts(125), "breaks"), (ts(132), "breaks"), (ts(151), "reaches only"), (ts(90), "no base snapshot")] {
            XCTAssertThrowsError(try PointInTime.plan(repo, at: target)) { e in
                guard case ArchiveError.notRestorable(_, let why, let windows) = e else { return XCTFail("\(e)") }
                XCTAssertTrue(why.contains(reason), "\(target): \(why)")
                XCTAssertEqual(windows.count, 2, "\(windows)")
            }
        }
        let windows = PointInTime.windows(repo)
        XCTAssertEqual(windows.map { [$0.from, $0.to] }, [[ts(105), ts(120)], [ts(135), ts(150)]])
        XCTAssertEqual(windows.first?.snapshots, [s1, s2])
    }
}
