import Archive
import BSON
import FieldCrypto
import Foundation
import Logging
import Mongo

/// Drains a change stream into an event segment on its own thread while the collections
/// are copied, then up to the consistent point.
final class EventCapture {
    struct Result {
        var count: Int64
        var segments: [SegmentInfo]
        var startToken: Document?
        var endToken: Document?
    }

    private let pool: ClientPool
    private let startTime: Timestamp
    private let filter: Document
    private let writer: BackupWriter
    private let level: Int32
    private let segmentBytes: Int
    private let protector: DocumentProtector?
    private let logger: Logger
    private let condition = NSCondition()
    private var stopAt: Timestamp?
    private var cancelled = false
    private var finished = false
    private var failure: Error?
    private var result = Result(count: 0, segments: [])
    private var thread: Thread?
    private var opened = false

    init(pool: ClientPool, start: Timestamp, filter: Document, writer: BackupWriter, level: Int32, segmentBytes: Int,
         protector: DocumentProtector?, logger: Logger) throws {
        self.segmentBytes = segmentBytes
        self.protector = protector
        self.pool = pool
        startTime = start
        self.filter = filter
        self.writer = writer
        self.level = level
        self.logger = logger
    }

    func start() throws {
        let t = Thread { [self] in self.loop() }
        t.name = "ciphertail.events"
        thread = t
        t.start()
        // Opening the stream first surfaces errors (no privileges, no replica set) before any copying.
        condition.lock()
        while !opened && !finished { condition.wait() }
        condition.unlock()
        if finished, let failure { throw failure }
    }

    func checkHealthy() throws {
        condition.lock()
        defer { condition.unlock() }
        if finished, let failure { throw failure }
    }

    /// Stops at the consistent point `end` (nil: abandon) and returns what was captured.
    @discardableResult
    func stop(at end: Timestamp?) throws -> Result {
        condition.lock()
        if let end { stopAt = end } else { cancelled = true }
        while !finished { condition.wait() }
        condition.unlock()
        if let failure { throw failure }
        return result
    }

    private func loop() {
        var segment: SegmentWriter?
        do {
            try pool.withClient { client in
                var streamOptions = DocumentBuilder()
                streamOptions.append("startAtOperationTime", .timestamp(startTime))
                streamOptions.append("maxAwaitTimeMS", 50)
                streamOptions.append("batchSize", 1000)
                // With encryption, an update needs its document: the subject picks the key, and an
                // update inside an encrypted field is re-sent as the whole encrypted field.
                if protector != nil { streamOptions.append("fullDocument", "updateLookup") }
                let stream = try client.watch(pipeline: [["$match": .document(filter)]], options: streamOptions.document)
                result.startToken = stream.resumeToken
                var sequence = 1
                func open() throws -> SegmentWriter {
                    try writer.segmentWriter(relativePath: String(format: "events/%06d.seg", sequence), kind: .changeEvent, level: level)
                }
                segment = try open()
                condition.lock(); opened = true; condition.broadcast(); condition.unlock()
                var lastToken = result.startToken
                while true {
                    condition.lock()
                    let abandon = cancelled
                    condition.unlock()
                    if abandon { break }
                    let event: Document?
                    do {
                        event = try stream.next()
                    } catch let e as MongoError where e.isServerError(10334) {
                        throw CaptureError.eventTooLarge(reason: e.message)
                    } catch let e as MongoError {
                        throw CaptureError.changeStream(reason: e.message)
                    }
                    // Read the stop point after next(): it may have been set while next() waited,
                    // and the event just returned may already lie past it.
                    condition.lock()
                    let end = stopAt
                    condition.unlock()
                    if let event {
                        let ts = event["clusterTime"]?.timestampValue ?? startTime
                        if let end, ts > end { break }
                        if segment!.pendingRecordBytes >= segmentBytes {
                            result.segments.append(try segment!.finish())
                            sequence += 1
                            segment = try open()
                        }
                        try segment!.append((try protector?.protectEvent(event) ?? event).bytes)
                        result.count += 1
                        lastToken = event["_id"]?.documentValue
                    } else if let end, let pbrt = stream.resumeToken, let ts = ResumeToken.clusterTime(pbrt), ts >= end {
                        lastToken = pbrt
                        break
                    }
                }
                result.endToken = lastToken
                condition.lock()
                let abandoned = cancelled
                condition.unlock()
                if !abandoned { result.segments.append(try segment!.finish()) } else { segment?.abort() }
                segment = nil
            }
        } catch {
            segment?.abort()
            failure = error
        }
        condition.lock()
        finished = true
        opened = true
        condition.broadcast()
        condition.unlock()
    }
}
