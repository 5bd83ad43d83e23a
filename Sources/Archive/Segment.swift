import Digest
import Dispatch
import Durable
import Foundation
import Zstd

/// What the records of a segment are.
public enum RecordKind: UInt8, Codable, Sendable {
    case document = 1  // a collection document, exactly as the server returned it
    case changeEvent = 2  // a change event document
}

/// The segment layout of docs/FORMAT.md. All integers are little-endian.
public enum SegmentFormat {
    public static let fileMagic: [UInt8] = Array("CTAILSEG".utf8)
    public static let blockMagic: [UInt8] = Array("BLK1".utf8)
    public static let footerMagic: [UInt8] = Array("END1".utf8)
    public static let version: UInt16 = 1
    public static let headerSize = 16
    public static let blockHeaderSize = 48
    public static let footerSize = 64
    public static let codecNone: UInt8 = 0
    public static let codecZstd: UInt8 = 1
    /// No block may claim more than this; a hostile or damaged length never allocates more.
    public static let maxBlockBytes = 64 << 20
    /// Blocks close at this much record data (a single larger record gets a block of its own).
    public static let defaultBlockBytes = 1 << 20
}

public enum ArchiveError: Error, CustomStringConvertible {
    /// Damage in a segment: which file, at which byte offset, and what.
    case damaged(segment: String, offset: Int, reason: String)
    case missingSegment(String)
    case badManifest(path: String, reason: String)
    case unknownBackup(id: String, available: [String])
    case notARepository(String)
    case unsupportedRepository(path: String, reason: String)
    /// Another process holds the change log's writer lock.
    case locked(path: String)
    /// A point in time the repository cannot restore to, with what it can.
    case notRestorable(target: String, reason: String, windows: [String])
    /// The repository belongs to another pipeline (`pipeline.json`).
    case claimed(path: String, by: String, requested: String)

    public var description: String {
        switch self {
        case .damaged(let s, let o, let r): return "damaged segment \(s) at offset \(o): \(r)"
        case .missingSegment(let s): return "segment \(s) is missing"
        case .badManifest(let p, let r): return "unreadable manifest \(p): \(r)"
        case .unknownBackup(let id, let available):
            return "no backup \(id) in this repository; available: " + (available.isEmpty ? "none" : available.joined(separator: ", "))
        case .unsupportedRepository(let p, let r): return "\(p): \(r)"
        case .locked(let p): return "another ciphertail process is at work on this repository (\(p) is locked: a tail or run writing the change log, or a prune)"
        case .claimed(let p, let by, let requested):
            return "repository \(p) belongs to pipeline '\(by)', not '\(requested)': two pipelines never write to one repository (give this one its own archive.repo)"
        case .notRestorable(let t, let r, let w):
            return "cannot restore to \(t): \(r); restorable: " + (w.isEmpty ? "nothing (no base snapshot)" : w.joined(separator: ", "))
        case .notARepository(let p): return "\(p) is not a ciphertail repository (no ciphertail-repo.json); create one with `ciphertail backup`"
        }
    }
}

/// What the manifest records for a finished segment.
public struct SegmentInfo: Codable, Equatable, Sendable {
    public var path: String  // relative to the backup folder
    public var sha256: String
    public var size: Int64
    public var records: Int64
    public var blocks: Int64
    public var rawBytes: Int64
}

@inline(__always) func putLE<T: FixedWidthInteger>(_ v: T, into out: inout [UInt8]) {
    withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
}

@inline(__always) func readLE<T: FixedWidthInteger>(_ buf: UnsafeRawBufferPointer, _ offset: Int, as: T.Type) -> T {
    var v: T = 0
    withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: buf[offset..<offset + MemoryLayout<T>.size])) }
    return T(littleEndian: v)
}

/// Writes one segment. Records are gathered into blocks; blocks are compressed and
/// checksummed on a concurrent queue (one zstd context per worker) and appended in order by
/// a serial queue, so reading the source, compressing and writing overlap. The file appears
/// under its final name only in `finish` (see `AtomicFileWriter`).
public final class SegmentWriter {
    public let relativePath: String
    private let file: AtomicFileWriter
    private let kind: RecordKind
    private let level: Int32
    private let blockBytes: Int
    private var current: [UInt8] = []
    private var currentCount: UInt32 = 0
    private let writeQueue = DispatchQueue(label: "ciphertail.segment-writer")
    private let inFlight: DispatchSemaphore  // bounds memory: blocks compressing or waiting to be written
    private let lock = NSLock()
    private var failure: Error?
    private let compressors: CompressorPool
    private let buffers = BufferPool()
    private let fileHash = SHA256()
    private var blocks: Int64 = 0
    private var records: Int64 = 0
    private var rawBytes: Int64 = 0
    public private(set) var pendingRecordBytes = 0

