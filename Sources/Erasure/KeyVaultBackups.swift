import BSON
import Digest
import Durable
import FieldCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Key-vault backups: the data key documents (still wrapped by the master key) saved apart
/// from the data archives, one file each (docs/FORMAT.md, "Key-vault backups"):
///
///     0   8   magic "CTKVBKUP"
///     8   4   format version 1, little-endian
///     12  4   M: length of the metadata, little-endian
///     16  M   metadata, JSON (`Metadata`)
///     ..      the keys, each: u32 length L, the BSON key document (L bytes)
///     end 32  SHA-256 of every byte before it
///
/// A backup can never bring an erased key back: `restore` drops every key the ledger names
/// before anything is written, and refuses a ledger older than the backup (one rolled back).
/// `erase` also rewrites the backups in the managed folder without the erased keys.
public enum KeyVaultBackups {
    public struct Metadata: Codable, Equatable, Sendable {
        public var created: String
        /// The key vault it was taken from (a path, or servers and namespace without credentials).
        public var source: String
        public var keys: Int
        /// The ledger's last entry when the backup was taken, and that line's hash.
        public var ledgerSequence: Int
        public var ledgerHead: String
        /// The ledger entry up to which erased keys were removed from this file (0: never scrubbed).
        public var scrubbedThrough: Int
    }

    public struct RestoreResult: Codable, Equatable, Sendable {
        public var backup: String
        public var keysInBackup: Int
        public var added: Int
        public var alreadyPresent: Int
        /// Keys the ledger names: never restored.
        public var withheldErased: Int
    }

    public enum BackupError: Error, CustomStringConvertible {
        case damaged(path: String, problem: String)
        case ledgerRolledBack(path: String, backupSequence: Int, ledgerSequence: Int)

        public var description: String {
            switch self {
            case let .damaged(path, problem): return "key-vault backup \(path) is damaged: \(problem)"
            case let .ledgerRolledBack(path, b, l):
                return "key-vault backup \(path) was taken when the erasure ledger had \(b) entries, but the ledger now has \(l) or a different history: it was rolled back or replaced; refusing to restore keys without the full ledger"
            }
        }
    }

    static let magic = Array("CTKVBKUP".utf8)
    public static let fileExtension = "ctkvb"

    /// Writes a backup of these keys into `folder` (created 0700; the file 0600) and returns its path.
    public static func write(keys: [Document], source: String, ledger: ErasureLedger?, to folder: String, date: Date = Date()) throws -> String {
        try Durable.makeDirectory(folder, mode: 0o700)
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        let iso = ISO8601DateFormatter()
        let meta = Metadata(created: iso.string(from: date), source: source, keys: keys.count,
                            ledgerSequence: ledger?.entries.count ?? 0, ledgerHead: ledger?.headHash ?? ErasureLedger.zeroHash,
                            scrubbedThrough: 0)
        let path = (folder as NSString).appendingPathComponent("keyvault-\(f.string(from: date)).\(fileExtension)")
        guard access(path, F_OK) != 0 else { throw FileError(operation: "create", path: path, errno: EEXIST) }
        try Durable.writeFile(try encode(meta, keys), to: path, mode: 0o600)
        return path
    }

