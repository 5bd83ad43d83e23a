import BSON
import Digest
@testable import Erasure
import FieldCrypto
import Foundation
import XCTest

/// The ledger and the key-vault backup file format, on real files, no server.
final class LedgerTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "ledger-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func fill(_ l: ErasureLedger, subjects: Int) throws {
        for n in 0..<subjects {
            let intent = try l.append(ErasureLedger.draft(.intent, subject: String(format: "%064x", n), keys: [UUID()], reason: "t\(n)"))
            try l.append(ErasureLedger.draft(.erased, subject: intent.subject, keys: intent.keys.compactMap(UUID.init(uuidString:)), intent: intent.seq))
        }
    }

    func testAppendsChainAndReload() throws {
        let path = dir + "/l"
        let l = try ErasureLedger.open(at: path)
        XCTAssertTrue(l.entries.isEmpty)
        try fill(l, subjects: 3)
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        let again = try ErasureLedger.open(at: path)
        XCTAssertEqual(again.entries, l.entries)
        XCTAssertEqual(again.headHash, l.headHash)
        XCTAssertEqual(again.entries.map(\.seq), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(again.entries[0].prev, ErasureLedger.zeroHash)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(again.entries[1].prev, SHA256.hash(Array(lines[0].utf8)).hexString)
        XCTAssertEqual(again.hash(ofEntry: 6), again.headHash)
        XCTAssertEqual(again.hash(ofEntry: 2), again.entries[2].prev)
        XCTAssertTrue(again.pendingIntents.isEmpty)
        XCTAssertEqual(again.erasedKeyIds.count, 3)
        XCTAssertEqual(again.erasedKeyNames.count, 3)
    }

    func testPendingIntentIsReported() throws {
        let l = try ErasureLedger.open(at: dir + "/l")
        try fill(l, subjects: 1)
        let intent = try l.append(ErasureLedger.draft(.intent, subject: String(repeating: "a", count: 64), keys: [UUID()]))
        XCTAssertEqual(l.pendingIntents.map(\.seq), [intent.seq])
        XCTAssertTrue(l.erasedKeyNames.contains("subject/" + String(repeating: "a", count: 64)), "an intent alone already counts as erased")
    }

    /// A crash in the middle of an append leaves a line without its newline: ignored on
    /// read, overwritten by the next append.
    func testTornLastLineIsIgnoredAndOverwritten() throws {
        let path = dir + "/l"
        let l = try ErasureLedger.open(at: path)
        try fill(l, subjects: 1)
        let h = FileHandle(forWritingAtPath: path)!
        h.seekToEndOfFile()
        h.write(Data("{\"seq\":3,\"kind\":\"int".utf8))
        h.closeFile()
        let reread = try ErasureLedger.open(at: path)
        XCTAssertEqual(reread.entries.count, 2)
        try reread.append(ErasureLedger.draft(.intent, subject: String(repeating: "b", count: 64), keys: [UUID()]))
        let final = try ErasureLedger.open(at: path)
        XCTAssertEqual(final.entries.map(\.seq), [1, 2, 3])
        XCTAssertFalse(try String(contentsOfFile: path, encoding: .utf8).contains("\"int\n"))
    }

    /// An edited entry breaks the chain at the next line; the ledger is refused, naming it.
    func testEditedEntryBreaksTheChainAndIsNamed() throws {
        let path = dir + "/l"
        try fill(try ErasureLedger.open(at: path), subjects: 3)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"reason\":\"t1\"", with: "\"reason\":\"tX\"")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ErasureLedger.open(at: path)) { e in
            guard case LedgerError.damaged(_, let line, let problem)? = e as? LedgerError else { return XCTFail("\(e)") }
            XCTAssertEqual(line, 4, "the line after the edited one names the broken link")
            XCTAssertTrue(problem.contains("hash chain"), problem)
        }
    }

    func testRemovedEntryAndGarbageAreRefused() throws {
        let path = dir + "/l"
        try fill(try ErasureLedger.open(at: path), subjects: 2)
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        lines.remove(at: 1)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ErasureLedger.open(at: path)) { e in
            guard case LedgerError.damaged(_, 2, let problem)? = e as? LedgerError else { return XCTFail("\(e)") }
            XCTAssertTrue(problem.contains("where 2 was expected"), problem)
        }
        try "not json\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ErasureLedger.open(at: path)) { e in
            guard case LedgerError.damaged(_, 1, _)? = e as? LedgerError else { return XCTFail("\(e)") }
        }
    }

    func testErasedEntryMustCompleteAnIntentOfItsSubject() throws {
        let l = try ErasureLedger.open(at: dir + "/l")
        let intent = try l.append(ErasureLedger.draft(.intent, subject: String(repeating: "c", count: 64), keys: [UUID()]))
        try l.append(ErasureLedger.draft(.erased, subject: String(repeating: "d", count: 64), keys: [], intent: intent.seq))
        XCTAssertThrowsError(try ErasureLedger.open(at: dir + "/l")) { e in
            guard case LedgerError.damaged(_, 2, _)? = e as? LedgerError else { return XCTFail("\(e)") }
        }
    }

    // MARK: Key-vault backups

    func key(_ altName: String) -> Document {
        ["_id": .binary(subtype: 4, data: UUID().keyIdBytes), "keyMaterial": .binary(subtype: 0, data: [UInt8](repeating: 7, count: 96)),
         "masterKey": ["provider": "local"], "keyAltNames": [.string(altName)], "status": 0]
    }

    func testKeyVaultBackupRoundTripScrubAndRestore() throws {
        let l = try ErasureLedger.open(at: dir + "/l")
        let keys = (0..<5).map { key("subject/\($0)") }
        let path = try KeyVaultBackups.write(keys: keys, source: "test", ledger: l, to: dir + "/kvb")
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        let (meta, read) = try KeyVaultBackups.read(path)
        XCTAssertEqual(read, keys)
        XCTAssertEqual(meta.keys, 5)
        XCTAssertEqual(meta.ledgerSequence, 0)
        let offline = dir + "/offline.ctkvb"
        try FileManager.default.copyItem(atPath: path, toPath: offline)

        // Erase subject/1 (by id) and subject/3 (by name only).
        let id1 = try DataKeyInfo(keys[1]).id
        try l.append(ErasureLedger.draft(.intent, subject: "1", keys: [id1]))
        try l.append(ErasureLedger.draft(.intent, subject: "3", keys: []))
        XCTAssertEqual(try KeyVaultBackups.scrub(dir + "/kvb", ledger: l), [path])
        XCTAssertEqual(try KeyVaultBackups.read(path).1, [keys[0], keys[2], keys[4]])
        XCTAssertEqual(try KeyVaultBackups.scrub(dir + "/kvb", ledger: l), [], "nothing left to scrub")

        // The offline copy still holds them; restoring it withholds them.
        let vault = try InMemoryKeyVault(keys: [keys[0]])
        let r = try KeyVaultBackups.restore(offline, into: vault, ledger: l)
        XCTAssertEqual(r.added, 2)
        XCTAssertEqual(r.alreadyPresent, 1)
        XCTAssertEqual(r.withheldErased, 2)
        XCTAssertEqual(Set(try vault.allKeys().map { try DataKeyInfo($0).altNames[0] }), ["subject/0", "subject/2", "subject/4"])
    }

    func testKeyVaultBackupRefusesTamperingAndARolledBackLedger() throws {
        let l = try ErasureLedger.open(at: dir + "/l")
        try fill(l, subjects: 2)
        let path = try KeyVaultBackups.write(keys: [key("a")], source: "test", ledger: l, to: dir + "/kvb")
        // A ledger with fewer entries than the backup saw: rolled back.
        let other = try ErasureLedger.open(at: dir + "/other")
        try fill(other, subjects: 1)
        XCTAssertThrowsError(try KeyVaultBackups.restore(path, into: try InMemoryKeyVault(), ledger: other)) { e in
            guard case KeyVaultBackups.BackupError.ledgerRolledBack? = e as? KeyVaultBackups.BackupError else { return XCTFail("\(e)") }
        }
        // One flipped byte anywhere fails the SHA-256.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 2] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try KeyVaultBackups.read(path)) { e in
            XCTAssertTrue("\(e)".contains("SHA-256 mismatch"), "\(e)")
        }
    }

    // MARK: Scanner pieces

    func testTokenMatchingKeepsIdsApart() {
        XCTAssertTrue(ArchiveScanner.containsToken("user-0042", "user-0042"))
        XCTAssertTrue(ArchiveScanner.containsToken("see user-0042, twice", "user-0042"))
        XCTAssertFalse(ArchiveScanner.containsToken("user-00420", "user-0042"))
        XCTAssertFalse(ArchiveScanner.containsToken("xuser-0042", "user-0042"))
    }

    func testNeedleSearchFindsEveryOccurrence() {
        let hay = Array("abcabcXabc".utf8)
        hay.withUnsafeBytes { buf in
            XCTAssertEqual(ArchiveScanner.hits(buf, [Array("abc".utf8)]), [0, 3, 7])
            XCTAssertEqual(ArchiveScanner.hits(buf, [Array("X".utf8), Array("cX".utf8)]), [5, 6])
            XCTAssertEqual(ArchiveScanner.hits(buf, [Array("abcabcXabcd".utf8)]), [])
        }
    }
}
