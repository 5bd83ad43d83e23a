import Archive
import BSON
import FieldCrypto
import Foundation
import Mongo
import Pipeline

// Continuous tailing (`ciphertail tail`) and point-in-time replay (`restore --at`), each
// against its limit measured in the same run:
//
// 1. read limit: N events already in the oplog, read by a bare libmongoc change stream (the
//    tailer's options) against `ciphertail tail` of the same events, encrypted and compressed;
// 2. lag: a writer at a steady rate while `ciphertail tail` follows, lag taken from the log;
// 3. replay: `restore --at` of phase 1's log over an empty base snapshot against a plain
//    ordered bulk write of the same operations.

/// The figures of the tailing phases, in `latest.json` as `tailing`.
struct TailingResults: Codable {
    struct Read: Codable {
        var events: Int64
        var seconds: Double
        var cpuSeconds: Double
        var eventsPerSecond: Double
    }

    struct TailRun: Codable {
        var label: String
        var events: Int64
        /// Wall time of the whole `ciphertail tail` process (start-up, key probe, the final
        /// idle wait that tells it the stream has nothing more, the last commit).
        var seconds: Double
        /// The tailer's own `seconds` from its --json summary (from connecting to exit).
        var tailSeconds: Double
        var cpuSeconds: Double
        var eventsPerSecond: Double
        var eventsPerSecondOwn: Double
        var encryptedValues: Int64
        var keysCreated: Int64
        /// Values encrypted per CPU-second of the tail process, everything it does counted.
        var encryptionsPerCoreSecond: Double
        var segments: Int
        var storedBytes: Int64
        var peakRSSBytes: Int64
        var peakRSSFloorBytes: Int64
        var sampledPeakRSSBytes: Int64?
    }

    struct Percentiles: Codable {
        var count: Int
        var p50: Double
        var p99: Double
        var max: Double
    }

    struct Lag: Codable {
        var targetRate: Double
        var writes: Int64
        var writerSeconds: Double
        var achievedRate: Double
        /// Batches that started later than their slot in the schedule by more than one interval.
        var lateBatches: Int
        var segments: Int
        /// Per event: the entry's durableAtMillis minus the event's wallTime, from the log.
        var fromLog: Percentiles
        /// The tailer's own --json summary (the same two clocks, taken in the process).
        var summaryP50: Double?
        var summaryP99: Double?
        var summaryMax: Double?
        var tailCPUSeconds: Double
        var tailSampledPeakRSSBytes: Int64?
    }

    struct Replay: Codable {
        var events: Int64
        var inserts: Int64
        var updates: Int64
        /// `restore --at` with the keys: replayed events decrypted first.
        var decryptingSeconds: Double
        /// `restore --at --keep-encrypted`: ciphertext written as it is.
        var keepEncryptedSeconds: Double
        /// `restore --backup` of the base snapshot alone (empty), subtracted from both.
        var snapshotOnlySeconds: Double
        var decryptingEventsPerSecond: Double
        var keepEncryptedEventsPerSecond: Double
        var changeSegments: Int
        /// Single-threaded ordered bulks of 1,000: replaceOne upserts and updateOnes, in clear.
        var bulkOps: Int64
        var bulkSeconds: Double
        var bulkOpsPerSecond: Double
        var decryptingToBulk: Double
        var keepEncryptedToBulk: Double
    }

    var events: Int
    var inserts: Int
    var updates: Int
    var generateSeconds: Double
    var rawRuns: [Read]
    var raw: Read
    var tailCold: TailRun
    var tailWarm: TailRun
    /// Warm tail events/s (process wall time) / raw read events/s: the goal is >= 0.7.
    var tailToRaw: Double
    var tailToRawOwn: Double
    var coldTailToRaw: Double
    var breakdown: TailBreakdown?
    var lag: Lag?
    var replay: Replay?
    var notes: [String] = []
}

/// The tail workload: operation k of n, written in ordered batches of 1,000: in each, 800
/// inserts of new profiles (a user, so a data key, each), then 200 updates of every fourth of
/// them: `email` (a protected field) set, `lastLogin` set, `logins` incremented. (Alternating
/// inserts and updates would split each bulk into hundreds of commands.) Every 100th profile
/// carries a canary in its protected `name` and `email` and a visible marker in its
/// unprotected `bio`.
struct TailWorkload {
    static let canary = "ZZCANARY"
    static let visible = "ZZVISIBLE"
    static let batch = 1000
    let count: Int
    /// Added to every `_id`, so several workloads can share a collection.
    var idBase = 0
    /// Insert `d` belongs to user `d % users` when set (users whose data keys may exist
    /// already), else to user `d`: a new user, so a new data key, per insert.
    var users: Int?

    /// Batch `b`: how many operations, and how many of them are inserts.
    private func shape(_ b: Int) -> (size: Int, inserts: Int) {
        let size = min(TailWorkload.batch, count - b * TailWorkload.batch)
        return (size, size - size / 5)
    }

    var inserts: Int { stride(from: 0, to: count, by: TailWorkload.batch).reduce(0) { $0 + shape($1 / TailWorkload.batch).inserts } }
    var updates: Int { count - inserts }

