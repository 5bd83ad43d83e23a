import BSON
@testable import Export
import XCTest

/// The writer and the strict reader of the mongodump archive format, byte for byte.
final class MongodumpArchiveTests: XCTestCase {
    typealias Meta = MongodumpArchive.CollectionMetadata

    let collections: [Meta] = [
        Meta(database: "shop", collection: "items", metadata: Meta.metadataJSON(
            collection: "items", type: "collection", options: Document(["capped": true, "size": 4096]),
            indexes: [Document(["v": 2, "key": ["_id": 1], "name": "_id_"]), Document(["v": 2, "key": ["a": 1, "b": -1], "name": "a_1_b_-1", "unique": true])]),
             size: 100, type: "collection"),
        Meta(database: "shop", collection: "empty", metadata: Meta.metadataJSON(collection: "empty", type: "collection", options: Document(), indexes: []),
             size: 0, type: "collection"),
        Meta(database: "shop", collection: "cheap", metadata: Meta.metadataJSON(
            collection: "cheap", type: "view", options: Document(["viewOn": "items", "pipeline": [["$match": ["p": ["$lt": 5]]]]]), indexes: []),
             size: 0, type: "view"),
        Meta(database: "metrics", collection: "ts", metadata: Meta.metadataJSON(
            collection: "ts", type: "timeseries", options: Document(["timeseries": ["timeField": "t", "granularity": "seconds"]]), indexes: []),
             size: 0, type: "timeseries"),
    ]

    func docs(_ n: Int, tag: String) -> [[UInt8]] {
        (0..<n).map { Document(["_id": .int32(Int32($0)), "tag": .string(tag), "pad": .string(String(repeating: "x", count: $0 % 50))]).bytes }
    }

