import Archive
import BSON
import Foundation
import Mongo
import TestSupport
import XCTest

/// A backup killed at any moment leaves no manifest and no segment that a reader takes for
/// whole; earlier backups still verify and restore.
final class CrashSafetyTests: XCTestCase {
    func testKilledBackupsNeverLeaveAValidLookingPartialBackup() throws {
        let src = TestEnv.uniqueName("crash_src"), dst = TestEnv.uniqueName("crash_dst")
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "docs"), (0..<120_000).map {
            Document(["_id": .int32(Int32($0)), "text": .string("document number \($0) " + String(repeating: "abc", count: 60))])
        })
        let repo = TestEnv.temporaryDirectory("crash")
        let began = Date()
        let good = TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*", "--json"])
        XCTAssertEqual(good.status, 0, good.stderr)
        let duration = Date().timeIntervalSince(began)

        // Kill at different moments of a backup. After each kill the backup is either complete
        // and listed (the kill landed after its manifest), or not listed at all, and no segment
        // with a final name is partial. Each new backup clears away the one killed before it.
        let repository = try Repository(path: repo)
        var interrupted = 0
        for fraction in [0.1, 0.3, 0.5, 0.7, 0.9] {
            let before = repository.backupIDs().count
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestEnv.binary)
            p.arguments = ["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(useconds_t(duration * fraction * 1_000_000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let after = repository.backupIDs().count
            XCTAssertTrue(after == before || after == before + 1, "kill at \(fraction): \(before) -> \(after) backups")
            if after == before && !repository.incompleteBackupIDs().isEmpty { interrupted += 1 }
            try assertNoPartialSegmentLooksWhole(repo)
        }
        XCTAssertGreaterThan(interrupted, 0, "no backup was interrupted mid-way; the test proves nothing")
        let listed = repository.backupIDs().count
        let verify = TestEnv.ciphertail(["verify", "--repo", repo])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
        let list = TestEnv.ciphertail(["list", "--repo", repo])
        XCTAssertEqual(list.status, 0)
        // The next backup clears away what the killed ones left.
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", repo, "--ns", "\(src).*"]).status, 0)
        XCTAssertEqual(repository.incompleteBackupIDs(), [])
        XCTAssertEqual(repository.backupIDs().count, listed + 1)
        let restored = TestEnv.ciphertail(["restore", "--uri", TestEnv.uri, "--repo", repo, "--ns-from", "\(src).*", "--ns-to", "\(dst).*"])
        XCTAssertEqual(restored.status, 0, restored.stderr)
        try assertSameDocuments(client, Namespace(database: src, collection: "docs"), Namespace(database: dst, collection: "docs"))
    }
}