    enum Op {
        case insert(Document)
        case update(id: BSONValue, update: Document)
    }

    func op(_ k: Int) -> Op {
        let b = k / TailWorkload.batch, j = k % TailWorkload.batch
        let first = b * (TailWorkload.batch - TailWorkload.batch / 5)  // inserts in the batches before
        let inserts = shape(b).inserts
        if j < inserts { return .insert(document(first + j)) }
        let d = first + (j - inserts) * 4
        let canary = d % 100 == 0
        let email = canary ? "\(TailWorkload.canary.lowercased()).updated\(d)@example.com" : "updated.\(d)@example.com"
        return .update(id: .int64(Int64(idBase + d)), update: [
            "$set": ["email": .string(email), "lastLogin": .datetime(1_790_000_000_000 + Int64(k))],
            "$inc": ["logins": 1],
        ])
    }

    /// Insert number `d`: the profile of its user under `_id` idBase + d, user ids `t0000000`...
    func document(_ d: Int) -> Document {
        let user = users.map { d % $0 } ?? d
        var doc = Profiles.document(user).setting("_id", .int64(Int64(idBase + d)))
            .setting("userId", .string("t" + Profiles.padded(user, 7)))
        if d % 100 == 0 {
            doc = doc.setting("name", .string("\(TailWorkload.canary) Name\(d)"))
                .setting("email", .string("\(TailWorkload.canary.lowercased()).\(d)@example.com"))
                .setting("bio", .string("\(TailWorkload.visible) \(doc["bio"]?.stringValue ?? "")"))
        }
        return doc
    }

    /// Every operation, one ordered bulk per batch (two commands: the inserts, the updates).
    func write(to collection: Mongo.Collection) throws {
        for first in stride(from: 0, to: count, by: TailWorkload.batch) {
            let bulk = collection.bulk(ordered: true)
            for k in first..<min(first + TailWorkload.batch, count) {
                switch op(k) {
                case .insert(let doc): try bulk.insert(doc)
                case .update(let id, let u): try bulk.updateOne(["_id": id], update: u)
                }
            }
            try bulk.execute()
        }
    }

    /// The same operations as a replay writes them: replaceOne upserts and updateOnes, one
    /// ordered bulk per batch (the replay flushes every 1,000).
    func writeAsReplay(to collection: Mongo.Collection) throws {
        for first in stride(from: 0, to: count, by: TailWorkload.batch) {
            let bulk = collection.bulk(ordered: true)
            for k in first..<min(first + TailWorkload.batch, count) {
                switch op(k) {
                case .insert(let doc): try bulk.replaceOne(["_id": doc["_id"]!], with: doc, upsert: true)
                case .update(let id, let u): try bulk.updateOne(["_id": id], update: u)
                }
            }
            try bulk.execute()
        }
    }
}

/// What the bench reads back from a change log.
struct LogScan {
    var entries = 0
    var segments = 0
    var events: Int64 = 0
    var recordsRead: Int64 = 0
    var storedBytes: Int64 = 0
    var canaryHits = 0
    var visibleHits = 0
    /// Per event, seconds from its wallTime to its entry's durableAtMillis.
    var lags: [Double] = []
    var to: ClusterTime?
}

extension Bench {
    static let tailNS = Namespace(database: "bench_tail", collection: "events")
    static let liveNS = Namespace(database: "bench_tail", collection: "live")
    static let pitrNS = Namespace(database: "bench_pitr", collection: "events")
    static let plainTailNS = Namespace(database: "bench_plain", collection: "tail_events")