    public init(path: String, relativePath: String, kind: RecordKind, level: Int32 = 3,
                blockBytes: Int = SegmentFormat.defaultBlockBytes) throws {
        self.relativePath = relativePath
        self.kind = kind
        self.level = level
        // A block must stay readable: its records plus one maximal record fit under the reader's limit.
        self.blockBytes = min(max(blockBytes, 4096), SegmentFormat.maxBlockBytes / 2)
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        compressors = CompressorPool(level: level)
        inFlight = DispatchSemaphore(value: workers + 2)
        file = try AtomicFileWriter(path: path)
        var header = SegmentFormat.fileMagic
        putLE(SegmentFormat.version, into: &header)
        header.append(kind.rawValue)
        header.append(SegmentFormat.codecZstd)
        putLE(UInt32(0), into: &header)
        try writeAndHash(header)
        current.reserveCapacity(self.blockBytes + 64 * 1024)
    }

    private func writeAndHash(_ bytes: [UInt8]) throws {
        try file.write(bytes)
        fileHash.update(bytes)
    }

    private func check() throws {
        lock.lock()
        defer { lock.unlock() }
        if let failure { throw failure }
    }

    private func record(_ error: Error) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
    }

    /// Appends one BSON record (its bytes are copied).
    public func append(_ record: UnsafeRawBufferPointer) throws {
        if !current.isEmpty && current.count + record.count > blockBytes { try flushBlock() }
        current.append(contentsOf: record)
        currentCount += 1
        pendingRecordBytes += record.count
        if current.count >= blockBytes { try flushBlock() }
    }

    public func append(_ record: [UInt8]) throws { try record.withUnsafeBytes { try append($0) } }

    private func flushBlock() throws {
        try check()
        guard currentCount > 0 else { return }
        let payload = current
        let count = currentCount
        currentCount = 0
        inFlight.wait()
        // A recycled buffer keeps its capacity: no fresh megabyte to page-fault per block.
        current = buffers.take(capacity: blockBytes + 64 * 1024)
        // The group orders the compressor's write of `block` before the writer's read.
        let compressed = DispatchGroup()
        let block = EncodedBlock()
        compressed.enter()
        let payloadBytes = payload.count
        DispatchQueue.global().async { [compressors, buffers] in
            block.result = Result { try compressors.with { try SegmentWriter.encodeBlock(payload, count: count, compressor: $0) } }
            buffers.give(payload)
            compressed.leave()
        }
        // The serial queue takes blocks in submission order, so the file keeps record order.
        writeQueue.async { [self] in
            defer { inFlight.signal() }
            compressed.wait()
            lock.lock(); let failed = failure != nil; lock.unlock()
            if failed { return }
            do {
                try writeAndHash(try block.result.get())
                blocks += 1
                records += Int64(count)
                rawBytes += Int64(payloadBytes)
            } catch {
                record(error)
            }
        }
    }

    /// Encodes one block: header, then the zstd frame of the concatenated records, built in
    /// one allocation (compressed straight into place, no zero fill, no copy).
    static func encodeBlock(_ payload: [UInt8], count: UInt32, compressor: ZstdCompressor) throws -> [UInt8] {
        let headerSize = SegmentFormat.blockHeaderSize
        let capacity = headerSize + ZstdCompressor.bound(payload.count)
        return try [UInt8](unsafeUninitializedCapacity: capacity) { buf, initialized in
            let raw = UnsafeMutableRawBufferPointer(buf)
            let n = try payload.withUnsafeBytes { src in
                try compressor.compress(src, into: UnsafeMutableRawBufferPointer(rebasing: raw[headerSize...]))
            }
            var header = SegmentFormat.blockMagic
            putLE(count, into: &header)
            putLE(UInt32(payload.count), into: &header)
            putLE(UInt32(n), into: &header)
            let h = SHA256()
            h.update(header)
            h.update(UnsafeRawBufferPointer(rebasing: raw[headerSize..<(headerSize + n)]))
            header.append(contentsOf: h.finalize())
            raw.copyBytes(from: header)
            initialized = headerSize + n
        }
    }

    /// Flushes, writes the footer, fsyncs and renames into place.
    public func finish() throws -> SegmentInfo {
        try flushBlock()
        writeQueue.sync {}
        try check()
        var footer = SegmentFormat.footerMagic
        putLE(UInt32(blocks), into: &footer)
        putLE(UInt64(records), into: &footer)
        putLE(UInt64(rawBytes), into: &footer)
        putLE(UInt64(0), into: &footer)
        footer.append(contentsOf: SHA256.hash(footer))
        try writeAndHash(footer)
        try file.commit()
        return SegmentInfo(path: relativePath, sha256: fileHash.finalize().hexString, size: Int64(file.bytesWritten),
                           records: records, blocks: blocks, rawBytes: rawBytes)
    }

    public func abort() {
        record(CancellationError())
        writeQueue.sync {}
        file.abort()
    }
}

