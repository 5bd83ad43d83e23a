import Archive
import BSON
import Foundation
import Mongo
import TestSupport
import XCTest

/// `ciphertail run` as its own process (a `CLIProcess`), its log in a file the test reads.
final class RunProcess {
    let cli: CLIProcess

    init(_ pipeline: String, extra: [String] = [], environment: [String: String] = [:], log: String) throws {
        cli = try CLIProcess(["run", "--pipeline", pipeline, "--log-level", "info"] + extra, logs: log, environment: environment)
    }

    var pid: Int32 { cli.pid }
    var output: String { cli.stderr }
    var isRunning: Bool { cli.isRunning }

    /// Waits until the log has `text` (or the process ends, or the time is up).
    @discardableResult
    func waitFor(_ text: String, timeout: TimeInterval = 60) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if output.contains(text) { return true }
            if !isRunning { return output.contains(text) }
            usleep(100_000)
        }
        return false
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// The port of /metrics and /healthz, from the line the process logs when it listens.
    func metricsPort() -> Int? {
        guard waitFor("metrics endpoint listening", timeout: 30),
              let r = output.range(of: #"http://127\.0\.0\.1:([0-9]+)/metrics"#, options: .regularExpression) else { return nil }
        return Int(output[r].split(separator: ":").last!.split(separator: "/").first!)
    }

    /// One sample's value from /metrics (`name` with its labels as printed, e.g. `x{kind="change"}`).
    func metric(_ name: String) throws -> Double? {
        guard let port = metricsPort() else { return nil }
        let body = try RawHTTP.get(port: port, "/metrics").body
        for line in body.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ").last!)
        }
        return nil
    }

    func healthz() throws -> HTTPReply? {
        guard let port = metricsPort() else { return nil }
        return try RawHTTP.get(port: port, "/healthz")
    }

    func stop() -> Int32 { cli.terminate() }
}