    func tailPhases(_ ciphertail: String, client: Client) throws -> TailingResults {
        let n = tailEvents
        let workload = TailWorkload(count: n)
        let pipeline = try writeTailPipeline()
        for f in ["tail-repo", "tail-repo-cold", "tail-live-repo", "tail-keyvault", "tail-master.key"] {
            try? FileManager.default.removeItem(atPath: "\(work)/\(f)")
        }
        try client.database(Bench.tailNS.database).drop()
        _ = try runCiphertail(ciphertail, ["keys", "init", "--pipeline", pipeline], output: "\(work)/tail-keys-init.out")
        try client.runCommand(["create": .string(Bench.tailNS.collection)], database: Bench.tailNS.database)

        // The base snapshot for phase 3, of the still empty collection. Both readers start
        // right after its consistent point: every event of the workload comes later.
        print("tail: base snapshot of the empty \(Bench.tailNS) (for the replay phase)")
        let repo = "\(work)/tail-repo"
        let base = try decode(SnapshotOutput.self, try runCiphertail(ciphertail, [
            "backup", "--pipeline", pipeline, "--repo", repo, "--ns", Bench.tailNS.description, "--json",
        ], output: "\(work)/tail-base.json"), "backup")
        let t0 = base.clusterTime.end.successor

        print("tail: writing \(n) operations (\(workload.inserts) inserts, \(workload.updates) updates) to \(Bench.tailNS) after \(t0)")
        let generate = try Timing.measure { try workload.write(to: client.collection(Bench.tailNS)) }

        print("tail: raw change stream from \(t0), \(n) events (twice, the faster counts)")
        var rawRuns: [TailingResults.Read] = []
        var last = t0
        for _ in 0..<2 {
            let (read, lastEvent) = try rawRead(from: t0, count: n)
            rawRuns.append(read)
            last = lastEvent
        }
        let raw = rawRuns.min { $0.seconds < $1.seconds }!

        var runs: [TailingResults.TailRun] = []
        for (label, dir) in [("cold", "\(work)/tail-repo-cold"), ("warm", repo)] {
            print("tail: ciphertail tail --start-at \(t0) --until \(last), \(label == "cold" ? "creating a data key per user" : "keys exist")")
            let run = try runCiphertail(ciphertail, [
                "tail", "--pipeline", pipeline, "--repo", dir, "--ns", Bench.tailNS.description, "--no-base-snapshot",
                "--start-at", t0.description, "--until", last.description, "--json",
            ], output: "\(work)/tail-\(label).json")
            let summary = try decode(TailOutput.self, run, "tail")
            let scan = try scanLog(dir)
            let expectedValues = Int64(5 * workload.inserts + 6 * workload.updates)
            guard summary.events == Int64(n), scan.events == Int64(n), scan.recordsRead == Int64(n) else {
                throw BenchError("tail (\(label)) captured \(summary.events) events, its log holds \(scan.events) (\(scan.recordsRead) records read); expected \(n)")
            }
            guard summary.encryptedValues == expectedValues else {
                throw BenchError("tail (\(label)) encrypted \(summary.encryptedValues ?? 0) values, expected \(expectedValues) (5 per insert, 6 per update)")
            }
            guard scan.canaryHits == 0 else { throw BenchError("tail (\(label)): \(scan.canaryHits) plaintext canaries in the change segments") }
            guard scan.visibleHits > 0 else { throw BenchError("tail (\(label)): the unprotected marker was not found: the canary search saw nothing") }
            let created = summary.keysCreated ?? 0
            if label == "cold", created != Int64(workload.inserts) {
                throw BenchError("the cold tail created \(created) keys, expected one per insert (\(workload.inserts))")
            }
            runs.append(TailingResults.TailRun(
                label: label, events: summary.events, seconds: run.seconds, tailSeconds: summary.seconds, cpuSeconds: run.cpuSeconds,
                eventsPerSecond: Double(summary.events) / run.seconds, eventsPerSecondOwn: Double(summary.events) / summary.seconds,
                encryptedValues: summary.encryptedValues ?? 0, keysCreated: created,
                encryptionsPerCoreSecond: Double(summary.encryptedValues ?? 0) / run.cpuSeconds,
                segments: summary.segments, storedBytes: scan.storedBytes, peakRSSBytes: run.maxRSS, peakRSSFloorBytes: run.maxRSSFloor,
                sampledPeakRSSBytes: run.sampledPeakRSS))
        }
        let cold = runs[0], warm = runs[1]
        var results = TailingResults(
            events: n, inserts: workload.inserts, updates: workload.updates, generateSeconds: generate.seconds, rawRuns: rawRuns, raw: raw,
            tailCold: cold, tailWarm: warm, tailToRaw: warm.eventsPerSecond / raw.eventsPerSecond,
            tailToRawOwn: warm.eventsPerSecondOwn / raw.eventsPerSecond, coldTailToRaw: cold.eventsPerSecond / raw.eventsPerSecond)

        print("tail breakdown: the tailer's loop on one thread in this process, timed stage by stage")
        results.breakdown = try tailBreakdown(pipeline: pipeline, from: t0, count: n)
        results.replay = try replayPhase(ciphertail, client: client, pipeline: pipeline, repo: repo, base: base, at: last, workload: workload)
        results.lag = try lagPhase(ciphertail, client: client, pipeline: pipeline)
        return results
    }

    /// The tail workload's pipeline: the five protected fields of the encrypted backup, a key
    /// per user, its own key vault and master key.
    func writeTailPipeline() throws -> String {
        try writeProfilePipeline(path: "\(work)/tail.yaml", workload: "the tailing workload", uri: uri,
                                 namespace: Bench.tailNS.description, rule: "\(Bench.tailNS.database).*", files: "\(work)/tail",
                                 extra: "tail: {segmentMaxAgeSeconds: 1}")
    }

    /// A bare libmongoc change stream with the tailer's options, from `t0`, until `count`
    /// events have arrived. Returns the timing and the last event's cluster time.
    func rawRead(from t0: ClusterTime, count: Int) throws -> (TailingResults.Read, ClusterTime) {
        let reader = try Client(ConnectionString(uri), appName: "ciphertail-bench-raw")
        let filter: Document = ["$and": [["$or": [["ns.db": .string(Bench.tailNS.database), "ns.coll": .string(Bench.tailNS.collection)]]],
                                         ["ns.coll": ["$ne": "__keyVault"]]]]
        let pipeline: [Document] = [["$match": ["$or": [.document(filter), ["operationType": "invalidate"]]]]]
        let options: Document = ["startAtOperationTime": .timestamp(t0), "fullDocument": "updateLookup",
                                 "fullDocumentBeforeChange": "whenAvailable", "maxAwaitTimeMS": 250, "batchSize": 1000]
        var events = 0
        var idle = 0
        var last = t0
        let timing = try Timing.measure {
            let stream = try reader.collection(Bench.tailNS).watch(pipeline: pipeline, options: options)
            while events < count {
                guard let event = try stream.next() else {
                    idle += 1
                    if idle > 120 { throw BenchError("the raw change stream stopped after \(events) of \(count) events") }
                    continue
                }
                events += 1
                if let ts = event["clusterTime"]?.timestampValue { last = ts }
            }
        }
        return (TailingResults.Read(events: Int64(events), seconds: timing.seconds, cpuSeconds: timing.cpuSeconds,
                                    eventsPerSecond: Double(events) / timing.seconds), last)
    }