final class EncodedBlock: @unchecked Sendable {
    var result: Result<[UInt8], Error> = .success([])
}

/// Record buffers handed back after compression, reused for the next blocks.
final class BufferPool: @unchecked Sendable {
    private var free: [[UInt8]] = []
    private let lock = NSLock()

    func take(capacity: Int) -> [UInt8] {
        lock.lock()
        var b = free.popLast() ?? []
        lock.unlock()
        b.removeAll(keepingCapacity: true)
        if b.capacity < capacity { b.reserveCapacity(capacity) }
        return b
    }

    func give(_ buffer: [UInt8]) {
        lock.lock()
        if free.count < 8 { free.append(buffer) }
        lock.unlock()
    }
}

/// zstd contexts are not thread-safe but are costly to create: keep one per concurrent user.
final class CompressorPool: @unchecked Sendable {
    private let level: Int32
    private var free: [ZstdCompressor] = []
    private let lock = NSLock()

    init(level: Int32) { self.level = level }

    func with<R>(_ body: (ZstdCompressor) throws -> R) rethrows -> R {
        lock.lock()
        let c = free.popLast() ?? ZstdCompressor(level: level)
        lock.unlock()
        defer { lock.lock(); free.append(c); lock.unlock() }
        return try body(c)
    }
}

/// One decompressed block: its records back to back.
public struct Block {
    public let offset: Int  // of the block header in the file
    public let recordCount: Int
    public let data: [UInt8]

    public init(offset: Int, recordCount: Int, data: [UInt8]) {
        self.offset = offset
        self.recordCount = recordCount
        self.data = data
    }

    /// The same records as blocks of at most `n` records each (same offset: for messages only).
    public func split(every n: Int) -> [Block] {
        var out: [Block] = []
        var start = 0
        var count = 0
        var o = 0
        data.withUnsafeBytes { buf in
            while o < buf.count {
                o += Int(readLE(buf, o, as: UInt32.self))
                count += 1
                if count == n || o == buf.count {
                    out.append(Block(offset: offset, recordCount: count, data: Array(data[start..<o])))
                    start = o
                    count = 0
                }
            }
        }
        return out
    }

    /// Calls `body` with each record's bytes (valid inside the call only).
    public func forEachRecord(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try data.withUnsafeBytes { buf in
            var o = 0
            while o < buf.count {
                let len = Int(readLE(buf, o, as: UInt32.self))
                try body(UnsafeRawBufferPointer(rebasing: buf[o..<o + len]))
                o += len
            }
        }
    }
}

/// Reads a segment block by block, checking every checksum and the record framing. Any
/// damage is an `ArchiveError.damaged` naming the file and the offset.
public final class SegmentReader {
    public let path: String
    public private(set) var kind: RecordKind = .document
    private let handle: FileHandle
    private var offset = 0
    private let size: Int
    private let decompressor = ZstdDecompressor()
    private var codec: UInt8 = SegmentFormat.codecZstd
    private var blocksRead: UInt32 = 0
    private var recordsRead: UInt64 = 0
    private var rawRead: UInt64 = 0
    public private(set) var finished = false
    /// Every byte read, for checking the manifest's whole-file hash in the same pass.
    public let fileHash = SHA256()
    /// False: skip `fileHash` (a reader that checks every block's own hash and scans the
    /// content itself, such as verify-erasure, has no use for it).
    public var hashesFile = true

