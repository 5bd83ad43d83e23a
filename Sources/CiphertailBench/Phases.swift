import BSON
import Foundation
import Mongo

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Fills `collection` with documents 0..<count of `Profiles`, unless it already holds exactly
/// those (same count, same first and last document). Returns whether it reused them.
func seed(_ collection: Mongo.Collection, count: Int, log: (String) -> Void) throws -> Bool {
    let check = try Document(json: #"{"p": {"$numberDecimal": "19.99"}}"#)["p"]
    precondition(check == Profiles.price(cents: 1999), "decimal128 encoding disagrees with libbson")

    func matches(_ i: Int) throws -> Bool {
        try collection.find(["_id": .int64(Int64(i))]).next() == Profiles.document(i)
    }
    if try collection.countDocuments() == Int64(count), try matches(0), try matches(count - 1) {
        return true
    }
    try collection.drop()
    let batch = 1000
    for start in stride(from: 0, to: count, by: batch) {
        let bulk = collection.bulk(ordered: false)
        for i in start..<min(start + batch, count) { try bulk.insert(Profiles.document(i)) }
        try bulk.execute()
        let done = min(start + batch, count)
        if done % 50_000 == 0 || done == count { log("  seeded \(done) / \(count)") }
    }
    return false
}

struct Timing {
    var seconds: Double
    var cpuSeconds: Double  // of this process

    static func measure(_ body: () throws -> Void) rethrows -> Timing {
        let start = DispatchTime.now().uptimeNanoseconds
        let cpu = selfCPUSeconds()
        try body()
        return Timing(seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, cpuSeconds: selfCPUSeconds() - cpu)
    }
}

struct Scan {
    var documents: Int64 = 0
    var bytes: Int64 = 0
    var timing = Timing(seconds: 0, cpuSeconds: 0)
}

/// A full natural-order cursor scan, the way backup reads, handing each raw document to `body`.
func scan(_ collection: Mongo.Collection, _ body: (UnsafeRawBufferPointer) throws -> Void = { _ in }) throws -> Scan {
    var result = Scan()
    result.timing = try Timing.measure {
        let cursor = collection.find(Document(), options: ["batchSize": 2000])
        while try cursor.nextRaw({ raw in
            result.documents += 1
            result.bytes += Int64(raw.count)
            try body(raw)
        }) {}
    }
    return result
}

/// Every document of a collection back to back in one buffer (no per-document allocation).
struct LoadedDocuments {
    var bytes: [UInt8] = []
    var offsets: [Int] = [0]  // document i is bytes[offsets[i]..<offsets[i + 1]]

    var count: Int { offsets.count - 1 }

    init(_ collection: Mongo.Collection, expectedBytes: Int64) throws {
        bytes.reserveCapacity(Int(expectedBytes))
        _ = try scan(collection) { raw in
            bytes.append(contentsOf: raw)
            offsets.append(bytes.count)
        }
    }

    func write(to path: String) throws {
        guard let file = fopen(path, "wb") else { throw BenchError("cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { fclose(file) }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == bytes.count else { throw BenchError("short write to \(path)") }
    }
}

/// Single-threaded unordered bulk inserts of `batch` documents, the baseline for restore.
func bulkInsert(_ docs: LoadedDocuments, into collection: Mongo.Collection, batch: Int = 1000) throws -> Timing {
    try docs.bytes.withUnsafeBytes { buf in
        try Timing.measure {
            for first in stride(from: 0, to: docs.count, by: batch) {
                let bulk = collection.bulk(ordered: false)
                for i in first..<min(first + batch, docs.count) {
                    try bulk.insert(raw: UnsafeRawBufferPointer(rebasing: buf[docs.offsets[i]..<docs.offsets[i + 1]]))
                }
                try bulk.execute()
            }
        }
    }
}