    /// Reads every segment of a repository's change log: events, bytes, canaries in the
    /// decompressed records and in the files, and each event's lag.
    func scanLog(_ repoPath: String) throws -> LogScan {
        let log = ChangeLog(repository: try Repository(path: repoPath))
        let (entries, unreadable) = log.load()
        guard unreadable.isEmpty else { throw BenchError("\(unreadable.count) change log entries in \(repoPath) do not load: \(unreadable[0].error)") }
        var scan = LogScan()
        let canary = Array(TailWorkload.canary.utf8), canaryLower = Array(TailWorkload.canary.lowercased().utf8)
        let visible = Array(TailWorkload.visible.utf8)
        func count(_ needle: [UInt8], in bytes: [UInt8]) -> Int {
            // memchr for the first byte, memcmp for the rest (memmem is a GNU extension Swift does not see).
            var hits = 0
            bytes.withUnsafeBytes { hay in
                needle.withUnsafeBytes { pin in
                    guard hay.count >= pin.count, let base = hay.baseAddress else { return }
                    var o = 0
                    let last = hay.count - pin.count
                    while o <= last, let p = memchr(base + o, Int32(pin[0]), last - o + 1) {
                        let at = base.distance(to: UnsafeRawPointer(p))
                        if memcmp(base + at, pin.baseAddress!, pin.count) == 0 { hits += 1 }
                        o = at + 1
                    }
                }
            }
            return hits
        }
        for (entry, _) in entries {
            scan.entries += 1
            scan.to = entry.to
            guard entry.kind == .segment, let info = entry.segment else { continue }
            scan.segments += 1
            scan.events += entry.events ?? 0
            scan.storedBytes += info.size
            let path = log.segmentPath(entry)
            if let file = FileManager.default.contents(atPath: path) {
                let bytes = [UInt8](file)
                scan.canaryHits += count(canary, in: bytes) + count(canaryLower, in: bytes)
            }
            let reader = try SegmentReader(path: path)
            let durable = Double(entry.durableAtMillis) / 1000
            while let block = try reader.nextBlock() {
                scan.canaryHits += count(canary, in: block.data) + count(canaryLower, in: block.data)
                scan.visibleHits += count(visible, in: block.data)
                block.forEachRecord { raw in
                    scan.recordsRead += 1
                    if case .datetime(let ms)? = Document(trusted: Array(raw))["wallTime"] {
                        scan.lags.append(max(0, durable - Double(ms) / 1000))
                    }
                }
            }
        }
        return scan
    }

    // MARK: Replay

    func replayPhase(_ ciphertail: String, client: Client, pipeline: String, repo: String, base: SnapshotOutput,
                     at target: ClusterTime, workload: TailWorkload) throws -> TailingResults.Replay {
        let mapping = ["--ns-from", "\(Bench.tailNS.database).*", "--ns-to", "\(Bench.pitrNS.database).*", "--drop", "--json"]
        print("replay: restore of the empty base snapshot alone")
        let snapshotOnly = try decode(PITROutput.self, try runCiphertail(ciphertail, [
            "restore", "--pipeline", pipeline, "--repo", repo, "--uri", uri, "--backup", base.id,
        ] + mapping, output: "\(work)/replay-snapshot.json"), "restore")

        var seconds: [String: Double] = [:]
        var applied: Int64 = 0, segments = 0
        for (label, extra) in [("decrypting", [String]()), ("keepEncrypted", ["--keep-encrypted"])] {
            print("replay: restore --at \(target)\(extra.isEmpty ? ", decrypting" : " --keep-encrypted")")
            let out = try decode(PITROutput.self, try runCiphertail(ciphertail, [
                "restore", "--pipeline", pipeline, "--repo", repo, "--uri", uri, "--at", target.description,
            ] + extra + mapping, output: "\(work)/replay-\(label).json"), "restore")
            guard out.eventsApplied == Int64(workload.count), out.backup == base.id else {
                throw BenchError("restore --at replayed \(out.eventsApplied) events from \(out.backup), expected \(workload.count) from \(base.id)")
            }
            let restored = client.collection(Bench.pitrNS)
            guard try restored.countDocuments() == Int64(workload.inserts) else {
                throw BenchError("\(Bench.pitrNS) holds \(try restored.countDocuments()) documents after restore --at, expected \(workload.inserts)")
            }
            if label == "decrypting" {
                for d in [0, 1, workload.inserts / 2, workload.inserts - 1] {
                    let filter: Document = ["_id": .int64(Int64(d))]
                    guard let got = try restored.find(filter).next(), let want = try client.collection(Bench.tailNS).find(filter).next(), got == want else {
                        throw BenchError("document \(d) restored to \(target) differs from the source")
                    }
                }
            }
            seconds[label] = out.seconds
            applied = out.eventsApplied
            segments = out.changeSegments
            try restored.drop()
        }

        print("replay baseline: the same \(workload.count) operations as ordered bulks of replaceOne upserts and updateOnes, in clear")
        let plain = client.collection(Bench.plainTailNS)
        try plain.drop()
        let bulk = try Timing.measure { try workload.writeAsReplay(to: plain) }
        guard try plain.countDocuments() == Int64(workload.inserts) else { throw BenchError("\(Bench.plainTailNS) holds the wrong number of documents") }
        try plain.drop()

        let bulkRate = Double(workload.count) / bulk.seconds
        let replaySeconds = { (s: Double) in max(s - snapshotOnly.seconds, 1e-3) }
        let dec = Double(applied) / replaySeconds(seconds["decrypting"]!)
        let keep = Double(applied) / replaySeconds(seconds["keepEncrypted"]!)
        return TailingResults.Replay(
            events: applied, inserts: Int64(workload.inserts), updates: Int64(workload.updates),
            decryptingSeconds: seconds["decrypting"]!, keepEncryptedSeconds: seconds["keepEncrypted"]!, snapshotOnlySeconds: snapshotOnly.seconds,
            decryptingEventsPerSecond: dec, keepEncryptedEventsPerSecond: keep, changeSegments: segments,
            bulkOps: Int64(workload.count), bulkSeconds: bulk.seconds, bulkOpsPerSecond: bulkRate,
            decryptingToBulk: dec / bulkRate, keepEncryptedToBulk: keep / bulkRate)
    }