/// A pipeline file for `run` in a fresh folder (tail settings fast enough for tests).
func writeRunPipeline(_ dir: String, name: String, namespaces: [String], repo: String? = nil, extra: String = "") throws -> String {
    let path = dir + "/\(name).yaml"
    let text = """
    version: 1
    name: \(name)
    source: {uri: "\(TestEnv.uri)", namespaces: [\(namespaces.map { "\"\($0)\"" }.joined(separator: ", "))]}
    archive: {repo: "\(repo ?? dir + "/repo")"}
    tail: {segmentMaxAgeSeconds: 0.2, idleCheckpointSeconds: 0.5}
    lease: {namespace: "\(leaseDatabase).leases", ttlSeconds: 4}
    metrics: {listen: "127.0.0.1:0"}
    \(extra)
    """
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// With the writes paused: a point-in-time restore to the last acknowledged write of
/// `ns` (into database `to`) equals the source, document by document.
func assertRestoreToNowEqualsSource(_ client: Client, _ ns: Namespace, repo: String, to: String, _ message: String,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
    let target = try operationTime(client)
    let expected = try TestEnv.documents(client, ns)
    try waitCovered(repo, target)
    let r = restoreAt(repo, target.description, from: "\(ns.database).*", to: "\(to).*")
    XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
    let restored = try TestEnv.documents(client, Namespace(database: to, collection: ns.collection))
    XCTAssertEqual(restored.count, expected.count, message, file: file, line: line)
    XCTAssertTrue(restored.map(\.bytes) == expected.map(\.bytes), message, file: file, line: line)
}

/// Lease documents of the tests live apart from real ones.
let leaseDatabase = "ciphertail_test"

func leaseDocument(_ client: Client, _ pipeline: String) throws -> Document? {
    try client.collection(Namespace(database: leaseDatabase, collection: "leases")).find(["_id": .string(pipeline)]).next()
}

final class RunTests: XCTestCase {
    /// Two `run` processes on one pipeline: only the lease holder writes; the other waits as
    /// standby. The holder is killed (SIGKILL) under a write load; the standby takes the lease
    /// once it expires, resumes from the durable resume token, and a point-in-time restore to
    /// the last write equals the source. Every entry carries the writer's lease term, and terms
    /// never go back along the log: the two never wrote at the same time.
    func testTwoProcessesOneWriterAndTakeoverAfterTheLeaderIsKilled() throws {
        let src = TestEnv.uniqueName("run_lease"), dst = src + "_r"
        let name = TestEnv.uniqueName("lease")
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<500).map { Document(["_id": .int32(Int32($0)), "v": .int32(Int32($0))]) })
        let dir = TestEnv.temporaryDirectory("runlease")
        let pipeline = try writeRunPipeline(dir, name: name, namespaces: ["\(src).*"])
        let a = try RunProcess(pipeline, log: dir + "/a.log")
        XCTAssertTrue(a.waitFor("base snapshot taken"), a.output)
        let b = try RunProcess(pipeline, log: dir + "/b.log")
        defer { _ = a.stop(); _ = b.stop() }
        XCTAssertTrue(b.waitFor("standby"), b.output)
        let standbyHealth = try XCTUnwrap(try b.healthz())
        XCTAssertEqual(standbyHealth.status, 200)
        XCTAssertTrue(standbyHealth.body.contains("standby"), standbyHealth.body)
        XCTAssertEqual(try b.metric("ciphertail_lease_held"), 0)
        XCTAssertEqual(try a.metric("ciphertail_lease_held"), 1)
        var lease = try XCTUnwrap(try leaseDocument(client, name))
        XCTAssertEqual(lease["pid"], .int32(a.pid))
        XCTAssertEqual(lease["term"]?.int64Value, 1)

        let load = WriteLoad(ns)
        defer { load.stop() }
        usleep(1_500_000)
        a.cli.kill9()
        XCTAssertTrue(b.waitFor("lease taken", timeout: 30), b.output)
        lease = try XCTUnwrap(try leaseDocument(client, name))
        XCTAssertEqual(lease["pid"], .int32(b.pid))
        XCTAssertEqual(lease["term"]?.int64Value, 2)
        usleep(1_500_000)
        load.pause()
        try assertRestoreToNowEqualsSource(client, ns, repo: dir + "/repo", to: dst, "the restore after the takeover differs from the source")
        XCTAssertGreaterThan(load.writes, 50)

        let log = ChangeLog(repository: try Repository(path: dir + "/repo"))
        let entries = log.load().entries.map(\.entry)
        let terms = entries.map { $0.leaseTerm ?? -1 }
        XCTAssertEqual(terms, terms.sorted(), "lease terms go back along the log: two writers interleaved")
        XCTAssertEqual(Set(terms), [1, 2], "\(terms)")
        XCTAssertTrue(log.coverage().breaks.isEmpty, "\(log.coverage().breaks)")
        XCTAssertEqual(b.stop(), 0, b.output)
        XCTAssertTrue(b.output.contains("pipeline stopped"), b.output)
        // A clean stop gives the lease back at once.
        lease = try XCTUnwrap(try leaseDocument(client, name))
        XCTAssertEqual(lease["expiresAt"], .datetime(0))
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", dir + "/repo"]).status, 0)
    }

    /// A repository belongs to one pipeline; a pipeline file that cannot work stops `run`
    /// before anything starts, naming the file, line and field.
    func testSecondPipelineOnARepositoryAndInvalidFilesAreRefused() throws {
        let src = TestEnv.uniqueName("run_claim")
        defer { dropDatabases(src) }
        let dir = TestEnv.temporaryDirectory("runclaim")
        let first = try writeRunPipeline(dir, name: TestEnv.uniqueName("first"), namespaces: ["\(src).*"])
        let a = try RunProcess(first, log: dir + "/a.log")
        XCTAssertTrue(a.waitFor("lease taken"), a.output)
        XCTAssertEqual(a.stop(), 0, a.output)
        let second = try writeRunPipeline(dir, name: "second", namespaces: ["\(src).*"], repo: dir + "/repo")
        let r = TestEnv.ciphertail(["run", "--pipeline", second])
        XCTAssertEqual(r.status, 4, r.stderr)
        XCTAssertTrue(r.stderr.contains("belongs to pipeline"), r.stderr)

        let bad = dir + "/bad.yaml"
        try "version: 1\nname: bad\nsource:\n  uri: \(TestEnv.uri)\narchive:\n  repo: \(dir)/badrepo\nschedule:\n  baseSnapshot: \"0 2 * *\"\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let b = TestEnv.ciphertail(["run", "--pipeline", bad])
        XCTAssertEqual(b.status, 64, b.stderr)
        XCTAssertTrue(b.stderr.contains("\(bad):8: schedule.baseSnapshot:"), b.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/badrepo"), "nothing starts")
        try "version: 1\nsource:\n  uri: \(TestEnv.uri)\narchive:\n  repo: \(dir)/badrepo\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let c = TestEnv.ciphertail(["run", "--pipeline", bad])
        XCTAssertEqual(c.status, 64, c.stderr)
        XCTAssertTrue(c.stderr.contains("\(bad):1: name:"), c.stderr)
    }

    /// SIGHUP applies what can change safely and says what needs a restart; a file that no
    /// longer loads leaves the running settings alone. SIGTERM commits and exits 0.
    func testSighupReloadsWhatIsSafe() throws {
        let src = TestEnv.uniqueName("run_hup")
        defer { dropDatabases(src) }
        let dir = TestEnv.temporaryDirectory("runhup")
        let name = TestEnv.uniqueName("hup")
        let pipeline = try writeRunPipeline(dir, name: name, namespaces: ["\(src).*"], extra: "retention: {keepLast: 3}")
        let p = try RunProcess(pipeline, log: dir + "/run.log")
        defer { _ = p.stop() }
        XCTAssertTrue(p.waitFor("base snapshot taken"), p.output)
        let text = try String(contentsOfFile: pipeline, encoding: .utf8)
        try text.replacingOccurrences(of: "retention: {keepLast: 3}", with: "retention: {keepLast: 5}\nschedule: {baseSnapshot: \"0 3 * * *\", timeZone: Europe/Berlin}")
            .replacingOccurrences(of: "namespaces: [", with: "namespaces: [\"other.*\", ")
            .write(toFile: pipeline, atomically: true, encoding: .utf8)
        p.signal(SIGHUP)
        XCTAssertTrue(p.waitFor("settings reloaded"), p.output)
        XCTAssertTrue(p.output.contains("Europe/Berlin"), p.output)
        XCTAssertTrue(p.output.contains("need a restart") && p.output.contains("source"), p.output)
        try "schedule: [".write(toFile: pipeline, atomically: true, encoding: .utf8)
        p.signal(SIGHUP)
        XCTAssertTrue(p.waitFor("does not load; the running settings stay"), p.output)
        XCTAssertEqual(p.stop(), 0, p.output)
    }

    /// The disk fills up during a run (a small tmpfs filled to the last byte where the machine
    /// allows mounting, else the ENOSPC fault seam): capture pauses with an alert, leaves no
    /// damaged segment, and resumes when space returns; a restore to the last write equals the
    /// source, so nothing was lost.
    func testDiskFullPausesCaptureAndItResumesWhenSpaceReturns() throws {
        let src = TestEnv.uniqueName("run_full"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let client = try TestEnv.client()
        let ns = Namespace(database: src, collection: "c")
        try insert(client, ns, (0..<300).map { Document(["_id": .int32(Int32($0)), "v": .int32(Int32($0))]) })
        let dir = TestEnv.temporaryDirectory("runfull")
        let mnt = dir + "/mnt"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mounted = TestEnv.shell("mount -t tmpfs -o size=16m tmpfs \(mnt)").status == 0
        defer { if mounted { TestEnv.shell("umount \(mnt)") } }
        let flag = dir + "/disk-full"
        let pipeline = try writeRunPipeline(dir, name: TestEnv.uniqueName("full"), namespaces: ["\(src).*"], repo: mnt + "/repo")
        let p = try RunProcess(pipeline, environment: mounted ? [:] : ["CIPHERTAIL_FAULT_ENOSPC_WHILE": flag], log: dir + "/run.log")
        defer { _ = p.stop() }
        XCTAssertTrue(p.waitFor("base snapshot taken"), p.output)
        let load = WriteLoad(ns)
        defer { load.stop() }
        usleep(500_000)
        if mounted {
            TestEnv.shell("dd if=/dev/zero of=\(mnt)/filler bs=64k 2>/dev/null; sync")
        } else {
            FileManager.default.createFile(atPath: flag, contents: nil)
        }
        XCTAssertTrue(p.waitFor("disk full, capture paused"), p.output)
        XCTAssertEqual(try p.metric(#"ciphertail_capture_paused{reason="disk_full"}"#), 1)
        usleep(1_000_000)
        try assertNoPartialSegmentLooksWhole(mnt + "/repo")
        if mounted { unlink(mnt + "/filler") } else { unlink(flag) }
        XCTAssertTrue(p.waitFor("disk space is back", timeout: 30), p.output)
        XCTAssertEqual(try p.metric(#"ciphertail_capture_paused{reason="disk_full"}"#), 0)
        usleep(500_000)
        load.pause()
        try assertRestoreToNowEqualsSource(client, ns, repo: mnt + "/repo", to: dst, "writes made while the disk was full were lost")
        XCTAssertEqual(p.stop(), 0, p.output)
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", mnt + "/repo"]).status, 0)
        print("disk full test on \(mounted ? "a 16 MiB tmpfs" : "the ENOSPC seam"); writes during the run: \(load.writes)")
    }
}
