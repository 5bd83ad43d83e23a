import BSON
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where archive bytes come from: `read` fills up to `count` bytes and returns how many,
/// 0 at the end.
public protocol ArchiveInput: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

public final class MemoryInput: ArchiveInput {
    let bytes: [UInt8]
    var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - offset)
        bytes.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[offset..<offset + n])) }
        offset += n
        return n
    }
}

public final class FileInput: ArchiveInput {
    let fd: Int32
    let path: String
    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: path]) }
    }
    deinit { close(fd) }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: path]) }
        }
    }
}

/// A strict reader of the mongodump archive format, written from its public specification
/// (mongo-tools `common/archive/spec.md`) and from what mongorestore enforces. It checks the
/// magic number, the header, every prelude entry and its metadata text, every namespace
/// header, that each document is one well-formed BSON document of at most 16 MiB, every
/// terminator, that each namespace ends once with an EOF marker whose CRC-64 matches its
/// documents, and that the archive ends cleanly after every namespace of the prelude has
/// ended. Every problem is a `MongodumpArchiveError.damaged` naming the namespace (when
/// there is one) and the byte offset where the structure at fault begins.
public final class MongodumpArchiveReader {
    public struct Prelude: Equatable, Sendable {
        public var header: MongodumpArchive.Header
        public var collections: [MongodumpArchive.CollectionMetadata]
    }

    /// What was read of one namespace (keyed by its data namespace).
    public struct NamespaceResult: Equatable, Sendable {
        public var documents: Int64 = 0
        public var bytes: Int64 = 0
        /// Runs of documents (namespace headers with EOF false).
        public var segments = 0
        public var crc = CRC64()
        public var ended = false

        public static func == (a: NamespaceResult, b: NamespaceResult) -> Bool {
            (a.documents, a.bytes, a.segments, a.crc.value, a.ended) == (b.documents, b.bytes, b.segments, b.crc.value, b.ended)
        }
    }

    /// One document and where it was.
    public struct Item {
        public let namespace: String
        public let document: [UInt8]
        public let offset: Int
    }

    private let input: ArchiveInput
    private var buffer: [UInt8] = []
    private var bufferStart = 0  // index in `buffer` of the next unread byte
    private var scratch = [UInt8](repeating: 0, count: 1 << 16)
    private var atEnd = false
    /// Bytes consumed from the start of the archive.
    public private(set) var offset = 0
    public private(set) var prelude: Prelude?
    public private(set) var namespaces: [String: NamespaceResult] = [:]
    /// The namespace whose documents are being read, between its header and terminator.
    private var current: String?
    public private(set) var finished = false

    public init(input: ArchiveInput) { self.input = input }
    public convenience init(path: String) throws { self.init(input: try FileInput(path: path)) }
    public convenience init(bytes: [UInt8]) { self.init(input: MemoryInput(bytes)) }

    private func damaged(_ ns: String?, _ at: Int, _ reason: String) -> MongodumpArchiveError {
        .damaged(namespace: ns, offset: at, reason: reason)
    }

    /// Makes `n` bytes available; false when the input ends first.
    private func fill(_ n: Int) throws -> Bool {
        while buffer.count - bufferStart < n && !atEnd {
            if bufferStart > 0 {
                buffer.removeFirst(bufferStart)
                bufferStart = 0
            }
            // Reads grow from 64 KiB to 1 MiB, so that small archives cost little.
            if scratch.count < min(max(n - buffer.count, scratch.count * 2), 1 << 20) {
                scratch = [UInt8](repeating: 0, count: min(max(n - buffer.count, scratch.count * 2), 1 << 20))
            }
            let got = try scratch.withUnsafeMutableBytes { try input.read(into: $0) }
            if got == 0 { atEnd = true } else { buffer.append(contentsOf: scratch[0..<got]) }
        }
        return buffer.count - bufferStart >= n
    }

    private func take(_ n: Int) -> [UInt8] {
        let out = Array(buffer[bufferStart..<bufferStart + n])
        bufferStart += n
        offset += n
        return out
    }