    // MARK: Lag

    /// A writer at `lagRate` inserts per second while `ciphertail tail` follows; then SIGTERM
    /// once the log covers the last write, and the lag of every event from the log.
    func lagPhase(_ ciphertail: String, client: Client, pipeline: String) throws -> TailingResults.Lag {
        let repo = "\(work)/tail-live-repo"
        try? FileManager.default.removeItem(atPath: repo)
        try client.collection(Bench.liveNS).drop()
        try client.runCommand(["create": .string(Bench.liveNS.collection)], database: Bench.liveNS.database)
        let start = try operationTime(client)
        // An idle checkpoint every second: the first entry says the stream is open and following.
        let tail = try startChild([ciphertail, "tail", "--pipeline", pipeline, "--repo", repo, "--ns", Bench.liveNS.description,
                                   "--no-base-snapshot", "--start-at", start.description, "--idle-checkpoint", "1", "--json"],
                                  stdoutPath: "\(work)/tail-live.json")
        var stopped = false
        defer { if !stopped { tail.signal(SIGKILL); _ = try? tail.wait() } }
        try waitForLog(repo, tail: tail, timeout: 60) { $0 != nil }

        let perBatch = 50
        let interval = Double(perBatch) / lagRate
        let batches = Int((lagSeconds / interval).rounded())
        // The same profiles as the warm tail run (keys exist), under new _ids.
        let workload = TailWorkload(count: batches * perBatch, idBase: 10_000_000, users: TailWorkload(count: tailEvents).inserts)
        print(String(format: "lag: ciphertail tail following %@ while %d inserts are written at %.0f/s (%d every %.0f ms) for %.0f s",
                     Bench.liveNS.description, batches * perBatch, lagRate, perBatch, interval * 1000, lagSeconds))
        let writer = PacedWriter(uri: uri, namespace: Bench.liveNS, workload: workload, perBatch: perBatch, interval: interval)
        let thread = Thread { writer.run() }
        thread.name = "bench-writer"
        thread.start()
        while !writer.done { tail.sample(); usleep(20_000) }
        if let error = writer.error { throw error }
        let lastWrite = writer.lastOperationTime!
        try waitForLog(repo, tail: tail, timeout: 300) { ($0 ?? ClusterTime(t: 0, i: 0)) >= lastWrite }
        tail.signal(SIGTERM)
        let run = try tail.wait(timeout: 120)
        stopped = true
        guard run.succeeded else { throw BenchError("ciphertail tail exited with status \(run.exitStatus) after SIGTERM") }
        let summary = try decode(TailOutput.self, run, "tail")
        let scan = try scanLog(repo)
        guard scan.events == Int64(workload.count), scan.lags.count == workload.count else {
            throw BenchError("the live log holds \(scan.events) events (\(scan.lags.count) with a wallTime), \(workload.count) were written")
        }
        guard scan.canaryHits == 0 else { throw BenchError("lag: \(scan.canaryHits) plaintext canaries in the change segments") }
        return TailingResults.Lag(
            targetRate: lagRate, writes: Int64(workload.count), writerSeconds: writer.seconds,
            achievedRate: Double(workload.count) / writer.seconds, lateBatches: writer.lateBatches, segments: scan.segments,
            fromLog: percentiles(scan.lags), summaryP50: summary.lagSecondsP50, summaryP99: summary.lagSecondsP99,
            summaryMax: summary.lagSecondsMax, tailCPUSeconds: run.cpuSeconds, tailSampledPeakRSSBytes: run.sampledPeakRSS)
    }