    public init(path: String) throws {
        self.path = path
        guard let h = FileHandle(forReadingAtPath: path) else { throw ArchiveError.missingSegment(path) }
        handle = h
        size = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0)
        let header = try read(SegmentFormat.headerSize, what: "file header")
        let ok = header.withUnsafeBytes { buf -> RecordKind? in
            guard Array(buf[0..<8]) == SegmentFormat.fileMagic else { return nil }
            guard readLE(buf, 8, as: UInt16.self) == SegmentFormat.version else { return nil }
            guard buf[11] == SegmentFormat.codecZstd || buf[11] == SegmentFormat.codecNone else { return nil }
            guard readLE(buf, 12, as: UInt32.self) == 0 else { return nil }  // reserved
            return RecordKind(rawValue: buf[10])
        }
        codec = header[11]
        guard let kind = ok else { throw damaged(0, "not a ciphertail segment of format version 1 (bad file header)") }
        self.kind = kind
    }

    deinit { try? handle.close() }

    public var fileSize: Int { size }
    public var position: Int { offset }

    private func damaged(_ at: Int, _ reason: String) -> ArchiveError {
        .damaged(segment: path, offset: at, reason: reason)
    }

    /// Reads exactly `n` bytes; damage is reported at `at` (the start of the block being read).
    private func read(_ n: Int, what: String, at: Int? = nil) throws -> [UInt8] {
        guard offset + n <= size else { throw damaged(at ?? offset, "truncated: \(what) needs \(n) bytes, \(size - offset) left") }
        let data = (try? handle.read(upToCount: n)) ?? Data()
        guard data.count == n else { throw damaged(at ?? offset, "truncated: short read of \(what)") }
        offset += n
        let bytes = [UInt8](data)
        if hashesFile { fileHash.update(bytes) }
        return bytes
    }

    /// The next block, or nil after a valid footer. A file that ends without its footer is
    /// damaged, so a segment cut short by a crash is never taken for whole.
    public func nextBlock() throws -> Block? {
        if finished { return nil }
        let start = offset
        let magic = try read(4, what: "block or footer magic", at: start)
        if magic == SegmentFormat.footerMagic {
            let rest = try read(SegmentFormat.footerSize - 4, what: "footer", at: start)
            let footer = magic + rest
            try footer.withUnsafeBytes { buf in
                guard Array(buf[32..<64]) == SHA256.hash(UnsafeRawBufferPointer(rebasing: buf[0..<32])) else {
                    throw damaged(start, "footer checksum mismatch")
                }
                let blocks = readLE(buf, 4, as: UInt32.self)
                let records = readLE(buf, 8, as: UInt64.self)
                let raw = readLE(buf, 16, as: UInt64.self)
                guard readLE(buf, 24, as: UInt64.self) == 0 else { throw damaged(start, "footer reserved field is not zero") }
                guard blocks == blocksRead, records == recordsRead, raw == rawRead else {
                    throw damaged(start, "footer counts (\(blocks) blocks, \(records) records) disagree with the blocks read (\(blocksRead), \(recordsRead))")
                }
            }
            guard offset == size else { throw damaged(offset, "\(size - offset) unexpected bytes after the footer") }
            finished = true
            return nil
        }
        guard magic == SegmentFormat.blockMagic else { throw damaged(start, "bad block magic") }
        let rest = try read(SegmentFormat.blockHeaderSize - 4, what: "block header", at: start)
        let header = magic + rest
        let (count, rawLen, storedLen) = header.withUnsafeBytes { buf in
            (Int(readLE(buf, 4, as: UInt32.self)), Int(readLE(buf, 8, as: UInt32.self)), Int(readLE(buf, 12, as: UInt32.self)))
        }
        guard rawLen <= SegmentFormat.maxBlockBytes, storedLen <= SegmentFormat.maxBlockBytes + 65536 else {
            throw damaged(start, "block claims \(rawLen) bytes (\(storedLen) stored), over the \(SegmentFormat.maxBlockBytes)-byte limit")
        }
        let payload = try read(storedLen, what: "block payload", at: start)
        let h = SHA256()
        h.update(Array(header[0..<16]))
        h.update(payload)
        guard h.finalize() == Array(header[16..<48]) else { throw damaged(start, "block checksum mismatch") }
        let data: [UInt8]
        if codec == SegmentFormat.codecNone {
            guard storedLen == rawLen else { throw damaged(start, "uncompressed block stores \(storedLen) bytes but claims \(rawLen)") }
            data = payload
        } else {
            do {
                data = try decompressor.decompress(payload, expectedSize: rawLen)
            } catch {
                throw damaged(start, "\(error)")
            }
        }
        // Record framing: each record's int32 length prefix must tile the block exactly.
        try data.withUnsafeBytes { buf in
            var o = 0
            var n = 0
            while o < buf.count {
                guard buf.count - o >= 5 else { throw damaged(start, "record \(n) is cut short") }
                let len = Int(readLE(buf, o, as: UInt32.self))
                guard len >= 5, o + len <= buf.count, buf[o + len - 1] == 0 else {
                    throw damaged(start, "record \(n) has a bad length prefix")
                }
                o += len
                n += 1
            }
            guard n == count else { throw damaged(start, "block header says \(count) records, found \(n)") }
        }
        blocksRead += 1
        recordsRead += UInt64(count)
        rawRead += UInt64(rawLen)
        return Block(offset: start, recordCount: count, data: data)
    }
}
