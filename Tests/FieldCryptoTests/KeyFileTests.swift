import BSON
import FieldCrypto
import Foundation
import XCTest

final class KeyFileTests: XCTestCase {
    var folder: String!

    override func setUpWithError() throws { folder = try makeTemporaryFolder() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: folder) }

    // MARK: LocalMasterKey

    func testMasterKeyFileIsCreatedPrivateAndLoadsBack() throws {
        let path = folder + "/master.key"
        let created = try LocalMasterKey.create(at: path)
        XCTAssertEqual(mode(of: path), 0o600)
        let onDisk = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(onDisk.count, 96)
        XCTAssertGreaterThan(Set(onDisk).count, 40, "random bytes, not a constant")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["master.key"], "no temporary file left")

        // The loaded key decrypts what the created one encrypted.
        let vault = try InMemoryKeyVault()
        let e1 = try MongoCryptEngine(localMasterKey: created, keyVault: vault)
        let id = try DataKeyInfo(e1.createDataKey()).id
        let ct = try e1.encrypt("x", keyId: id, algorithm: .random)
        let e2 = try MongoCryptEngine(localMasterKey: LocalMasterKey.load(from: path), keyVault: vault)
        XCTAssertEqual(try e2.decrypt(ct), "x")

        // Never printed.
        XCTAssertEqual(created.description, "LocalMasterKey(96 bytes, redacted)")
        var dumped = ""
        dump(created, to: &dumped)
        XCTAssertFalse(dumped.contains(String(onDisk[0])) && dumped.contains(String(onDisk[1])) && dumped.contains(String(onDisk[2])),
                       "dump shows no key bytes: \(dumped)")
    }

    func testMasterKeyCreateNeverReplacesAFile() throws {
        let path = folder + "/master.key"
        _ = try LocalMasterKey.create(at: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        guard case .masterKey(path?, let problem)? = expectFieldCryptoError({ try LocalMasterKey.create(at: path) }) else {
            return XCTFail("expected a refusal")
        }
        XCTAssert(problem.contains("already exists"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
    }

    func testMasterKeyFileWithWrongModeOrSizeIsRefused() throws {
        let path = folder + "/master.key"
        _ = try LocalMasterKey.create(at: path)
        chmod(path, 0o644)
        let e = expectFieldCryptoError { try LocalMasterKey.load(from: path) }
        print("master key 0644:", e.map(String.init(describing:)) ?? "-")
        guard case .masterKey(path?, _)? = e else { return XCTFail("expected a refusal naming the file") }
        XCTAssert(e!.description.contains(path))
        XCTAssert(e!.description.contains("0644"))
        chmod(path, 0o640)
        XCTAssertNotNil(expectFieldCryptoError { try LocalMasterKey.load(from: path) })

        let short = folder + "/short.key"
        _ = FileManager.default.createFile(atPath: short, contents: Data(count: 95), attributes: [.posixPermissions: 0o600])
        let s = expectFieldCryptoError { try LocalMasterKey.load(from: short) }
        XCTAssert(s?.description.contains(short) == true && s?.description.contains("95 bytes") == true, "\(String(describing: s))")
        let long = folder + "/long.key"
        _ = FileManager.default.createFile(atPath: long, contents: Data(count: 97), attributes: [.posixPermissions: 0o600])
        XCTAssertNotNil(expectFieldCryptoError { try LocalMasterKey.load(from: long) })
        XCTAssertNotNil(expectFieldCryptoError { try LocalMasterKey(bytes: [1, 2, 3]) })
    }

    // MARK: FileKeyVault

    func testFileKeyVaultStoresFindsAndListsKeysAcrossReopen() throws {
        let path = folder + "/keys.vault"
        let master = try randomMasterKey()
        let vault = try FileKeyVault.create(at: path)
        XCTAssertEqual(mode(of: path), 0o600)
        let engine = try MongoCryptEngine(localMasterKey: master, keyVault: vault)
        let k1 = try engine.createDataKey(keyAltNames: ["customers"])
        let k2 = try engine.createDataKey()
        XCTAssertEqual(mode(of: path), 0o600, "rewrites keep the mode")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["keys.vault"], "no temporary file left")
        let ct = try engine.encrypt("stored", keyAltName: "customers", algorithm: .deterministic)

        let reopened = try FileKeyVault.open(at: path)
        XCTAssertEqual(try reopened.allKeys().map(\.bytes), [k1.bytes, k2.bytes], "byte-exact, in insertion order")
        let id2 = try DataKeyInfo(k2).id
        XCTAssertEqual(try reopened.keys(matching: KeyVaultQuery(ids: [id2])).map(\.bytes), [k2.bytes])
        XCTAssertEqual(try reopened.keys(matching: KeyVaultQuery(altNames: ["customers"])).map(\.bytes), [k1.bytes])
        XCTAssertEqual(try reopened.keys(matching: KeyVaultQuery(ids: [id2], altNames: ["customers"])).count, 2)
        XCTAssertEqual(try reopened.keys(matching: KeyVaultQuery(ids: [UUID()], altNames: ["nope"])).count, 0)
        let engine2 = try MongoCryptEngine(localMasterKey: master, keyVault: reopened)
        XCTAssertEqual(try engine2.decrypt(ct), "stored")

        // A key another handle added is found without reopening.
        let k3 = try engine2.createDataKey(keyAltNames: ["late"])
        XCTAssertEqual(try vault.keys(matching: KeyVaultQuery(altNames: ["late"])).map(\.bytes), [k3.bytes])

        // keyAltNames stay unique, as with MongoDB's unique index; the file is unchanged.
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        guard case .invalidKeyDocument(let why)? = expectFieldCryptoError({ try engine.createDataKey(keyAltNames: ["customers"]) }) else {
            return XCTFail("expected a duplicate keyAltName refusal")
        }
        XCTAssert(why.contains("customers"))
        XCTAssertNotNil(expectFieldCryptoError { try reopened.insert(k1) }, "duplicate _id")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        // create() never replaces a vault.
        guard case .keyVault(path, _)? = expectFieldCryptoError({ try FileKeyVault.create(at: path) }) else { return XCTFail() }
        XCTAssertEqual(try FileKeyVault.openOrCreate(at: path).allKeys().count, 3)
    }

    /// Crypto-shredding in the file vault: the key is gone from the file and from a second
    /// handle once it reloads, the old file's bytes are zeroed, and both handles keep working.
    func testDeletedKeysAreGoneEverywhereAndTheOldBytesWiped() throws {
        let path = folder + "/keys.vault"
        let master = try randomMasterKey()
        let vault = try FileKeyVault.create(at: path)
        let engine = try MongoCryptEngine(localMasterKey: master, keyVault: vault)
        let keys = try (0..<3).map { try engine.createDataKey(keyAltNames: ["subject/\($0)"]) }
        let ids = try keys.map { try DataKeyInfo($0).id }
        let ct = try engine.encrypt("secret", keyId: ids[1], algorithm: .random)
        let other = try FileKeyVault.open(at: path)
        XCTAssertEqual(other.count, 3)
        let oldFile = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))  // the inode the delete replaces

        XCTAssertEqual(try vault.delete(ids: [ids[1], UUID()]), 1)
        XCTAssertEqual(try vault.delete(ids: [ids[1]]), 0, "deleting again changes nothing")
        XCTAssertEqual(mode(of: path), 0o600)
        XCTAssertEqual(try FileKeyVault.open(at: path).allKeys().map(\.bytes), [keys[0].bytes, keys[2].bytes])
        let old = [UInt8](oldFile.readDataToEndOfFile())
        XCTAssertFalse(old.isEmpty)
        XCTAssertTrue(old.allSatisfy { $0 == 0 }, "the replaced file still holds key records")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["keys.vault"])

        // The other handle answers from memory until it reloads; its next append reads the new file first.
        XCTAssertEqual(try other.keys(matching: KeyVaultQuery(ids: [ids[1]])).count, 1)
        try other.reload()
        XCTAssertEqual(try other.keys(matching: KeyVaultQuery(ids: [ids[1]])).count, 0)
        let fresh = try MongoCryptEngine(localMasterKey: master, keyVault: other)
        guard case .keyNotFound? = expectFieldCryptoError({ try fresh.decrypt(ct) }) else { return XCTFail("a deleted key still decrypts") }
        let k4 = try fresh.createDataKey(keyAltNames: ["subject/4"])
        XCTAssertEqual(try vault.keys(matching: KeyVaultQuery(altNames: ["subject/4"])).map(\.bytes), [k4.bytes])
        XCTAssertEqual(try FileKeyVault.open(at: path).count, 3)
    }

    func testKeyVaultReadableByOthersIsRefused() throws {
        let path = folder + "/keys.vault"
        _ = try FileKeyVault.create(at: path)
        for m: mode_t in [0o644, 0o640, 0o604, 0o620] {
            chmod(path, m)
            let e = expectFieldCryptoError { try FileKeyVault.open(at: path) }
            guard case .keyVault(path, let problem)? = e else { return XCTFail("mode \(String(m, radix: 8)) should be refused") }
            XCTAssert(problem.contains(String(format: "%04o", m)), problem)
            if m == 0o644 { print("key vault 0644:", e!) }
        }
        chmod(path, 0o600)
        XCTAssertNoThrow(try FileKeyVault.open(at: path))
    }

    func testDamagedKeyVaultIsRefused() throws {
        let path = folder + "/keys.vault"
        let vault = try FileKeyVault.create(at: path)
        let engine = try MongoCryptEngine(localMasterKey: randomMasterKey(), keyVault: vault)
        try engine.createDataKey(keyAltNames: ["a"])
        try engine.createDataKey(keyAltNames: ["b"])
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))

        func refuses(_ bytes: [UInt8], _ label: String) {
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
            chmod(path, 0o600)
            let e = expectFieldCryptoError { try FileKeyVault.open(at: path) }
            guard case .keyVault(path, let problem)? = e else { return XCTFail("\(label): expected a refusal naming the file, got \(String(describing: e))") }
            XCTAssert(problem.hasPrefix("damaged"), "\(label): \(problem)")
            if label == "flipped byte" { print("damaged key vault:", e!) }
        }
        var flipped = good
        flipped[good.count / 2] ^= 0x20  // inside a key document (its keyMaterial or dates)
        refuses(flipped, "flipped byte")
        refuses(Array(good.dropLast(1)), "truncated by one byte")
        refuses(Array(good.prefix(good.count / 2)), "truncated in half")
        refuses(Array(good.prefix(10)), "header only")
        refuses([], "empty")
        refuses(Array("CTKVAULX".utf8) + Array(good.dropFirst(8)), "bad magic")
        // Bytes past the committed length are an interrupted append: ignored, then overwritten.
        _ = FileManager.default.createFile(atPath: path, contents: Data(good + [0, 1, 2]), attributes: [.posixPermissions: 0o600])
        chmod(path, 0o600)
        let resumed = try FileKeyVault.open(at: path)
        XCTAssertEqual(try resumed.allKeys().count, 2)
        try MongoCryptEngine(localMasterKey: randomMasterKey(), keyVault: resumed).createDataKey(keyAltNames: ["c"])
        XCTAssertEqual(try FileKeyVault.open(at: path).allKeys().count, 3)
        // A valid BSON file that is not a vault (e.g. someone pointed at a dump).
        refuses(Document(["_id": 1]).bytes, "plain BSON")
        // The untouched bytes still open.
        _ = FileManager.default.createFile(atPath: path, contents: Data(good), attributes: [.posixPermissions: 0o600])
        XCTAssertEqual(try FileKeyVault.open(at: path).allKeys().count, 2)
    }

    func testMissingFilesAreFileErrorsWithThePath() {
        let path = folder + "/absent"
        do { _ = try FileKeyVault.open(at: path); XCTFail() } catch { XCTAssert("\(error)".contains(path), "\(error)") }
        do { _ = try LocalMasterKey.load(from: path); XCTFail() } catch { XCTAssert("\(error)".contains(path), "\(error)") }
    }
}