    /// Polls the coverage of a repository's change log until `done` says yes.
    func waitForLog(_ repo: String, tail: RunningChild, timeout: Double, until done: (ClusterTime?) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            tail.sample()
            guard tail.isRunning else { throw BenchError("ciphertail tail ended early (its messages are above)") }
            if let r = try? Repository(path: repo) {
                let to = ChangeLog(repository: r).coverage(checkSegments: false).intervals.last?.to
                if done(to) { return }
            }
            usleep(50_000)
        }
        throw BenchError("the change log in \(repo) did not get there within \(Int(timeout)) s")
    }
}

/// Same method as the tailer's summary: sorted[n / 2] and sorted[min(n - 1, n * 0.99)].
func percentiles(_ values: [Double]) -> TailingResults.Percentiles {
    let s = values.sorted()
    guard !s.isEmpty else { return .init(count: 0, p50: 0, p99: 0, max: 0) }
    return .init(count: s.count, p50: s[s.count / 2], p99: s[min(s.count - 1, Int(Double(s.count) * 0.99))], max: s.last!)
}

func operationTime(_ client: Client) throws -> ClusterTime {
    guard let t = try client.runCommand(["ping": 1])["operationTime"]?.timestampValue else { throw BenchError("ping carries no operationTime") }
    return t
}

/// Inserts a workload in batches at fixed slots (batch i at start + i * interval), on its own
/// thread and client. A late batch is sent at once; the schedule does not slide.
final class PacedWriter: @unchecked Sendable {
    let uri: String
    let namespace: Namespace
    let workload: TailWorkload
    let perBatch: Int
    let interval: Double
    private let lock = NSLock()
    private var finished = false
    private(set) var error: Error?
    private(set) var seconds = 0.0
    private(set) var lateBatches = 0
    private(set) var lastOperationTime: ClusterTime?

    init(uri: String, namespace: Namespace, workload: TailWorkload, perBatch: Int, interval: Double) {
        self.uri = uri
        self.namespace = namespace
        self.workload = workload
        self.perBatch = perBatch
        self.interval = interval
    }

    var done: Bool { lock.lock(); defer { lock.unlock() }; return finished }

    func run() {
        do {
            let client = try Client(ConnectionString(uri), appName: "ciphertail-bench-writer")
            let collection = client.collection(namespace)
            // Built before the clock starts: the pace measures the server, not document building.
            let docs = (0..<workload.count).map { workload.document($0) }
            let start = DispatchTime.now().uptimeNanoseconds
            for (i, first) in stride(from: 0, to: docs.count, by: perBatch).enumerated() {
                let slot = start + UInt64(Double(i) * interval * 1e9)
                let now = DispatchTime.now().uptimeNanoseconds
                if now < slot { usleep(UInt32((slot - now) / 1000)) } else if now - slot > UInt64(interval * 1e9) { lateBatches += 1 }
                let bulk = collection.bulk(ordered: false)
                for d in docs[first..<min(first + perBatch, docs.count)] { try bulk.insert(d) }
                try bulk.execute()
            }
            seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            lastOperationTime = try operationTime(client)
        } catch {
            self.error = error
        }
        lock.lock(); finished = true; lock.unlock()
    }
}

struct SnapshotOutput: Decodable {
    var id: String
    var clusterTime: ClusterTimeRange
}

struct TailOutput: Decodable {
    var segments: Int
    var events: Int64
    var seconds: Double
    var lagSecondsP50: Double?
    var lagSecondsP99: Double?
    var lagSecondsMax: Double?
    var encryptedValues: Int64?
    var keysCreated: Int64?
}

struct PITROutput: Decodable {
    var backup: String
    var documents: Int64
    var eventsApplied: Int64
    var changeSegments: Int
    var seconds: Double
}

// MARK: Report

extension Bench {
    func addTailing(_ r: inout Results, _ t: TailingResults) {
        var t = t
        r.goals.append(Goal(name: "tail / raw change stream", value: t.tailToRaw, target: ">= 0.70", met: t.tailToRaw >= 0.7))
        if let lag = t.lag {
            r.goals.append(Goal(name: String(format: "lag p99 s at %.0f/s", lag.achievedRate), value: lag.fromLog.p99, target: "< 2.0",
                                met: lag.fromLog.p99 < 2 && lag.achievedRate >= 0.95 * lag.targetRate))
        }
        if let replay = t.replay {
            r.goals.append(Goal(name: "PITR replay / bulk write", value: replay.decryptingToBulk, target: ">= 0.70", met: replay.decryptingToBulk >= 0.7))
        }
        t.notes.append("raw change stream: libmongoc reading the \(t.events) events already in the oplog from the base snapshot's cluster time, "
                       + "with the tailer's options (updateLookup, fullDocumentBeforeChange whenAvailable, batchSize 1000, $match on the namespace), "
                       + "each event copied out of the driver and nothing else done; the limit for a tailer")
        t.notes.append("ciphertail tail: the same events through `tail --start-at <that time> --until <last event>`: five fields encrypted "
                       + "per insert (six per update: the looked-up full document and the updated email), zstd -3, a segment fsynced and "
                       + "its entry written each second; events/s over the process's wall time (start-up and the final commit included), "
                       + "'own' over the tailer's summary seconds. Cold: every insert is a new user, so a new data key; warm: the keys exist")
        if let lag = t.lag {
            t.notes.append(String(format: "lag: %lld inserts written in batches of 50 at fixed slots (%d batch(es) later than their slot by more "
                                  + "than one interval); per event, the entry's durableAtMillis minus the event's server wallTime, read "
                                  + "back from the log. The tail's own summary takes the same difference in the process, from the same "
                                  + "durableAtMillis; neither counts the fsync of the entry itself (about a millisecond here)",
                                  lag.writes, lag.lateBatches))
        }
        if t.replay != nil {
            t.notes.append("replay: `restore --at <last event>` of the warm tail's log after its base snapshot, which is empty, "
                           + "minus a restore of that snapshot alone; the replay is single-threaded: read, decrypt each event, apply in "
                           + "ordered bulks of 1,000. Baseline: the same operations as single-threaded ordered bulks of 1,000 replaceOne "
                           + "upserts and updateOnes in clear")
        }
        r.tailing = t
    }
}

