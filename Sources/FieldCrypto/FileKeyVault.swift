import BSON
import Durable
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A key vault kept in one file, for use without a MongoDB key vault collection. It holds
/// one data key per subject, so it must take hundreds of thousands of keys: it is an
/// append-only log with an in-memory index.
///
/// File format (version 2), little-endian:
///
///     offset  size  field
///     0       8     magic "CTKVAULT"
///     8       4     format version, 2
///     12      4     reserved, 0
///     16      8     committed length: the file's valid bytes, header included
///     24      4     CRC-32 (IEEE 802.3, as zlib) of bytes 0..23
///     28      4     reserved, 0
///     32      ...   records, each: u32 length L of the key document, the BSON key document
///                   (L bytes), u32 CRC-32 of those L bytes
///
/// Appending writes the records after the committed length, fsyncs, then rewrites the
/// committed length (one 12-byte write inside the first sector) and fsyncs again. Bytes past
/// the committed length are an append a crash interrupted: ignored on open, overwritten by
/// the next append. A file shorter than its committed length, or any record that does not
/// check, is damaged and refused with the path.
///
/// The key documents are exactly what libmongocrypt produced (and what a driver would
/// insert into `encryption.__keyVault`), so they can be exported to MongoDB unchanged.
/// keyMaterial is wrapped by the master key; the file still stays private: it is created
/// with mode 0600, and opening refuses a file that group or others can access. Appends hold
/// an exclusive flock(2) on the containing folder and first read what other processes
/// appended, so several processes may add keys to one vault.
public final class FileKeyVault: KeyVault, @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    // The committed records as read, back to back, and where each key document lies in
    // them: one buffer instead of an object per key keeps a vault of a million subjects
    // within a few hundred megabytes. Documents are cut out when asked for.
    private var storage: [UInt8] = []
    private var spans: [Range<Int>] = []
    private var ids: [UUID] = []
    private var byId: [UUID: Int] = [:]
    private var byAltName: [String: Int] = [:]
    private var committed = 0  // bytes of the file this index reflects
    private var inode: ino_t = 0  // of the file this index reflects: a rewrite (delete, rotation) makes a new one

    static let magic = Array("CTKVAULT".utf8)
    static let version: UInt32 = 2
    static let headerSize = 32
    /// About 250 bytes a key: room for millions of subjects.
    static let maxFileSize = 1 << 30

    private init(path: String) { self.path = path }

    /// Opens an existing vault; refuses one that group or others can access, or that is damaged.
    public static func open(at path: String) throws -> FileKeyVault {
        let v = FileKeyVault(path: path)
        try v.refresh()
        return v
    }

    /// Creates an empty vault (mode 0600); refuses to replace an existing file.
    public static func create(at path: String) throws -> FileKeyVault {
        try SecretFile.createNew(header(committed: headerSize), at: path) { FieldCryptoError.keyVault(path: path, problem: $0) }
        return try open(at: path)
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

    public var count: Int { lock.withLock { spans.count } }

    private func document(_ i: Int) -> Document { Document(trusted: Array(storage[spans[i]])) }

    public func keys(matching query: KeyVaultQuery) throws -> [Document] {
        try lock.withLock {
            var found = lookup(query)
            if found.count < query.ids.count + query.altNames.count {
                // Another process may have appended the key since we read the file.
                try refreshLocked()
                found = lookup(query)
            }
            return found.map(document)
        }
    }

    public func keyIds(forAltNames names: [String]) throws -> [String: UUID] {
        try lock.withLock {
            func look() -> [String: UUID] {
                var out: [String: UUID] = [:]
                for n in names { if let i = byAltName[n] { out[n] = ids[i] } }
                return out
            }
            var found = look()
            if found.count < Set(names).count {
                try refreshLocked()
                found = look()
            }
            return found
        }
    }

    private func lookup(_ query: KeyVaultQuery) -> [Int] {
        var hits = Set<Int>()
        for id in query.ids { if let i = byId[id] { hits.insert(i) } }
        for n in query.altNames { if let i = byAltName[n] { hits.insert(i) } }
        return hits.sorted()
    }

    public func allKeys() throws -> [Document] {
        lock.withLock { spans.indices.map(document) }
    }

    public func insert(_ keyDocument: Document) throws { try insert(contentsOf: [keyDocument]) }

    /// Appends several keys with one pair of fsyncs.
    public func insert(contentsOf keyDocuments: [Document]) throws {
        let newInfos = try keyDocuments.map(DataKeyInfo.init)
        try lock.withLock {
            try withFolderLock {
                try refreshLocked()
                var ids = Set<UUID>()
                var names = Set<String>()
                for info in newInfos {
                    if byId[info.id] != nil || !ids.insert(info.id).inserted {
                        throw FieldCryptoError.invalidKeyDocument("a key with id \(info.id.keyIdString) is already in the vault")
                    }
                    for n in info.altNames where byAltName[n] != nil || !names.insert(n).inserted {
                        throw FieldCryptoError.invalidKeyDocument("keyAltName \"\(n)\" is already used by another key")
                    }
                }
                var records: [UInt8] = []
                for d in keyDocuments { Self.appendRecord(&records, d.bytes) }
                let newLength = committed + records.count
                guard newLength <= Self.maxFileSize else {
                    throw FieldCryptoError.keyVault(path: path, problem: "full: \(Self.maxFileSize) bytes")
                }
                let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
                if fd < 0 { throw FileError(operation: "open", path: path, errno: errno) }
                defer { close(fd) }
                try Durable.pwriteAll(fd, records, at: committed, path: path)
                if fsync(fd) != 0 { throw FileError(operation: "fsync", path: path, errno: errno) }
                try Durable.pwriteAll(fd, Array(Self.header(committed: newLength)[16..<28]), at: 16, path: path)
                if fsync(fd) != 0 { throw FileError(operation: "fsync", path: path, errno: errno) }
                if ftruncate(fd, off_t(newLength)) != 0 { throw FileError(operation: "truncate", path: path, errno: errno) }
                var at = storage.count
                storage += records
                for (info, doc) in zip(newInfos, keyDocuments) {
                    add(info, at + 4..<at + 4 + doc.bytes.count)
                    at += doc.bytes.count + 8
                }
                committed = newLength
            }
        }
    }

    /// Rewrites the whole file with these keys in place of the ones with the same ids, then
    /// switches to it atomically (temporary file, fsync, rename, fsync the folder): a crash
    /// leaves either the old vault or the new one, never a mix.
    public func replace(_ keyDocuments: [Document]) throws {
        let newInfos = try keyDocuments.map(DataKeyInfo.init)
        try lock.withLock {
            try withFolderLock {
                try refreshLocked()
                var replacement: [Int: Document] = [:]
                for (info, doc) in zip(newInfos, keyDocuments) {
                    guard let i = byId[info.id] else {
                        throw FieldCryptoError.invalidKeyDocument("no key with id \(info.id.keyIdString) to replace")
                    }
                    let old = try DataKeyInfo(document(i))
                    guard old.altNames == info.altNames else {
                        throw FieldCryptoError.invalidKeyDocument("key \(info.id.keyIdString): a replacement must keep the keyAltNames")
                    }
                    replacement[i] = doc
                }
                var records: [UInt8] = []
                for i in spans.indices {
                    Self.appendRecord(&records, replacement[i]?.bytes ?? Array(storage[spans[i]]))
                }
                guard Self.headerSize + records.count <= Self.maxFileSize else {
                    throw FieldCryptoError.keyVault(path: path, problem: "full: \(Self.maxFileSize) bytes")
                }
                try Durable.writeFile(Self.header(committed: Self.headerSize + records.count) + records, to: path, mode: 0o600)
                resetIndex()
                try refreshLocked()
            }
        }
    }

    /// Rewrites the file without these keys (temporary file, fsync, rename, fsync the
    /// folder) and overwrites the old file with zeros, so the destroyed keys' wrapped
    /// material is not left behind in it.
    public func delete(ids gone: [UUID]) throws -> Int {
        try lock.withLock {
            try withFolderLock {
                try refreshLocked()
                let drop = Set(gone.compactMap { byId[$0] })
                guard !drop.isEmpty else { return 0 }
                var records: [UInt8] = []
                for i in spans.indices where !drop.contains(i) { Self.appendRecord(&records, Array(storage[spans[i]])) }
                try Durable.replaceWiping(Self.header(committed: Self.headerSize + records.count) + records, at: path)
                resetIndex()
                try refreshLocked()
                return drop.count
            }
        }
    }

    public func reload() throws {
        try lock.withLock {
            resetIndex()
            try refreshLocked()
        }
    }

    private func resetIndex() {
        storage.withUnsafeMutableBytes { if let b = $0.baseAddress { wipe(b, $0.count) } }
        storage = []
        spans = []
        ids = []
        byId = [:]
        byAltName = [:]
        committed = 0
        inode = 0
    }

    private func add(_ info: DataKeyInfo, _ span: Range<Int>) {
        let i = spans.count
        spans.append(span)
        ids.append(info.id)
        byId[info.id] = i
        for n in info.altNames { byAltName[n] = i }
    }

    // MARK: File

    private func refresh() throws { try lock.withLock { try refreshLocked() } }

    /// Reads the header, then only the records past what the index already holds: each batch
    /// of new keys costs what it adds, not the size of the vault.
    private func refreshLocked() throws {
        // Another process replaced the file (a delete or a rotation): read it from the start.
        var st = stat()
        if stat(path, &st) == 0, inode != 0, st.st_ino != inode { resetIndex() }
        if inode == 0 { inode = st.st_ino }
        let refuse = { (why: String) in FieldCryptoError.keyVault(path: self.path, problem: why) }
        let head = try SecretFile.read(path, maxSize: Self.maxFileSize, from: 0, count: Self.headerSize, refuse: refuse)
        func damaged(_ why: String) -> FieldCryptoError { .keyVault(path: path, problem: "damaged: \(why)") }
        guard head.count >= Self.headerSize else { throw damaged("\(head.count) bytes is shorter than the \(Self.headerSize)-byte header") }
        guard Array(head[0..<8]) == Self.magic else { throw damaged("not a ciphertail key vault (bad magic)") }
        guard Self.readLE(head, 24) == CRC32.checksum(head[0..<24]) else { throw damaged("header checksum mismatch") }
        let version = Self.readLE(head, 8)
        guard version == Self.version else { throw damaged("unknown format version \(version)") }
        let length = Int(Self.readLE64(head, 16))
        guard length >= Self.headerSize else { throw damaged("committed length \(length) is inside the header") }
        if committed > length { throw damaged("the committed length shrank from \(committed) to \(length)") }
        let start = max(committed, Self.headerSize)
        guard start < length else { committed = length; return }
        let bytes = try SecretFile.read(path, maxSize: Self.maxFileSize, from: start, count: length - start, refuse: refuse)
        guard bytes.count == length - start else {
            throw damaged("the file ends at \(start + bytes.count) bytes but \(length) were committed (truncated)")
        }
        let base = storage.count
        if storage.isEmpty { storage = bytes } else { storage += bytes }
        var added = 0
        var addedNames: [String] = []
        // On a damaged record, what this read added is taken back: the index stays as it was.
        var ok = false
        defer {
            if !ok {
                for id in ids.suffix(added) { byId[id] = nil }
                for n in addedNames { byAltName[n] = nil }
                spans.removeLast(added)
                ids.removeLast(added)
                storage.removeLast(bytes.count)
            }
        }
        var offset = 0
        while offset < bytes.count {
            let n = spans.count
            guard bytes.count - offset >= 9 else { throw damaged("key \(n) is cut off") }
            let len = Int(Self.readLE(bytes, offset))
            guard len >= 5, len + 8 <= bytes.count - offset else { throw damaged("key \(n) has a bad length") }
            let body = Array(bytes[(offset + 4)..<(offset + 4 + len)])
            guard Self.readLE(bytes, offset + 4 + len) == CRC32.checksum(body) else { throw damaged("key \(n) checksum mismatch") }
            let span = base + offset + 4..<base + offset + 4 + len
            do {
                let doc = try Document(bytes: body)
                let info = try DataKeyInfo(doc)
                if byId[info.id] != nil { throw FieldCryptoError.invalidKeyDocument("id \(info.id.keyIdString) appears twice") }
                if let dup = info.altNames.first(where: { byAltName[$0] != nil }) {
                    throw FieldCryptoError.invalidKeyDocument("keyAltName \"\(dup)\" appears twice")
                }
                add(info, span)
                added += 1
                addedNames += info.altNames
            } catch {
                throw damaged("key \(n): \(error)")
            }
            offset += len + 8
        }
        ok = true
        committed = length
    }

    static func header(committed: Int) -> [UInt8] {
        var out = magic
        appendLE(&out, version)
        appendLE(&out, 0)
        appendLE(&out, UInt32(truncatingIfNeeded: committed))
        appendLE(&out, UInt32(truncatingIfNeeded: committed >> 32))
        appendLE(&out, CRC32.checksum(out))
        appendLE(&out, 0)
        return out
    }

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

    /// One record: length, key document, CRC-32 of the document.
    private static func appendRecord(_ out: inout [UInt8], _ document: [UInt8]) {
        appendLE(&out, UInt32(document.count))
        out += document
        appendLE(&out, CRC32.checksum(document))
    }

    private static func appendLE(_ out: inout [UInt8], _ v: UInt32) {
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    private static func readLE(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    private static func readLE64(_ b: [UInt8], _ at: Int) -> UInt64 {
        UInt64(readLE(b, at)) | UInt64(readLE(b, at + 4)) << 32
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
