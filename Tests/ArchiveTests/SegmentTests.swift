@testable import Archive
import BSON
import Digest
import Foundation
import XCTest

final class SegmentTests: XCTestCase {
    var dir: String!

    override func setUp() {
        dir = NSTemporaryDirectory() + "seg-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func records(_ n: Int, size: Int = 100) -> [[UInt8]] {
        (0..<n).map { i in Document(["_id": .int32(Int32(i)), "s": .string(String(repeating: "x", count: size + i % 17))]).bytes }
    }

    func write(_ recs: [[UInt8]], blockBytes: Int = 4096, name: String = "a.seg") throws -> (String, SegmentInfo) {
        let path = dir + "/" + name
        let w = try SegmentWriter(path: path, relativePath: name, kind: .document, level: 3, blockBytes: blockBytes)
        for r in recs { try w.append(r) }
        return (path, try w.finish())
    }

    func readAll(_ path: String) throws -> [[UInt8]] {
        let r = try SegmentReader(path: path)
        var out: [[UInt8]] = []
        while let b = try r.nextBlock() { b.forEachRecord { out.append(Array($0)) } }
        XCTAssertTrue(r.finished)
        return out
    }

    func testRoundTripAcrossManyBlocksKeepsEveryRecordAndItsOrder() throws {
        let recs = records(2000)
        let (path, info) = try write(recs)
        XCTAssertEqual(try readAll(path), recs)
        XCTAssertEqual(info.records, 2000)
        XCTAssertGreaterThan(info.blocks, 10)
        XCTAssertEqual(info.sha256, SHA256.hash(try Array(Data(contentsOf: URL(fileURLWithPath: path)))).hexString)
        XCTAssertEqual(info.rawBytes, Int64(recs.reduce(0) { $0 + $1.count }))
    }

    func testRecordLargerThanABlockGetsABlockOfItsOwn() throws {
        let big = Document(["_id": 1, "b": .binary(subtype: 0, data: [UInt8](repeating: 7, count: 3_000_000))]).bytes
        let recs = records(3) + [big] + records(3)
        let (path, info) = try write(recs, blockBytes: 1024)
        XCTAssertEqual(try readAll(path), recs)
        XCTAssertGreaterThanOrEqual(info.blocks, 3)
    }

    func testEmptySegmentIsValid() throws {
        let (path, info) = try write([])
        XCTAssertEqual(try readAll(path), [])
        XCTAssertEqual(info.blocks, 0)
    }

    func testUnfinishedSegmentNeverAppearsUnderItsName() throws {
        let path = dir + "/b.seg"
        let w = try SegmentWriter(path: path, relativePath: "b.seg", kind: .document, blockBytes: 512)
        for r in records(500) { try w.append(r) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        w.abort()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "abort removes the temporary file")
    }

    /// Flip every byte position in turn (sampled): the reader must report damage, never return
    /// different records as if they were fine.
    func testAnySingleByteCorruptionIsDetected() throws {
        let recs = records(300)
        let (path, _) = try write(recs, blockBytes: 2048)
        let original = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        for pos in stride(from: 0, to: original.count, by: max(1, original.count / 400)) {
            var bytes = original
            bytes[pos] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try readAll(path), "flip at \(pos) went unnoticed") { e in
                guard case ArchiveError.damaged(let seg, let offset, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(seg, path)
                XCTAssertLessThanOrEqual(offset, pos)
            }
        }
    }

    func testTruncationAtAnyPointIsDetected() throws {
        let (path, _) = try write(records(200), blockBytes: 2048)
        let original = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        for cut in stride(from: 0, to: original.count, by: 97) {
            try Data(original[0..<cut]).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try readAll(path), "cut at \(cut) went unnoticed")
        }
    }

    func testHostileBlockLengthIsRejectedWithoutAllocating() throws {
        let (path, _) = try write(records(10))
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        // Block header at 16: claim 4 GiB uncompressed and stored.
        for i in 24..<32 { bytes[i] = 0xFF }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try readAll(path)) { e in
            XCTAssertTrue("\(e)".contains("limit"), "\(e)")
        }
    }

    func testNotASegmentIsRejectedAtOffsetZero() throws {
        let path = dir + "/junk.seg"
        try Data(repeating: 0x41, count: 100).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SegmentReader(path: path)) { e in
            guard case ArchiveError.damaged(_, 0, _) = e else { return XCTFail("\(e)") }
        }
    }

    func testFileHeaderLayoutMatchesTheSpec() throws {
        let (path, _) = try write(records(1))
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[0..<8]), Array("CTAILSEG".utf8))
        XCTAssertEqual(Array(bytes[8..<12]), [1, 0, RecordKind.document.rawValue, SegmentFormat.codecZstd])
        XCTAssertEqual(Array(bytes[16..<20]), Array("BLK1".utf8))
        XCTAssertEqual(Array(bytes[20..<24]), [1, 0, 0, 0], "record count")
        // The payload is a plain zstd frame (magic 28 B5 2F FD).
        XCTAssertEqual(Array(bytes[64..<68]), [0x28, 0xB5, 0x2F, 0xFD])
        XCTAssertEqual(Array(bytes[(bytes.count - 64)..<(bytes.count - 60)]), Array("END1".utf8))
    }
}