func printTailing(_ t: TailingResults) {
    func fmt(_ v: Double, _ d: Int) -> String { String(format: "%.\(d)f", v) }
    func col(_ s: String, _ width: Int, left: Bool = false) -> String {
        let pad = String(repeating: " ", count: max(0, width - s.count))
        return left ? s + pad : pad + s
    }
    print("")
    print("tailing: \(t.events) change events on \(Bench.tailNS) (\(t.inserts) inserts, \(t.updates) updates; 5 protected fields, a key per user), "
          + "written in \(fmt(t.generateSeconds, 1)) s")
    let header = col("phase", 30, left: true) + col("events", 9) + col("events/s", 10) + col("wall s", 8) + col("cpu s", 8)
        + col("enc/cpu-s", 11) + col("peak RSS MB", 13)
    print(header)
    print(String(repeating: "-", count: header.count))
    print(col("raw change stream (best of 2)", 30, left: true) + col(String(t.raw.events), 9) + col(fmt(t.raw.eventsPerSecond, 0), 10)
          + col(fmt(t.raw.seconds, 2), 8) + col(fmt(t.raw.cpuSeconds, 2), 8) + col("-", 11) + col("-", 13))
    for run in [t.tailCold, t.tailWarm] {
        let rss = run.sampledPeakRSSBytes.map { fmt(megabytes($0), 1) } ?? "-"
        print(col("ciphertail tail (\(run.label))", 30, left: true) + col(String(run.events), 9) + col(fmt(run.eventsPerSecond, 0), 10)
              + col(fmt(run.seconds, 2), 8) + col(fmt(run.cpuSeconds, 2), 8) + col(fmt(run.encryptionsPerCoreSecond, 0), 11) + col(rss, 13))
    }
    print("peak RSS: VmHWM sampled while the tail ran (ru_maxrss \(fmt(megabytes(t.tailWarm.peakRSSBytes), 1)) MB warm, "
          + "floor \(fmt(megabytes(t.tailWarm.peakRSSFloorBytes), 1)) MB)")
    print("tail / raw: \(fmt(t.tailToRaw, 2)) (process wall time; \(fmt(t.tailToRawOwn, 2)) over the tailer's own seconds); "
          + "cold keys \(fmt(t.coldTailToRaw, 2))")
    if let b = t.breakdown {
        print("where the time goes, one thread, µs: read \(fmt(b.readMicros, 1)) per event (wall, server included); protectEvent "
              + "\(fmt(b.protectInsertMicros, 1)) per insert, \(fmt(b.protectUpdateMicros, 1)) per update; segment append + finish "
              + "\(fmt(b.appendMicros, 1)) per event; all in one loop \(fmt(Double(b.events) / b.totalSeconds, 0)) events/s. "
              + "Inserts through protect(batch:), 16 per call (the tailer's way): \(fmt(b.batchedInsertMicros, 1)) per insert")
    }
    if let lag = t.lag {
        let s = [lag.summaryP50, lag.summaryP99, lag.summaryMax].map { $0.map { fmt($0, 3) } ?? "-" }
        print("lag at \(fmt(lag.achievedRate, 0)) inserts/s (target \(fmt(lag.targetRate, 0)), \(lag.writes) over \(fmt(lag.writerSeconds, 1)) s, "
              + "\(lag.segments) segments): from the log p50 \(fmt(lag.fromLog.p50, 3)) s, p99 \(fmt(lag.fromLog.p99, 3)) s, "
              + "max \(fmt(lag.fromLog.max, 3)) s; tail summary \(s[0]) / \(s[1]) / \(s[2]) s")
    }
    if let r = t.replay {
        print("replay (restore --at, \(r.events) events in \(r.changeSegments) change segments over an empty snapshot of "
              + "\(fmt(r.snapshotOnlySeconds, 2)) s): decrypting \(fmt(r.decryptingEventsPerSecond, 0)) events/s "
              + "(\(fmt(r.decryptingSeconds, 2)) s), keep-encrypted \(fmt(r.keepEncryptedEventsPerSecond, 0)) events/s "
              + "(\(fmt(r.keepEncryptedSeconds, 2)) s); plain bulk write \(fmt(r.bulkOpsPerSecond, 0)) ops/s (\(fmt(r.bulkSeconds, 2)) s)")
        print("replay / bulk write: decrypting \(fmt(r.decryptingToBulk, 2)), keep-encrypted \(fmt(r.keepEncryptedToBulk, 2))")
    }
    t.notes.forEach { print("note: \($0)") }
}