    /// items: 3 documents; empty and the view: none; ts: 2 bucket documents.
    func archive() throws -> (bytes: [UInt8], items: [[UInt8]], buckets: [[UInt8]]) {
        let out = MemoryOutput()
        let w = MongodumpArchiveWriter(output: out, bufferBytes: 64)  // small buffer: flushes in between
        try w.writePrelude(MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "test"), collections: collections)
        let items = docs(3, tag: "items"), buckets = docs(2, tag: "bucket")
        try w.beginNamespace(database: "shop", collection: "items")
        for d in items { try w.writeDocument(d) }
        let s = try w.endNamespace()
        XCTAssertEqual(s.documents, 3)
        XCTAssertEqual(s.crc, CRC64.checksum(items.flatMap { $0 }))
        try w.beginNamespace(database: "shop", collection: "empty")
        try w.endNamespace()
        try w.beginNamespace(database: "shop", collection: "cheap")
        try w.endNamespace()
        try w.beginNamespace(database: "metrics", collection: "system.buckets.ts")
        for d in buckets { try w.writeDocument(d) }
        try w.endNamespace()
        try w.finish()
        XCTAssertEqual(w.bytesWritten, Int64(out.bytes.count))
        return (out.bytes, items, buckets)
    }

    func le32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24 }

    /// Walks the bytes by hand, as the specification lays them out.
    func testLayoutFollowsTheSpecificationByteForByte() throws {
        let (bytes, items, buckets) = try archive()
        XCTAssertEqual(Array(bytes[0..<4]), [0x6D, 0xE2, 0x99, 0x81])
        var at = 4
        func doc() -> Document {
            let n = Int(le32(bytes, at))
            defer { at += n }
            return try! Document(bytes: Array(bytes[at..<at + n]))
        }
        func terminator() { XCTAssertEqual(le32(bytes, at), 0xFFFF_FFFF, "terminator at \(at)"); at += 4 }
        let header = doc()
        XCTAssertEqual(header.keys, ["concurrent_collections", "version", "server_version", "tool_version"])
        XCTAssertEqual(header["concurrent_collections"], .int32(1))
        XCTAssertEqual(header["version"], "0.1")
        XCTAssertEqual(header["server_version"], "6.0.5")
        for c in collections {
            let m = doc()
            XCTAssertEqual(m.keys, ["db", "collection", "metadata", "size", "type"])
            XCTAssertEqual(m["db"], .string(c.database))
            XCTAssertEqual(m["collection"], .string(c.collection))
            XCTAssertEqual(m["size"], .int32(Int32(c.size)))
            XCTAssertEqual(m["type"], .string(c.type))
            let meta = try Document(json: XCTUnwrap(m["metadata"]?.stringValue))
            XCTAssertEqual(meta["collectionName"], .string(c.collection))
        }
        terminator()
        func namespace(_ db: String, _ coll: String, _ expected: [[UInt8]]) {
            let h = doc()
            XCTAssertEqual(h.keys, ["db", "collection", "EOF", "CRC"])
            XCTAssertEqual(h["db"], .string(db))
            XCTAssertEqual(h["collection"], .string(coll))
            XCTAssertEqual(h["EOF"], false)
            XCTAssertEqual(h["CRC"], .int64(0))
            for e in expected { XCTAssertEqual(doc().bytes, e) }
            terminator()
            let eof = doc()
            XCTAssertEqual(eof["EOF"], true)
            XCTAssertEqual(eof["CRC"], .int64(Int64(bitPattern: CRC64.checksum(expected.flatMap { $0 }))))
            terminator()
        }
        namespace("shop", "items", items)
        namespace("shop", "empty", [])
        namespace("shop", "cheap", [])
        namespace("metrics", "system.buckets.ts", buckets)
        XCTAssertEqual(at, bytes.count)
    }

    func testRoundTrip() throws {
        let (bytes, items, buckets) = try archive()
        let r = MongodumpArchiveReader(bytes: bytes)
        let (prelude, docs) = try r.readAll()
        XCTAssertEqual(prelude.header, MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "test"))
        XCTAssertEqual(prelude.collections, collections)
        XCTAssertEqual(docs["shop.items"], items)
        XCTAssertEqual(docs["shop.empty"], [])
        XCTAssertEqual(docs["shop.cheap"], [])
        XCTAssertEqual(docs["metrics.system.buckets.ts"], buckets)
        XCTAssertEqual(r.namespaces["shop.items"]?.documents, 3)
        XCTAssertEqual(r.namespaces["shop.items"]?.crc.value, CRC64.checksum(items.flatMap { $0 }))
        XCTAssertTrue(r.namespaces.values.allSatisfy(\.ended))
        XCTAssertTrue(r.finished)
        let meta = try Document(json: collections[0].metadata)
        XCTAssertEqual(meta.keys, ["options", "indexes", "collectionName", "type"])
        XCTAssertEqual(meta["options"], ["capped": true, "size": 4096])
        // Empty options are left out, as mongodump's omitempty does.
        XCTAssertEqual(try Document(json: collections[1].metadata).keys, ["indexes", "collectionName", "type"])
    }

    func expectDamage(_ bytes: [UInt8], namespace: String?, offset: Int?, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try MongodumpArchiveReader(bytes: bytes).readAll()
            XCTFail("accepted a damaged archive (expected: \(fragment))", file: file, line: line)
        } catch let MongodumpArchiveError.damaged(ns, at, reason) {
            XCTAssertEqual(ns, namespace, reason, file: file, line: line)
            if let offset { XCTAssertEqual(at, offset, reason, file: file, line: line) }
            XCTAssertTrue(reason.contains(fragment), "\(reason) does not say \(fragment)", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    /// Offset of the first byte of `needle` at or after `from`.
    func find(_ needle: [UInt8], in bytes: [UInt8], from: Int = 0) -> Int {
        (from...(bytes.count - needle.count)).first { Array(bytes[$0..<$0 + needle.count]) == needle }!
    }

    func testBadMagicIsRefusedAtOffsetZero() throws {
        var bytes = try archive().bytes
        bytes[0] = 0x6E
        expectDamage(bytes, namespace: nil, offset: 0, "not a mongodump archive")
        expectDamage(Array(bytes[0..<2]), namespace: nil, offset: 0, "truncated")
        expectDamage(Array(Document(["a": 1]).bytes), namespace: nil, offset: 0, "not a mongodump archive")
    }

    /// Every cut of the archive short of its end is refused; inside a namespace's data, the
    /// error names the namespace.
    func testEveryTruncationIsRefused() throws {
        let (bytes, items, _) = try archive()
        let firstItem = find(items[0], in: bytes)
        let lastItemEnd = find(items[2], in: bytes) + items[2].count
        for cut in 0..<bytes.count {
            do {
                _ = try MongodumpArchiveReader(bytes: Array(bytes[0..<cut])).readAll()
                XCTFail("a cut at \(cut) of \(bytes.count) was accepted")
            } catch let MongodumpArchiveError.damaged(ns, at, reason) {
                XCTAssertLessThanOrEqual(at, cut, reason)
                if cut > firstItem && cut < lastItemEnd { XCTAssertEqual(ns, "shop.items", "cut at \(cut): \(reason)") }
            }
        }
        // A cut exactly between two namespaces still lacks the later ones' EOF markers.
        let afterItems = find([0xFF, 0xFF, 0xFF, 0xFF], in: bytes, from: find(Array("empty".utf8), in: bytes, from: lastItemEnd)) + 4
        expectDamage(Array(bytes[0..<afterItems]), namespace: "metrics.system.buckets.ts", offset: afterItems, "ends before")
    }

    func testCRCMismatchNamesTheNamespaceAndTheEOFMarker() throws {
        let (bytes, items, _) = try archive()
        // Change a byte inside the second document: still valid BSON, wrong CRC.
        var damaged = bytes
        let at = find(items[1], in: bytes)
        let tagAt = find(Array("items".utf8), in: bytes, from: at)
        damaged[tagAt] = UInt8(ascii: "J")
        let eofHeader = find(Array("shop".utf8), in: bytes, from: at + items[1].count) - 12  // length, type, "db\0", string length
        expectDamage(damaged, namespace: "shop.items", offset: eofHeader, "CRC-64 mismatch")
    }

    func testMalformedDocumentIsRefusedWithItsOffset() throws {
        let (bytes, items, _) = try archive()
        var damaged = bytes
        let at = find(items[1], in: bytes)
        damaged[at + 4] = 0x42  // not a BSON element type
        expectDamage(damaged, namespace: "shop.items", offset: at, "not well-formed BSON")
        damaged = bytes
        damaged[at + items[1].count - 1] = 1  // no terminating 0
        expectDamage(damaged, namespace: "shop.items", offset: at, "does not end with a 0 byte")
        damaged = bytes
        damaged[at] = 2; damaged[at + 1] = 0; damaged[at + 2] = 0; damaged[at + 3] = 0  // length 2
        expectDamage(damaged, namespace: "shop.items", offset: at, "neither a BSON length")
    }

    /// Hand-built archives that break the grammar in one place each.
    func testGrammarViolationsAreRefused() throws {
        let header = MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "t").document.bytes
        let magic: [UInt8] = [0x6D, 0xE2, 0x99, 0x81], term: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        let meta = Meta(database: "d", collection: "c", metadata: "", size: 0, type: "collection").document.bytes
        func ns(_ eof: Bool, _ crc: UInt64 = 0) -> [UInt8] { MongodumpArchive.namespaceHeader(database: "d", collection: "c", eof: eof, crc: crc).bytes }
        let doc = Document(["x": 1]).bytes
        let prelude = magic + header + meta + term
        let good = prelude + ns(false) + doc + term + ns(true, CRC64.checksum(doc)) + term
        XCTAssertEqual(try MongodumpArchiveReader(bytes: good).readAll().documents["d.c"], [doc])

        expectDamage(magic + term, namespace: nil, offset: 4, "terminator where the archive header")
        expectDamage(magic + Document(["version": "0.1"]).bytes + term, namespace: nil, offset: 4, "concurrent_collections")
        var badVersion = MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "t")
        badVersion.version = "0.2"
        expectDamage(magic + badVersion.document.bytes + term, namespace: nil, offset: 4, "format version 0.2")
        expectDamage(magic + header + meta + meta + term, namespace: "d.c", offset: 4 + header.count + meta.count, "listed twice")
        expectDamage(prelude + doc + term, namespace: nil, offset: prelude.count, "unexpected field x")
        expectDamage(prelude + term, namespace: nil, offset: prelude.count, "terminator where the namespace header")
        expectDamage(prelude + MongodumpArchive.namespaceHeader(database: "d", collection: "other", eof: false, crc: 0).bytes + term,
                     namespace: "d.other", offset: prelude.count, "does not list")
        expectDamage(prelude + ns(false, 7) + term, namespace: "d.c", offset: prelude.count, "CRC other than 0")
        expectDamage(prelude + ns(true, 0) + doc + term, namespace: "d.c", offset: prelude.count + ns(true).count, "documents after")
        expectDamage(good + ns(false) + term, namespace: "d.c", offset: good.count, "after the namespace's EOF marker")
        expectDamage(prelude + ns(false) + doc + term, namespace: "d.c", offset: prelude.count + ns(false).count + doc.count + 4, "ends before")
        expectDamage(good + [0x01], namespace: nil, offset: good.count, "truncated")
        // Metadata that mongorestore could not use.
        let badMeta = Meta(database: "d", collection: "c", metadata: "{\"indexes\": 5}", size: 0, type: "collection").document.bytes
        expectDamage(magic + header + badMeta + term, namespace: "d.c", offset: 4 + header.count, "indexes must be an array")
        let otherName = Meta(database: "d", collection: "c", metadata: "{\"indexes\": [], \"collectionName\": \"x\"}", size: 0, type: "collection").document.bytes
        expectDamage(magic + header + otherName + term, namespace: "d.c", offset: 4 + header.count, "collectionName")
        let notJSON = Meta(database: "d", collection: "c", metadata: "{indexes", size: 0, type: "collection").document.bytes
        expectDamage(magic + header + notJSON + term, namespace: "d.c", offset: 4 + header.count, "not extended JSON")
    }

    func testWriterRefusesWhatTheFormatForbids() throws {
        let w = MongodumpArchiveWriter(output: MemoryOutput())
        XCTAssertThrowsError(try w.beginNamespace(database: "shop", collection: "items"))
        try w.writePrelude(MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "t"), collections: collections)
        XCTAssertThrowsError(try w.writePrelude(MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "t"), collections: []))
        XCTAssertThrowsError(try w.writeDocument(Document(["a": 1]).bytes), "a document outside a namespace")
        XCTAssertThrowsError(try w.beginNamespace(database: "shop", collection: "nope"), "not in the prelude")
        XCTAssertThrowsError(try w.beginNamespace(database: "metrics", collection: "ts"), "a time series' data namespace is its buckets")
        try w.beginNamespace(database: "shop", collection: "items")
        XCTAssertThrowsError(try w.beginNamespace(database: "shop", collection: "empty"), "no interleaving")
        XCTAssertThrowsError(try w.writeDocument([5, 0, 0, 0, 1]), "bad framing")
        var big = Document(["s": .string(String(repeating: "x", count: MongodumpArchive.maxDocumentBytes))]).bytes
        XCTAssertThrowsError(try w.writeDocument(big)) { XCTAssertTrue("\($0)".contains("limit")) }
        big = []
        try w.writeDocument(Document(["a": 1]).bytes)
        try w.endNamespace()
        XCTAssertThrowsError(try w.beginNamespace(database: "shop", collection: "items"), "written twice")
        XCTAssertThrowsError(try w.finish()) { XCTAssertTrue("\($0)".contains("never written")) }
        XCTAssertThrowsError(try w.writePrelude(MongodumpArchive.Header(serverVersion: "x", toolVersion: "t"),
                                                collections: [collections[0], collections[0]]))
    }

    /// A real mongodump archive, when one is given (CIPHERTAIL_TEST_MONGODUMP_ARCHIVE): the
    /// reader must accept what the reference tool writes.
    func testReadsAnArchiveMongodumpWrote() throws {
        guard let path = ProcessInfo.processInfo.environment["CIPHERTAIL_TEST_MONGODUMP_ARCHIVE"], !path.isEmpty else {
            throw XCTSkip("set CIPHERTAIL_TEST_MONGODUMP_ARCHIVE to an archive written by mongodump --archive")
        }
        let r = try MongodumpArchiveReader(path: path)
        let (prelude, docs) = try r.readAll()
        XCTAssertFalse(prelude.collections.isEmpty)
        XCTAssertEqual(Set(docs.keys), Set(prelude.collections.map(\.dataNamespace)))
        for c in prelude.collections { print("\(c.namespace) [\(c.type)] \(docs[c.dataNamespace]!.count) documents, size \(c.size): \(c.metadata.prefix(300))") }
    }

    /// The worked example of docs/FORMAT.md ("Export: the mongodump archive format"): these
    /// bytes were produced independently (pymongo's BSON encoder and a bitwise CRC-64), and
    /// mongorestore 100.8.0 loads them.
    static let workedExample = [
        "6de299818200000010636f6e63757272656e745f636f6c6c656374696f6e7300010000000276657273696f6e00040000",
        "00302e3100027365727665725f76657273696f6e0006000000362e302e350002746f6f6c5f76657273696f6e00240000",
        "006369706865727461696c20302e312e3020286172636869766520666f726d61742031290000ef000000026462000200",
        "0000640002636f6c6c656374696f6e00020000006300026d6574616461746100a10000007b2022696e64657865732220",
        "3a205b207b20227622203a207b2022246e756d626572496e7422203a20223222207d2c20226b657922203a207b20225f",
        "696422203a207b2022246e756d626572496e7422203a20223122207d207d2c20226e616d6522203a20225f69645f2220",
        "7d205d2c2022636f6c6c656374696f6e4e616d6522203a202263222c20227479706522203a2022636f6c6c656374696f",
        "6e22207d001073697a65001c0000000274797065000b000000636f6c6c656374696f6e0000ffffffff34000000026462",
        "0002000000640002636f6c6c656374696f6e0002000000630008454f46000012435243000000000000000000000e0000",
        "00105f69640001000000000e000000105f6964000200000000ffffffff340000000264620002000000640002636f6c6c",
        "656374696f6e0002000000630008454f46000112435243007d2ee49e24dd510f00ffffffff",
    ].joined()

    func testWorkedExampleByteForByte() throws {
        let out = MemoryOutput()
        let w = MongodumpArchiveWriter(output: out)
        let meta = Meta(database: "d", collection: "c", metadata: Meta.metadataJSON(
            collection: "c", type: "collection", options: Document(), indexes: [Document(["v": 2, "key": ["_id": 1], "name": "_id_"])]),
                        size: 28, type: "collection")
        try w.writePrelude(MongodumpArchive.Header(serverVersion: "6.0.5", toolVersion: "ciphertail 0.1.0 (archive format 1)"), collections: [meta])
        try w.beginNamespace(database: "d", collection: "c")
        try w.writeDocument(Document(["_id": 1]).bytes)
        try w.writeDocument(Document(["_id": 2]).bytes)
        XCTAssertEqual(try w.endNamespace().crc, 0x0F51_DD24_9EE4_2E7D)
        try w.finish()
        XCTAssertEqual(out.bytes.map { String(format: "%02x", $0) }.joined(), Self.workedExample)
    }
}
