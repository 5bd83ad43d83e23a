import Archive
import BSON
import Foundation
import Mongo
import TestSupport
import XCTest

/// A bounded soak of `ciphertail run`: steady writes while scheduled base snapshots (every
/// minute) and prunes (keep the last 2) run. Reports event lag p50/p99 (each event's server
/// wall time to the moment its segment was durable), RSS over time, and events lost, which
/// must be zero: a point-in-time restore to the last write equals the source. RSS must stay
/// flat. CIPHERTAIL_SOAK_SECONDS sets the length (150 in CI; longer by hand).
final class SoakTests: XCTestCase {
    func testSoakUnderSteadyWritesWithSnapshotsAndPrunes() throws {
        let seconds = ProcessInfo.processInfo.environment["CIPHERTAIL_SOAK_SECONDS"].flatMap(Double.init) ?? 150
        let src = TestEnv.uniqueName("soak"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<1000).map { Document(["_id": .int32(Int32($0)), "v": .int32(0), "pad": .string(String(repeating: "s", count: 100))]) })
        let dir = TestEnv.temporaryDirectory("soak")
        let pipeline = try writeRunPipeline(dir, name: TestEnv.uniqueName("soak"), namespaces: ["\(src).*"],
                                            extra: "schedule: {baseSnapshot: \"* * * * *\", timeZone: UTC}\nretention: {keepLast: 2}")
        let run = try RunProcess(pipeline, log: dir + "/run.log")
        defer { _ = run.stop() }
        XCTAssertTrue(run.waitFor("base snapshot taken"), run.output)

        // Steady writes: a batch of 10 every 50 ms (about 200 writes/s), inserts and updates.
        let writer = try Client(TestEnv.connection)
        var writes = 0
        var rss: [(Double, Int)] = []
        let start = Date()
        var nextSample = start
        var nextId: Int32 = 1000
        while Date().timeIntervalSince(start) < seconds {
            let tick = Date()
            for k in 0..<10 {
                if k % 2 == 0 {
                    nextId += 1
                    try writer.runCommand(["insert": "c", "documents": [["_id": .int32(nextId), "v": .int32(0), "pad": .string(String(repeating: "w", count: 100))]]], database: src)
                } else {
                    let id = Int32.random(in: 0..<nextId)
                    try writer.runCommand(["update": "c", "updates": [["q": ["_id": .int32(id)], "u": ["$inc": ["v": 1]]]]], database: src)
                }
                writes += 1
            }
            if Date() >= nextSample {
                rss.append((Date().timeIntervalSince(start), residentKiB(run.pid)))
                nextSample = nextSample.addingTimeInterval(5)
            }
            let spent = Date().timeIntervalSince(tick)
            if spent < 0.05 { usleep(useconds_t((0.05 - spent) * 1_000_000)) }
        }
        let target = try operationTime(writer)
        let expected = try TestEnv.documents(client, ns)
        try waitCovered(dir + "/repo", target)
        XCTAssertTrue(run.isRunning, run.output)
        XCTAssertEqual(run.stop(), 0, run.output)

        // Events lost: none, or the restore to the last write would differ.
        let r = restoreAt(dir + "/repo", target.description, from: "\(src).*", to: "\(dst).*")
        XCTAssertEqual(r.status, 0, r.stderr)
        let restored = try TestEnv.documents(client, Namespace(database: dst, collection: "c"))
        let lost = Set(expected.map(\.bytes)).subtracting(restored.map(\.bytes)).count
        XCTAssertEqual(lost, 0, "documents that differ after the soak")
        XCTAssertEqual(restored.count, expected.count)

        // Lag of every event still in the log.
        let repo = try Repository(path: dir + "/repo")
        let log = ChangeLog(repository: repo)
        var lags: [Double] = []
        for entry in log.load().entries.map(\.entry) where entry.kind == .segment && (entry.events ?? 0) > 0 {
            let reader = try SegmentReader(path: log.segmentPath(entry))
            while let block = try reader.nextBlock() {
                block.forEachRecord { raw in
                    guard let event = try? Document(bytes: Array(raw)), case .datetime(let ms)? = event["wallTime"] else { return }
                    lags.append(max(0, Double(entry.durableAtMillis - ms) / 1000))
                }
            }
        }
        lags.sort()
        XCTAssertGreaterThan(lags.count, 100)
        let p50 = lags[lags.count / 2], p99 = lags[min(lags.count - 1, Int(Double(lags.count) * 0.99))]
        let snapshots = run.output.components(separatedBy: "base snapshot taken").count - 1
        let pruned = repo.backupIDs().count
        XCTAssertLessThanOrEqual(pruned, 2, "retention keeps the last 2")
        if seconds >= 130 { XCTAssertGreaterThanOrEqual(snapshots, 3, "a scheduled snapshot each minute") }
        XCTAssertTrue(ChangeLog(repository: repo).coverage().breaks.isEmpty)

        // RSS: the last third of the run against the first (after a warm-up sample).
        let samples = rss.dropFirst().map(\.1)
        let third = max(1, samples.count / 3)
        let early = samples.prefix(third).max() ?? 0, late = samples.suffix(third).max() ?? 0
        XCTAssertLessThan(Double(late), Double(early) * 1.5 + 20_000, "RSS grew: \(rss)")
        print(String(format: "SOAK %.0f s: %d writes (%.0f/s), %d events in the kept log, lag p50 %.2f s p99 %.2f s, base snapshots %d, backups kept %d, RSS %d -> %d KiB (max %d), events lost %d",
                     seconds, writes, Double(writes) / seconds, lags.count, p50, p99, snapshots, pruned, samples.first ?? 0, samples.last ?? 0,
                     samples.max() ?? 0, lost))
    }
}

func residentKiB(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}