    static func encode(_ meta: Metadata, _ keys: [Document]) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = Array(try encoder.encode(meta))
        var out = magic
        appendLE(&out, 1)
        appendLE(&out, UInt32(json.count))
        out += json
        for k in keys {
            appendLE(&out, UInt32(k.bytes.count))
            out += k.bytes
        }
        out += SHA256.hash(out)
        return out
    }

    /// Reads and checks a backup: magic, version, hash, every key document's shape.
    public static func read(_ path: String) throws -> (Metadata, [Document]) {
        let bytes = try Durable.readFile(path)
        func damaged(_ why: String) -> BackupError { .damaged(path: path, problem: why) }
        guard bytes.count >= 16 + 32, Array(bytes[0..<8]) == magic else { throw damaged("not a ciphertail key-vault backup (bad magic)") }
        guard readLE(bytes, 8) == 1 else { throw damaged("unknown format version \(readLE(bytes, 8))") }
        let body = bytes.count - 32
        guard SHA256.hash(Array(bytes[0..<body])) == Array(bytes[body...]) else { throw damaged("SHA-256 mismatch (truncated or altered)") }
        let m = Int(readLE(bytes, 12))
        guard 16 + m <= body else { throw damaged("metadata length \(m) runs past the end") }
        let meta: Metadata
        do { meta = try JSONDecoder().decode(Metadata.self, from: Data(bytes[16..<16 + m])) } catch { throw damaged("metadata: \(error)") }
        var keys: [Document] = []
        var at = 16 + m
        while at < body {
            guard body - at >= 4 else { throw damaged("key \(keys.count) is cut off") }
            let len = Int(readLE(bytes, at))
            guard len >= 5, at + 4 + len <= body else { throw damaged("key \(keys.count) has a bad length") }
            do {
                let d = try Document(bytes: Array(bytes[at + 4..<at + 4 + len]))
                _ = try DataKeyInfo(d)
                keys.append(d)
            } catch { throw damaged("key \(keys.count): \(error)") }
            at += 4 + len
        }
        guard keys.count == meta.keys else { throw damaged("\(keys.count) keys where the metadata says \(meta.keys)") }
        return (meta, keys)
    }

    /// The backups in a folder, oldest first.
    public static func list(_ folder: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix("." + fileExtension) }.sorted().map { (folder as NSString).appendingPathComponent($0) }
    }

    /// Whether a key document is one the ledger erased (by id or by its subject's name).
    static func isErased(_ key: Document, ids: Set<UUID>, names: Set<String>) -> Bool {
        guard let info = try? DataKeyInfo(key) else { return false }
        return ids.contains(info.id) || info.altNames.contains(where: names.contains)
    }

    /// Rewrites every backup in `folder` that holds a key the ledger erased, without it (and
    /// wipes the old file's bytes). Returns the paths rewritten.
    @discardableResult
    public static func scrub(_ folder: String, ledger: ErasureLedger) throws -> [String] {
        let ids = ledger.erasedKeyIds
        let names = ledger.erasedKeyNames
        var changed: [String] = []
        for path in list(folder) {
            var (meta, keys) = try read(path)
            let kept = keys.filter { !isErased($0, ids: ids, names: names) }
            guard kept.count != keys.count else { continue }
            keys = kept
            meta.keys = kept.count
            meta.scrubbedThrough = ledger.entries.count
            try Durable.replaceWiping(try encode(meta, keys), at: path)
            changed.append(path)
        }
        return changed
    }

    /// Puts the backup's keys back into `vault`, less every key the ledger erased; keys
    /// already in the vault stay as they are (a restore adds what was lost, it never rolls
    /// newer keys back). The ledger is applied in memory before the first write.
    public static func restore(_ path: String, into vault: any KeyVault, ledger: ErasureLedger) throws -> RestoreResult {
        let (meta, keys) = try read(path)
        guard meta.ledgerSequence <= ledger.entries.count, ledger.hash(ofEntry: meta.ledgerSequence) == meta.ledgerHead else {
            throw BackupError.ledgerRolledBack(path: path, backupSequence: meta.ledgerSequence, ledgerSequence: ledger.entries.count)
        }
        let ids = ledger.erasedKeyIds
        let names = ledger.erasedKeyNames
        let allowed = keys.filter { !isErased($0, ids: ids, names: names) }
        let present = Set(try vault.allKeys().compactMap { try? DataKeyInfo($0).id })
        let missing = allowed.filter { (try? DataKeyInfo($0).id).map { !present.contains($0) } ?? false }
        if !missing.isEmpty { try vault.insert(contentsOf: missing) }
        return RestoreResult(backup: path, keysInBackup: keys.count, added: missing.count,
                             alreadyPresent: allowed.count - missing.count, withheldErased: keys.count - allowed.count)
    }

    private static func appendLE(_ out: inout [UInt8], _ v: UInt32) {
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    private static func readLE(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}
