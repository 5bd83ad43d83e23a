import Archive
import BSON
import Durable
import Foundation
import Mongo
import TestSupport
import XCTest

/// Bad input gets a clear error, a meaningful exit code, and damages nothing else. These go
/// through the real CLI binary, as a user or a script would.
final class BadInputTests: XCTestCase {
    func seed(_ db: String, count: Int = 500) throws {
        let client = try TestEnv.client()
        try insert(client, Namespace(database: db, collection: "items"), (0..<count).map {
            Document(["_id": .int32(Int32($0)), "name": .string("item \($0)"), "pad": .string(String(repeating: "z", count: 200))])
        })
    }

    func testUnreachableURIFailsWithinBoundedTimeNamingTheHost() {
        let repo = TestEnv.temporaryDirectory("unreach")
        let r = TestEnv.ciphertail(["backup", "--uri", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1500", "--repo", repo])
        XCTAssertEqual(r.status, 3, r.stderr)
        XCTAssertTrue(r.stderr.contains("127.0.0.1:1"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: repo), [], "nothing written for a failed connection")
    }

    func testStandaloneMongodIsRefusedWithAnExplanation() throws {
        let port = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_STANDALONE_PORT"] ?? "27118"
        let start = TestEnv.shell("\(TestEnv.root)/ops/mongod.sh start-standalone ct-standalone \(port)")
        XCTAssertEqual(start.status, 0, start.stderr)
        defer { TestEnv.shell("\(TestEnv.root)/ops/mongod.sh stop ct-standalone") }
        let repo = TestEnv.temporaryDirectory("standalone")
        let r = TestEnv.ciphertail(["backup", "--uri", "mongodb://127.0.0.1:\(port)/", "--repo", repo])
        XCTAssertEqual(r.status, 3, r.stderr)
        XCTAssertTrue(r.stderr.contains("replica set"), r.stderr)
        XCTAssertTrue(r.stderr.contains("standalone"), r.stderr)
    }

    func testRestoreIntoNonEmptyCollectionIsRefusedWithoutDrop() throws {
        let src = TestEnv.uniqueName("busy_src"), dst = TestEnv.uniqueName("busy_dst")
        defer { dropDatabases(src, dst) }
        try seed(src)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: dst, collection: "items"), [Document(["_id": 1, "keep": "me"])])
        let repo = TestEnv.temporaryDirectory("busy")
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0)
        let refused = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*"])
        XCTAssertEqual(refused.status, 4, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("\(dst).items"), refused.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "items")), [Document(["_id": 1, "keep": "me"])])
        let dropped = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--drop"])
        XCTAssertEqual(dropped.status, 0, dropped.stderr)
        try assertSameDocuments(client, Namespace(database: src, collection: "items"), Namespace(database: dst, collection: "items"))
    }

    func testUnknownBackupIDListsWhatExists() throws {
        let src = TestEnv.uniqueName("unk")
        defer { dropDatabases(src) }
        try seed(src, count: 10)
        let repo = TestEnv.temporaryDirectory("unknown")
        let b = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"])
        XCTAssertEqual(b.status, 0, b.stderr)
        let id = b.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for args in [["restore", "--uri", TestEnv.uri], ["verify"]] {
            let r = TestEnv.ciphertail(args + ["--repo", repo, "--backup", "20990101T000000Z-00000000"])
            XCTAssertEqual(r.status, 5, r.stderr)
            XCTAssertTrue(r.stderr.contains(id), "error lists the existing backup: \(r.stderr)")
        }
        let notRepo = TestEnv.ciphertail(["list", "--repo", TestEnv.temporaryDirectory("empty")])
        XCTAssertEqual(notRepo.status, 5, notRepo.stderr)
    }

    func testDamagedAndTruncatedSegmentsAreNamedAndOtherBackupsStillRestore() throws {
        let src = TestEnv.uniqueName("dmg_src"), dst = TestEnv.uniqueName("dmg_dst")
        defer { dropDatabases(src, dst) }
        try seed(src, count: 3000)
        let repo = TestEnv.temporaryDirectory("damage")
        let first = try backup(["\(src).*"], repo: repo) { $0.blockBytes = 32 * 1024 }
        let second = try backup(["\(src).*"], repo: repo) { $0.blockBytes = 32 * 1024 }
        let repository = try Repository(path: repo)
        let segment = repository.segmentPath(backup: first.id, first.namespaces[0].segments[0])
        // Flip one byte inside the third block's payload.
        var bytes = try Durable.readFile(segment)
        let reader = try SegmentReader(path: segment)
        _ = try reader.nextBlock(); _ = try reader.nextBlock()
        let thirdBlock = reader.position
        bytes[thirdBlock + 60] ^= 0x5A
        try Data(bytes).write(to: URL(fileURLWithPath: segment))

        let verify = TestEnv.ciphertail(["verify", "--repo", repo])
        XCTAssertEqual(verify.status, 6, verify.stdout + verify.stderr)
        XCTAssertTrue(verify.stdout.contains(segment) && verify.stdout.contains("offset \(thirdBlock)"), verify.stdout)
        XCTAssertTrue(verify.stdout.contains("\(second.id): ok"), verify.stdout)

        let bad = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--backup", first.id,
                                      "--ns-from", "\(src).*", "--ns-to", "\(dst).*"])
        XCTAssertEqual(bad.status, 6, bad.stderr)
        XCTAssertTrue(bad.stderr.contains(segment) && bad.stderr.contains("offset \(thirdBlock)"), bad.stderr)

        let good = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--backup", second.id,
                                       "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--drop"])
        XCTAssertEqual(good.status, 0, good.stderr)
        try assertSameDocuments(try TestEnv.client(), Namespace(database: src, collection: "items"), Namespace(database: dst, collection: "items"))

        // Truncation: cut the second backup's segment short; verify names it.
        let seg2 = repository.segmentPath(backup: second.id, second.namespaces[0].segments[0])
        let whole = try Durable.readFile(seg2)
        try Data(whole[0..<(whole.count - 100)]).write(to: URL(fileURLWithPath: seg2))
        let v2 = TestEnv.ciphertail(["verify", "--repo", repo, "--backup", second.id, "--json"])
        XCTAssertEqual(v2.status, 6)
        XCTAssertTrue(v2.stdout.contains("truncated"), v2.stdout)
    }

    func testRepositoryThatCannotBeWrittenFailsCleanly() throws {
        let src = TestEnv.uniqueName("ro")
        defer { dropDatabases(src) }
        try seed(src, count: 10)
        let dir = TestEnv.temporaryDirectory("ro")
        let file = dir + "/plain-file"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        let r = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", file + "/repo", "--ns", "\(src).*"])
        XCTAssertEqual(r.status, 7, r.stderr)
        XCTAssertTrue(r.stderr.contains(file), r.stderr)
        // A read-only file system (root ignores permission bits, so this is the real test).
        let ro = TestEnv.temporaryDirectory("rofs")
        guard TestEnv.shell("mount -t tmpfs -o ro,size=1m tmpfs \(ro)").status == 0 else { return }
        defer { TestEnv.shell("umount \(ro)") }
        let r2 = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", ro + "/repo", "--ns", "\(src).*"])
        XCTAssertEqual(r2.status, 7, r2.stderr)
        XCTAssertTrue(r2.stderr.contains("Read-only file system") && r2.stderr.contains(ro), r2.stderr)
    }

    /// Disk full mid-backup: a real small tmpfs where the machine allows mounting, else the
    /// ENOSPC fault-injection seam. Either way: an error, no manifest, no segment that reads as whole.
    func testDiskFullLeavesNoHalfWrittenBackup() throws {
        let src = TestEnv.uniqueName("full")
        defer { dropDatabases(src) }
        let client = try TestEnv.client()
        var rng = SystemRandomNumberGenerator()
        // Incompressible payloads so that 4 MB of documents need about 4 MB of disk.
        try insert(client, Namespace(database: src, collection: "blobs"), (0..<400).map { i in
            Document(["_id": .int32(Int32(i)), "b": .binary(subtype: 0, data: (0..<10_000).map { _ in UInt8.random(in: 0...255, using: &rng) })])
        })
        let mountPoint = TestEnv.temporaryDirectory("tmpfs")
        let mounted = TestEnv.shell("mount -t tmpfs -o size=1m tmpfs \(mountPoint)").status == 0
        defer { if mounted { TestEnv.shell("umount \(mountPoint)") } }
        let repo = mountPoint + "/repo"
        let env = mounted ? [:] : ["CIPHERTAIL_FAULT_ENOSPC_AFTER": "1000000"]
        let r = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"], environment: env)
        XCTAssertEqual(r.status, 7, r.stderr)
        XCTAssertTrue(r.stderr.contains("No space left on device"), r.stderr)
        let repository = try Repository(path: repo)
        XCTAssertEqual(repository.backupIDs(), [], "no manifest for a failed backup")
        try assertNoPartialSegmentLooksWhole(repo)
        let list = TestEnv.ciphertail(["list", "--repo", repo])
        XCTAssertEqual(list.status, 0)
        XCTAssertTrue(list.stdout.contains("no backups"), list.stdout)
    }
}


/// Every file under `dir` with a final segment name must read whole, to its footer.
func assertNoPartialSegmentLooksWhole(_ dir: String, file: StaticString = #filePath, line: UInt = #line) throws {
    let e = FileManager.default.enumerator(atPath: dir)
    while let rel = e?.nextObject() as? String {
        guard rel.hasSuffix(".seg") else { continue }
        let reader = try SegmentReader(path: dir + "/" + rel)
        while try reader.nextBlock() != nil {}
        XCTAssertTrue(reader.finished, "\(rel) has a final name but is not whole", file: file, line: line)
    }
}