// MARK: Where the tailer's time goes

/// The tailer's work on one thread in this process, stage by stage: the change stream read
/// (`next`, a copy out of the driver), `protectEvent` per event (inserts and updates timed
/// apart), the append to a change segment (compression runs on other threads) and its finish
/// (fsync); then the inserts' documents again through `protect(batch:)`, 16 per call, which is
/// how `ciphertail tail` now seals inserts (on as many threads as there are cores).
struct TailBreakdown: Codable {
    var events: Int64
    var inserts: Int64
    var updates: Int64
    var readSeconds: Double
    var protectInsertSeconds: Double
    var protectUpdateSeconds: Double
    var appendSeconds: Double
    var totalSeconds: Double
    var cpuSeconds: Double
    var batchedInsertSeconds: Double
    var batchedInserts: Int64

    var readMicros: Double { readSeconds * 1e6 / Double(events) }
    var protectInsertMicros: Double { protectInsertSeconds * 1e6 / Double(max(inserts, 1)) }
    var protectUpdateMicros: Double { protectUpdateSeconds * 1e6 / Double(max(updates, 1)) }
    var appendMicros: Double { appendSeconds * 1e6 / Double(events) }
    var batchedInsertMicros: Double { batchedInsertSeconds * 1e6 / Double(max(batchedInserts, 1)) }
}

extension Bench {
    func tailBreakdown(pipeline: String, from t0: ClusterTime, count: Int) throws -> TailBreakdown {
        let file = try PipelineFile.load(path: pipeline)
        guard let settings = try KeySettings.resolve(file.encryption, keyVault: nil, masterKeyFile: nil),
              let rules = file.encryption?.protectionRules() else { throw BenchError("the tail pipeline has no keys") }
        let protector = DocumentProtector(rules: rules, engine: try settings.openEngine())
        let reader = try Client(ConnectionString(uri), appName: "ciphertail-bench-breakdown")
        let filter: Document = ["$and": [["$or": [["ns.db": .string(Bench.tailNS.database), "ns.coll": .string(Bench.tailNS.collection)]]],
                                         ["ns.coll": ["$ne": "__keyVault"]]]]
        let options: Document = ["startAtOperationTime": .timestamp(t0), "fullDocument": "updateLookup",
                                 "fullDocumentBeforeChange": "whenAvailable", "maxAwaitTimeMS": 250, "batchSize": 1000]
        let path = "\(work)/breakdown.seg"
        try? FileManager.default.removeItem(atPath: path)
        func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
        var read: UInt64 = 0, protectInsert: UInt64 = 0, protectUpdate: UInt64 = 0, append: UInt64 = 0
        var events = 0, inserts = 0, updates = 0
        var insertDocs: [Document] = []
        let cpu0 = selfCPUSeconds(), start = now()
        let stream = try reader.collection(Bench.tailNS).watch(pipeline: [["$match": ["$or": [.document(filter), ["operationType": "invalidate"]]]]],
                                                               options: options)
        let segment = try SegmentWriter(path: path, relativePath: "breakdown.seg", kind: .changeEvent)
        while events < count {
            let a = now()
            guard let event = try stream.next() else { read += now() - a; continue }
            let b = now()
            let sealed = try protector.protectEvent(event)
            let c = now()
            try segment.append(sealed.bytes)
            let d = now()
            read += b - a; append += d - c
            events += 1
            if event["operationType"]?.stringValue == "insert" {
                inserts += 1
                protectInsert += c - b
                if insertDocs.count < 20_000, let full = event["fullDocument"]?.documentValue { insertDocs.append(full) }
            } else {
                updates += 1
                protectUpdate += c - b
            }
        }
        let e = now()
        _ = try segment.finish()
        append += now() - e
        let total = Double(now() - start) / 1e9, cpu = selfCPUSeconds() - cpu0
        try? FileManager.default.removeItem(atPath: path)
        let batched = try Timing.measure {
            for first in stride(from: 0, to: insertDocs.count, by: 16) {
                _ = try protector.protect(batch: Array(insertDocs[first..<min(first + 16, insertDocs.count)]),
                                          database: Bench.tailNS.database, collection: Bench.tailNS.collection)
            }
        }
        return TailBreakdown(events: Int64(events), inserts: Int64(inserts), updates: Int64(updates), readSeconds: Double(read) / 1e9,
                             protectInsertSeconds: Double(protectInsert) / 1e9, protectUpdateSeconds: Double(protectUpdate) / 1e9,
                             appendSeconds: Double(append) / 1e9, totalSeconds: total, cpuSeconds: cpu,
                             batchedInsertSeconds: batched.seconds, batchedInserts: Int64(insertDocs.count))
    }
}