final class RepositoryTests: XCTestCase {
    /// A backup folder is assembled under a temporary name and renamed into place with its
    /// writer.pid: a folder a dead writer left half-assembled is not a backup, and goes.
    func testAHalfAssembledBackupFolderIsNeverListedAndIsRemovedOnceItsWriterIsGone() throws {
        let dir = NSTemporaryDirectory() + "repo-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let repo = try Repository(path: dir, create: true)
        let w = try repo.beginBackup()
        XCTAssertTrue(FileManager.default.fileExists(atPath: w.path + "/writer.pid"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: repo.backupsPath), [w.id])
        let dead = repo.backupsPath + "/20260101T000000Z-0000abcd.999999999.42.tmp"  // no such pid
        let live = repo.backupsPath + "/20260101T000000Z-0000abce.\(getppid()).43.tmp"
        for f in [dead, live] { try FileManager.default.createDirectory(atPath: f, withIntermediateDirectories: false) }
        XCTAssertEqual(repo.incompleteBackupIDs(), [w.id])
        repo.removeInterruptedBackups()
        XCTAssertFalse(FileManager.default.fileExists(atPath: dead))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live), "its writer is alive")
    }

    func testManifestRoundTripAndUnknownAndIncompleteBackups() throws {
        let dir = NSTemporaryDirectory() + "repo-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try Repository(path: dir)) { e in XCTAssertTrue("\(e)".contains("not a ciphertail repository")) }
        let repo = try Repository(path: dir, create: true)
        let w = try repo.beginBackup()
        let seg = try w.segmentWriter(relativePath: "data/0000-000001.seg", kind: .document, level: 3)
        try seg.append(Document(["_id": 1]).bytes)
        let info = try seg.finish()
        XCTAssertEqual(repo.backupIDs(), [], "no manifest yet: not listed")
        XCTAssertEqual(repo.incompleteBackupIDs(), [w.id])
        let m = Manifest(id: w.id, createdAt: Date(timeIntervalSince1970: 1_800_000_000), completedAt: Date(timeIntervalSince1970: 1_800_000_001),
                         source: SourceInfo(hosts: "h:1", replicaSet: "rs0", serverVersion: "6.0.5"), compression: CompressionInfo(),
                         clusterTime: ClusterTimeRange(start: Timestamp(t: 1, i: 2), end: Timestamp(t: 3, i: 4)),
                         resumeTokens: ResumeTokens(start: #"{"_data":"82"}"#, end: nil),
                         namespaces: [NamespaceEntry(namespace: "a.b", type: "collection", options: "{ }", indexes: [], dataCollection: "b",
                                                     documents: 1, bytes: 10, segments: [info])],
                         events: EventLog(count: 0, segments: []))
        try w.commit(m)
        XCTAssertEqual(repo.backupIDs(), [w.id])
        XCTAssertEqual(try repo.manifest(w.id), m)
        XCTAssertThrowsError(try repo.manifest("nope")) { e in
            guard case ArchiveError.unknownBackup(_, let available) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(available, [w.id])
        }
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: repo.manifestPath(w.id)))
        XCTAssertThrowsError(try repo.manifest(w.id)) { e in
            guard case ArchiveError.badManifest = e else { return XCTFail("\(e)") }
        }
        let report = Verifier.verify(m, in: repo)
        XCTAssertTrue(report.ok, "\(report.problems)")
    }

    /// A backup under a given id (what a re-key uses): a plain name, a folder of its own.
    func testBeginBackupWithAGivenIdTakesOnlyANewPlainName() throws {
        let dir = NSTemporaryDirectory() + "repo-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let repo = try Repository(path: dir, create: true)
        let id = "20261122T171159Z-08e0435e"
        let w = try repo.beginBackup(id: id)
        XCTAssertEqual(w.id, id)
        XCTAssertEqual(repo.incompleteBackupIDs(), [id])
        XCTAssertTrue(FileManager.default.fileExists(atPath: w.path + "/writer.pid"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: w.path + "/events"))
        // The folder exists (written now, or complete, or interrupted): never shared, never overwritten.
        XCTAssertThrowsError(try repo.beginBackup(id: id)) { e in
            XCTAssertTrue("\(e)".contains("File exists"), "\(e)")
        }
        for bad in ["", "../x", "a/b", ".hidden", "..", "x y", "/abs"] {
            XCTAssertThrowsError(try repo.beginBackup(id: bad), "\(bad)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: repo.backupsPath), [id], "nothing else created")
        w.discard()
        XCTAssertEqual(repo.incompleteBackupIDs(), [])
        XCTAssertEqual(try repo.beginBackup(id: id).id, id, "free again once discarded")
    }
}