    private func peekU32() -> UInt32 {
        buffer.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: bufferStart, as: UInt32.self)) }
    }

    private enum Next {
        case terminator
        case document([UInt8])
    }

    /// A BSON document or a terminator at the current offset; `what` names it in errors.
    private func readDocumentOrTerminator(_ ns: String?, what: String) throws -> Next {
        let start = offset
        guard try fill(4) else {
            throw damaged(ns, start, "truncated: \(what) needs 4 bytes, \(buffer.count - bufferStart) left")
        }
        let length = peekU32()
        if length == MongodumpArchive.terminator {
            _ = take(4)
            return .terminator
        }
        guard length >= 5, length <= UInt32(MongodumpArchive.maxDocumentBytes) else {
            throw damaged(ns, start, "\(what): \(length) is neither a BSON length (5 to \(MongodumpArchive.maxDocumentBytes)) nor a terminator")
        }
        guard try fill(Int(length)) else {
            throw damaged(ns, start, "truncated: \(what) of \(length) bytes, \(buffer.count - bufferStart) left")
        }
        let bytes = take(Int(length))
        guard bytes[bytes.count - 1] == 0 else { throw damaged(ns, start, "\(what) does not end with a 0 byte") }
        do {
            try Document.validate(bytes)
        } catch {
            throw damaged(ns, start, "\(what) is not well-formed BSON (\(error))")
        }
        return .document(bytes)
    }

    private func requireDocument(_ ns: String?, what: String) throws -> (Document, Int) {
        let start = offset
        guard case .document(let bytes) = try readDocumentOrTerminator(ns, what: what) else {
            throw damaged(ns, start, "a terminator where the \(what) should be")
        }
        return (Document(trusted: bytes), start)
    }

    /// Magic number, header and collection metadata, up to the prelude's terminator.
    @discardableResult
    public func readPrelude() throws -> Prelude {
        if let p = prelude { return p }
        guard try fill(4) else { throw damaged(nil, 0, "truncated: the magic number needs 4 bytes, \(buffer.count) left") }
        let magic = peekU32()
        guard magic == MongodumpArchive.magic else {
            throw damaged(nil, 0, String(format: "not a mongodump archive: magic number 0x%08x, expected 0x%08x", magic, MongodumpArchive.magic))
        }
        _ = take(4)
        let (h, hAt) = try requireDocument(nil, what: "archive header")
        guard let concurrent = int32(h["concurrent_collections"]) else {
            throw damaged(nil, hAt, "archive header: concurrent_collections is missing or not an int32")
        }
        guard let version = h["version"]?.stringValue, let server = h["server_version"]?.stringValue,
              let tool = h["tool_version"]?.stringValue
        else { throw damaged(nil, hAt, "archive header: version, server_version and tool_version must be strings") }
        guard version == MongodumpArchive.formatVersion else {
            throw damaged(nil, hAt, "archive header: format version \(version) is not \(MongodumpArchive.formatVersion)")
        }
        let header = MongodumpArchive.Header(concurrentCollections: concurrent, version: version, serverVersion: server, toolVersion: tool)
        var collections: [MongodumpArchive.CollectionMetadata] = []
        while true {
            let at = offset
            guard case .document(let bytes) = try readDocumentOrTerminator(nil, what: "collection metadata") else { break }
            let c = try collectionMetadata(Document(trusted: bytes), at: at)
            guard namespaces[c.dataNamespace] == nil else { throw damaged(c.namespace, at, "listed twice in the prelude") }
            namespaces[c.dataNamespace] = NamespaceResult()
            collections.append(c)
        }
        let p = Prelude(header: header, collections: collections)
        prelude = p
        return p
    }

    private func int32(_ v: BSONValue?) -> Int32? { if case .int32(let x)? = v { return x }; return nil }

    private func collectionMetadata(_ d: Document, at: Int) throws -> MongodumpArchive.CollectionMetadata {
        guard let db = d["db"]?.stringValue, let coll = d["collection"]?.stringValue, !coll.isEmpty else {
            throw damaged(nil, at, "collection metadata: db and a non-empty collection must be strings")
        }
        let ns = "\(db).\(coll)"
        guard let metadata = d["metadata"]?.stringValue, let type = d["type"]?.stringValue else {
            throw damaged(ns, at, "collection metadata: metadata and type must be strings")
        }
        let size: Int64
        switch d["size"] {
        case .int32(let v)?: size = Int64(v)
        case .int64(let v)?: size = v
        default: throw damaged(ns, at, "collection metadata: size must be an int32 or int64")
        }
        guard size >= 0 else { throw damaged(ns, at, "collection metadata: negative size") }
        guard ["", "collection", "view", "timeseries"].contains(type) else {
            throw damaged(ns, at, "collection metadata: unknown type \(type)")
        }
        if !metadata.isEmpty {
            // The text of <coll>.metadata.json: mongorestore parses it as extended JSON.
            let m: Document
            do { m = try Document(json: metadata) } catch { throw damaged(ns, at, "metadata is not extended JSON (\(error))") }
            guard let indexes = m["indexes"]?.arrayValue, indexes.allSatisfy({ $0.documentValue != nil }) else {
                throw damaged(ns, at, "metadata: indexes must be an array of documents")
            }
            if let o = m["options"], o.documentValue == nil { throw damaged(ns, at, "metadata: options must be a document") }
            if let n = m["collectionName"], n.stringValue != coll {
                throw damaged(ns, at, "metadata: collectionName does not name \(coll)")
            }
            if let t = m["type"], t.stringValue != type, !type.isEmpty {
                throw damaged(ns, at, "metadata: type differs from the prelude's \(type)")
            }
        }
        return MongodumpArchive.CollectionMetadata(database: db, collection: coll, metadata: metadata, size: size, type: type)
    }

    /// The next document, in archive order; nil once the archive has ended cleanly.
    public func next() throws -> Item? {
        if prelude == nil { try readPrelude() }
        while true {
            if let ns = current {
                let at = offset
                switch try readDocumentOrTerminator(ns, what: "document \(namespaces[ns]!.documents + 1)") {
                case .terminator:
                    current = nil
                case .document(let bytes):
                    namespaces[ns]!.documents += 1
                    namespaces[ns]!.bytes += Int64(bytes.count)
                    namespaces[ns]!.crc.update(bytes)
                    return Item(namespace: ns, document: bytes, offset: at)
                }
                continue
            }
            if finished { return nil }
            let at = offset
            if try !fill(1) {
                // The end may only come between namespace blocks, after every EOF marker.
                if let open = namespaces.filter({ !$0.value.ended }).keys.sorted().first {
                    throw damaged(open, at, "the archive ends before this namespace's EOF marker")
                }
                finished = true
                return nil
            }
            let (h, _) = try requireDocument(nil, what: "namespace header")
            let (ns, eof, crc) = try namespaceHeader(h, at: at)
            guard var state = namespaces[ns] else { throw damaged(ns, at, "namespace header for a namespace the prelude does not list") }
            guard !state.ended else { throw damaged(ns, at, "namespace header after the namespace's EOF marker") }
            if eof {
                let end = offset
                guard case .terminator = try readDocumentOrTerminator(ns, what: "terminator after the EOF marker") else {
                    throw damaged(ns, end, "documents after the namespace's EOF marker")
                }
                guard crc == state.crc.value else {
                    throw damaged(ns, at, String(format: "CRC-64 mismatch: the EOF marker says 0x%016llx, the documents give 0x%016llx", crc, state.crc.value))
                }
                state.ended = true
            } else {
                guard crc == 0 else { throw damaged(ns, at, "namespace header (not EOF) with a CRC other than 0") }
                state.segments += 1
                current = ns
            }
            namespaces[ns] = state
        }
    }

    private func namespaceHeader(_ h: Document, at: Int) throws -> (String, Bool, UInt64) {
        var db: String?, coll: String?, eof: Bool?, crc: UInt64?
        for (k, v) in h.elements {
            switch (k, v) {
            case ("db", .string(let s)): db = s
            case ("collection", .string(let s)): coll = s
            case ("EOF", .bool(let b)): eof = b
            case ("CRC", .int64(let c)): crc = UInt64(bitPattern: c)
            default: throw damaged(nil, at, "namespace header: unexpected field \(k) (or wrong type)")
            }
        }
        guard let db, let coll, !coll.isEmpty, let eof, let crc else {
            throw damaged(nil, at, "namespace header needs db, collection (strings), EOF (bool) and CRC (int64)")
        }
        return ("\(db).\(coll)", eof, crc)
    }

    /// Reads the whole archive: the prelude and every document, by data namespace.
    public func readAll() throws -> (prelude: Prelude, documents: [String: [[UInt8]]]) {
        let p = try readPrelude()
        var docs: [String: [[UInt8]]] = [:]
        for c in p.collections { docs[c.dataNamespace] = [] }
        while let item = try next() { docs[item.namespace, default: []].append(item.document) }
        return (p, docs)
    }
}
