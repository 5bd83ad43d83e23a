import BSON
import Durable
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A key vault kept in one file, for use without a MongoDB key vault collection.
///
/// File format (version 1), little-endian:
///
///     offset  size  field
///     0       8     magic "CTKVAULT"
///     8       4     format version, 1
///     12      4     number of key documents, n
///     16      ...   n BSON key documents, back to back (each starts with its own length)
///     end-4   4     CRC-32 (IEEE 802.3, as zlib) of every byte before it
///
/// The key documents are exactly what libmongocrypt produced (and what a driver would
/// insert into `encryption.__keyVault`), so they can be exported to MongoDB unchanged.
/// keyMaterial is wrapped by the master key; the file still stays private: it is created
/// with mode 0600, and opening refuses a file that group or others can access.
///
/// Every change rewrites the whole file crash-safely (temporary name, fsync, rename,
/// fsync folder), so a reader sees the old or the new vault, never a mix. Changes hold
/// an exclusive flock(2) on the containing folder and re-read the file first, so several
/// processes may add keys to one vault.
public final class FileKeyVault: KeyVault, @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var keys: [(info: DataKeyInfo, document: Document)]

    static let magic = Array("CTKVAULT".utf8)
    static let version: UInt32 = 1
    /// A vault holds data keys (a few hundred bytes each), not data.
    static let maxFileSize = 64 << 20

    private init(path: String, keys: [(info: DataKeyInfo, document: Document)]) {
        self.path = path
        self.keys = keys
    }

    /// Opens an existing vault; refuses one that group or others can access, or that is damaged.
    public static func open(at path: String) throws -> FileKeyVault {
        FileKeyVault(path: path, keys: try load(path))
    }

    /// Creates an empty vault (mode 0600); refuses to replace an existing file.
    public static func create(at path: String) throws -> FileKeyVault {
        try SecretFile.createNew(encode([]), at: path) { FieldCryptoError.keyVault(path: path, problem: $0) }
        return FileKeyVault(path: path, keys: [])
    }

    /// Opens the vault, creating an empty one first when there is no file.
    public static func openOrCreate(at path: String) throws -> FileKeyVault {
        if access(path, F_OK) != 0 && errno == ENOENT {
            do { return try create(at: path) } catch FieldCryptoError.keyVault {
                // Someone else created it in between.
            }
        }
        return try open(at: path)
    }

    public func keys(matching query: KeyVaultQuery) throws -> [Document] {
        try lock.withLock {
            var found = keys.filter { query.matches($0.info) }
            let missing = query.unanswered(by: found.map(\.info))
            if !missing.ids.isEmpty || !missing.altNames.isEmpty {
                // Another process may have added the key since we read the file.
                keys = try Self.load(path)
                found = keys.filter { query.matches($0.info) }
            }
            return found.map(\.document)
        }
    }

    public func allKeys() throws -> [Document] {
        lock.withLock { keys.map(\.document) }
    }

    public func insert(_ keyDocument: Document) throws {
        let info = try DataKeyInfo(keyDocument)
        try lock.withLock {
            try withFolderLock {
                var current = try Self.load(path)
                try KeyVaultRules.checkNoClash(info, with: current.map(\.info))
                current.append((info, keyDocument))
                try Durable.writeFile(Self.encode(current.map(\.document)), to: path, mode: 0o600)
                keys = current
            }
        }
    }

    // MARK: File

    private func withFolderLock<R>(_ body: () throws -> R) throws -> R {
        let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let fd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw FileError(operation: "open folder", path: dir, errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw FileError(operation: "lock folder", path: dir, errno: errno) }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    static func encode(_ documents: [Document]) -> [UInt8] {
        var out = magic
        appendLE(&out, version)
        appendLE(&out, UInt32(documents.count))
        for d in documents { out += d.bytes }
        appendLE(&out, CRC32.checksum(out))
        return out
    }

    static func load(_ path: String) throws -> [(info: DataKeyInfo, document: Document)] {
        let bytes = try SecretFile.read(path, maxSize: maxFileSize) { FieldCryptoError.keyVault(path: path, problem: $0) }
        func damaged(_ why: String) -> FieldCryptoError { .keyVault(path: path, problem: "damaged: \(why)") }
        guard bytes.count >= 20 else { throw damaged("\(bytes.count) bytes is shorter than the 20-byte minimum") }
        guard Array(bytes[0..<8]) == magic else { throw damaged("not a ciphertail key vault (bad magic)") }
        let version = readLE(bytes, 8)
        guard version == Self.version else { throw damaged("unknown format version \(version)") }
        let stored = readLE(bytes, bytes.count - 4)
        guard CRC32.checksum(bytes[0..<(bytes.count - 4)]) == stored else { throw damaged("checksum mismatch") }
        let count = Int(readLE(bytes, 12))
        var offset = 16
        let end = bytes.count - 4
        var keys: [(info: DataKeyInfo, document: Document)] = []
        for i in 0..<count {
            guard end - offset >= 5 else { throw damaged("key \(i) is cut off") }
            let len = Int(readLE(bytes, offset))
            guard len >= 5, len <= end - offset else { throw damaged("key \(i) has a bad length") }
            let doc: Document
            let info: DataKeyInfo
            do {
                doc = try Document(bytes: Array(bytes[offset..<(offset + len)]))
                info = try DataKeyInfo(doc)
                try KeyVaultRules.checkNoClash(info, with: keys.map(\.info))
            } catch {
                throw damaged("key \(i): \(error)")
            }
            keys.append((info, doc))
            offset += len
        }
        guard offset == end else { throw damaged("\(end - offset) bytes after the last key") }
        return keys
    }

    private static func appendLE(_ out: inout [UInt8], _ v: UInt32) {
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    private static func readLE(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), the checksum of zlib and gzip.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
