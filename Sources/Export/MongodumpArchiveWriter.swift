import BSON
import Durable
import Foundation

/// Where archive bytes go.
public protocol ArchiveOutput: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// Keeps the archive in memory (tests, small archives).
public final class MemoryOutput: ArchiveOutput {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ b: UnsafeRawBufferPointer) throws { bytes.append(contentsOf: b) }
}

/// A file written crash-safely (temporary name, fsync, rename, fsync folder): until
/// `commit`, readers of the final name see the old file or none.
public final class AtomicFileOutput: ArchiveOutput {
    let writer: AtomicFileWriter
    public var path: String { writer.path }
    /// Mode 0600 by default: an export may hold decrypted values. A relative path is taken
    /// from the current folder (the folder fsync after the rename needs a folder name).
    public init(path: String, mode: mode_t = 0o600) throws {
        writer = try AtomicFileWriter(path: URL(fileURLWithPath: path).standardizedFileURL.path, mode: mode)
    }
    public func write(_ b: UnsafeRawBufferPointer) throws { try writer.write(b) }
    public func commit() throws { try writer.commit() }
    public func abort() { writer.abort() }
}

/// A file descriptor such as stdout: no atomicity.
public final class FileDescriptorOutput: ArchiveOutput {
    let fd: Int32
    let name: String
    public init(fd: Int32, name: String) {
        self.fd = fd
        self.name = name
    }
    public func write(_ b: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < b.count {
            let n = Foundation.write(fd, b.baseAddress! + offset, b.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(operation: "write", path: name, errno: errno)
            }
            offset += n
        }
    }
}

/// Writes a mongodump archive as a stream: the prelude, then each namespace's documents
/// (one namespace at a time, no interleaving) closed by its EOF marker. It keeps the
/// format's rules so that what it writes is what mongorestore accepts: a prelude once and
/// first, documents only inside a namespace, every namespace of the prelude written once,
/// no document over 16 MiB.
public final class MongodumpArchiveWriter {
    public struct NamespaceSummary: Equatable, Sendable {
        public let namespace: String
        public let documents: Int64
        public let bytes: Int64
        public let crc: UInt64
    }

    private let output: ArchiveOutput
    private var buffer: [UInt8] = []
    private let bufferBytes: Int
    private var prelude: [String: Bool]?  // data namespace -> written
    private var current: (database: String, collection: String, documents: Int64, bytes: Int64, crc: CRC64)?
    private var finished = false
    /// Bytes handed to the output so far, plus those still buffered.
    public private(set) var bytesWritten: Int64 = 0

    public init(output: ArchiveOutput, bufferBytes: Int = 1 << 20) {
        self.output = output
        self.bufferBytes = bufferBytes
        buffer.reserveCapacity(bufferBytes + 64)
    }

    private func emit(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > bufferBytes { try flush() }
        if bytes.count > bufferBytes {
            try output.write(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        bytesWritten += Int64(bytes.count)
    }

    private func emit(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try emit($0) } }

    private func emit(u32 v: UInt32) throws { try withUnsafeBytes(of: v.littleEndian) { try emit($0) } }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try output.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Magic number, header, one metadata document per collection, terminator.
    public func writePrelude(_ header: MongodumpArchive.Header, collections: [MongodumpArchive.CollectionMetadata]) throws {
        guard prelude == nil, !finished else { throw MongodumpArchiveError.invalidUse("the prelude is written once, first") }
        var seen: [String: Bool] = [:]
        for c in collections {
            guard !c.database.isEmpty, !c.collection.isEmpty else {
                throw MongodumpArchiveError.invalidUse("a prelude entry needs a database and a collection name")
            }
            guard seen.updateValue(false, forKey: c.dataNamespace) == nil else {
                throw MongodumpArchiveError.invalidUse("\(c.namespace) is listed twice")
            }
        }
        try emit(u32: MongodumpArchive.magic)
        try emit(header.document.bytes)
        for c in collections { try emit(c.document.bytes) }
        try emit(u32: MongodumpArchive.terminator)
        prelude = seen
    }

    /// Opens a namespace: its data namespace as in the prelude (`system.buckets.<name>` for
    /// a time series). The header is written at once, so an empty namespace still has one,
    /// as mongodump writes it (mongorestore creates a view when it sees its namespace).
    public func beginNamespace(database: String, collection: String) throws {
        let ns = "\(database).\(collection)"
        guard var p = prelude, !finished else { throw MongodumpArchiveError.invalidUse("write the prelude first") }
        guard current == nil else { throw MongodumpArchiveError.invalidUse("\(ns) opened before the previous namespace ended") }
        guard let done = p[ns] else { throw MongodumpArchiveError.invalidUse("\(ns) is not in the prelude") }
        guard !done else { throw MongodumpArchiveError.invalidUse("\(ns) was already written") }
        p[ns] = true
        prelude = p
        try emit(MongodumpArchive.namespaceHeader(database: database, collection: collection, eof: false, crc: 0).bytes)
        current = (database, collection, 0, 0, CRC64())
    }

    /// One document of the open namespace, as raw BSON (framing checked, not re-encoded).
    public func writeDocument(_ raw: UnsafeRawBufferPointer) throws {
        guard current != nil else { throw MongodumpArchiveError.invalidUse("a document outside a namespace") }
        let ns = "\(current!.database).\(current!.collection)"
        guard raw.count >= 5, raw.count <= MongodumpArchive.maxDocumentBytes,
              Int(raw.loadUnaligned(as: UInt32.self).littleEndian) == raw.count, raw[raw.count - 1] == 0
        else {
            throw MongodumpArchiveError.invalidUse(raw.count > MongodumpArchive.maxDocumentBytes
                ? "a document of \(raw.count) bytes in \(ns) is over mongorestore's \(MongodumpArchive.maxDocumentBytes)-byte limit"
                : "a document in \(ns) is not framed as BSON")
        }
        try emit(raw)
        current!.crc.update(raw)
        current!.documents += 1
        current!.bytes += Int64(raw.count)
    }

    public func writeDocument(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try writeDocument($0) } }

    /// Terminates the open namespace's documents and writes its EOF marker with the CRC.
    @discardableResult
    public func endNamespace() throws -> NamespaceSummary {
        guard let c = current else { throw MongodumpArchiveError.invalidUse("no namespace is open") }
        try emit(u32: MongodumpArchive.terminator)
        try emit(MongodumpArchive.namespaceHeader(database: c.database, collection: c.collection, eof: true, crc: c.crc.value).bytes)
        try emit(u32: MongodumpArchive.terminator)
        current = nil
        return NamespaceSummary(namespace: "\(c.database).\(c.collection)", documents: c.documents, bytes: c.bytes, crc: c.crc.value)
    }

    /// Flushes everything; refuses when a namespace of the prelude was never written
    /// (mongorestore fails such an archive: "archive finished before all collections were seen").
    public func finish() throws {
        guard let p = prelude, !finished else { throw MongodumpArchiveError.invalidUse("nothing to finish") }
        guard current == nil else { throw MongodumpArchiveError.invalidUse("a namespace is still open") }
        if let missing = p.filter({ !$0.value }).keys.sorted().first {
            throw MongodumpArchiveError.invalidUse("\(missing) is in the prelude but was never written")
        }
        try flush()
        finished = true
    }
}
