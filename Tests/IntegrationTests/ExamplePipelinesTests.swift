import Archive
import BSON
import Foundation
import Mongo
import Pipeline
import TestSupport
import XCTest
import Yams

/// The shipped pipelines in pipelines/, run by `ciphertail run` against the test's mongods
/// and PyKMIP: only what points at the world (URIs, paths, key servers, ports) is replaced;
/// schedules, retention, rules and the rest are the files' own.
final class ExamplePipelinesTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The example with its world replaced: source, repository, keys and KMIP, the replication
    /// target, the lease collection and a free metrics port.
    func localized(_ name: String, dir: String, database: String, target: String? = nil) throws -> String {
        var p = try PipelineFile.load(path: ExamplePipelinesTests.root + "/pipelines/\(name).yaml")
        p.source?.uri = TestEnv.uri
        p.source?.namespaces = ["\(database).*"]
        p.archive?.repo = dir + "/repo"
        var lease = p.lease ?? PipelineFile.Lease()
        lease.namespace = "\(leaseDatabase).leases"
        p.lease = lease
        p.metrics?.listen = "127.0.0.1:0"
        p.name = TestEnv.uniqueName(p.name ?? name)
        if p.replication != nil { p.replication?.uri = target }
        if var e = p.encryption {
            e.keyVault = dir + "/keyvault"
            if e.erasureLedger != nil { e.erasureLedger = dir + "/erasure.ledger" }
            if e.keyVaultBackups != nil { e.keyVaultBackups = dir + "/keyvault-backups" }
            if e.masterKey?.local != nil { e.masterKey?.local?.keyFile = dir + "/master.key" }
            if e.masterKey?.kmip != nil {
                e.masterKey?.kmip?.serverName = KMIPTestServers.server(0)
                e.masterKey?.kmip?.port = nil
                e.masterKey?.kmip?.serverCAFile = KMIPTestServers.file("ca.pem")
                e.masterKey?.kmip?.clientCertificateFile = KMIPTestServers.file("client.pem")
            }
            e.rules = e.rules?.map { r in
                var r = r
                r.namespace = database + "." + (r.namespace.split(separator: ".", maxSplits: 1).last.map(String.init) ?? "c")
                return r
            }
            p.encryption = e
        }
        let path = dir + "/\(name).yaml"
        try YAMLEncoder().encode(p).write(toFile: path, atomically: true, encoding: .utf8)
        if p.encryption != nil {
            let k = TestEnv.ciphertail(["keys", "init", "--pipeline", path])
            XCTAssertEqual(k.status, 0, k.stderr)
        }
        return path
    }

    /// Continuous PITR capture: the lease, a base snapshot, the change log following writes,
    /// and a point-in-time restore that equals the source with the protected fields encrypted
    /// in the repository.
    func testContinuousBackupExample() throws {
        let src = TestEnv.uniqueName("ex_pitr"), dst = src + "_r"
        defer { dropDatabases(src, dst) }
        let dir = TestEnv.temporaryDirectory("expitr")
        let pipeline = try localized("continuous-backup", dir: dir, database: src)
        let client = try TestEnv.client()
        let users = Namespace(database: src, collection: "users")
        try insert(client, users, (0..<50).map { i in
            ["_id": .int32(Int32(i)), "userId": .string("u\(i)"), "ssn": .string("SSN-CANARY-\(i)"), "email": .string("e\(i)@example.com"), "name": "N"]
        })
        let run = try RunProcess(pipeline, log: dir + "/run.log")
        defer { _ = run.stop() }
        XCTAssertTrue(run.waitFor("base snapshot taken"), run.output)
        try insert(client, users, (50..<80).map { i in
            ["_id": .int32(Int32(i)), "userId": .string("u\(i)"), "ssn": .string("SSN-CANARY-\(i)"), "email": .string("e\(i)@example.com"), "name": "N"]
        })
        let target = try operationTime(client)
        try waitCovered(dir + "/repo", target)
        // Scraped as Prometheus does: the names docs/OBSERVABILITY.md lists, with values.
        usleep(1_200_000)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(try run.metric("ciphertail_capture_events_total")), 30)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(try run.metric(#"ciphertail_segments_written_total{kind="change"}"#)), 1)
        XCTAssertEqual(try run.metric(#"ciphertail_base_snapshots_total{result="ok"}"#), 1)
        XCTAssertEqual(try run.metric("ciphertail_lease_held"), 1)
        XCTAssertGreaterThan(try XCTUnwrap(try run.metric("ciphertail_bytes_out_total")), 0)
        XCTAssertGreaterThan(try XCTUnwrap(try run.metric("ciphertail_compression_ratio")), 1)
        XCTAssertLessThan(try XCTUnwrap(try run.metric("ciphertail_capture_lag_seconds")), 60)
        XCTAssertNotNil(try run.metric("ciphertail_resume_token_age_seconds"))
        let health = try XCTUnwrap(try run.healthz())
        XCTAssertEqual(health.status, 200, health.body)
        XCTAssertTrue(health.body.contains("leader"), health.body)
        XCTAssertEqual(run.stop(), 0, run.output)
        let r = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--uri", TestEnv.uri, "--at", target.description,
                                    "--ns-from", "\(src).*", "--ns-to", "\(dst).*", "--drop"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: dst, collection: "users")).map(\.bytes),
                       try TestEnv.documents(client, users).map(\.bytes))
        XCTAssertEqual(TestEnv.shell("grep -rl SSN-CANARY \(dir)/repo").stdout, "", "plaintext of a protected field in the repository")
    }

    /// Nightly backups with per-subject KMIP keys and no change log: `--snapshot-now` takes
    /// the first one at once; the values are encrypted under keys PyKMIP holds.
    func testNightlyKMIPExample() throws {
        let src = TestEnv.uniqueName("ex_nightly")
        defer { dropDatabases(src) }
        let dir = TestEnv.temporaryDirectory("exnightly")
        let pipeline = try localized("nightly-kmip", dir: dir, database: src)
        let text = try String(contentsOfFile: pipeline, encoding: .utf8)
        XCTAssertTrue(text.contains("perSubjectKeys: true") && text.contains("0 2 * * *") && text.contains("Europe/Berlin"), text)
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<20).map { i in
            ["_id": .int32(Int32(i)), "userId": .string("u\(i)"), "email": .string("CANARY-MAIL-\(i)"), "ssn": .string("S\(i)"), "name": "N", "address": "A"]
        })
        let run = try RunProcess(pipeline, extra: ["--snapshot-now"], log: dir + "/run.log")
        defer { _ = run.stop() }
        XCTAssertTrue(run.waitFor("scheduled backup taken"), run.output)
        XCTAssertEqual(run.stop(), 0, run.output)
        let repo = try Repository(path: dir + "/repo")
        XCTAssertEqual(repo.backupIDs().count, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/repo/changes"), "tail.enabled: false writes no change log")
        XCTAssertEqual(TestEnv.shell("grep -rl CANARY-MAIL \(dir)/repo").stdout, "")
        let find = TestEnv.ciphertail(["find", "--pipeline", pipeline, "--repo", dir + "/repo", "--ns", "\(src).users", "--filter", "{\"userId\": \"u7\", \"email\": \"CANARY-MAIL-7\"}", "--json"])
        XCTAssertEqual(find.status, 0, find.stderr)
        XCTAssertTrue(find.stdout.contains("u7"), find.stdout)
    }

    /// Encrypted replication and the migration pipeline: `run` seeds the second replica set
    /// from the base snapshot and keeps it in step; with rules, the target holds only
    /// ciphertext of the protected fields; the replication lag is exported.
    func testReplicationAndMigrationExamples() throws {
        guard let target = TargetEnv.uri else { throw XCTSkip("CIPHERTAIL_TEST_TARGET_URI is not set (ops/test.sh starts the target replica set)") }
        for example in ["replication", "migration-downgrade"] {
            let src = TestEnv.uniqueName("ex_" + example.prefix(4))
            defer { dropDatabases(src) }
            let dir = TestEnv.temporaryDirectory("ex" + example.prefix(4))
            let pipeline = try localized(example, dir: dir, database: src, target: target)
            let encrypted = example == "replication"
            let client = try TestEnv.client()
            let users = Namespace(database: src, collection: "users")
            func user(_ i: Int) -> Document {
                ["_id": .int32(Int32(i)), "userId": .string("u\(i)"), "email": .string("REPL-CANARY-\(i)"), "ssn": .string("S\(i)"), "name": "N", "plain": .int32(Int32(i))]
            }
            try insert(client, users, (0..<40).map(user))
            let run = try RunProcess(pipeline, log: dir + "/run.log")
            defer { _ = run.stop() }
            XCTAssertTrue(run.waitFor("base snapshot taken"), run.output)
            try insert(client, users, (40..<60).map(user))
            try client.runCommand(["update": "users", "updates": [["q": ["_id": 3], "u": ["$set": ["plain": -3]]]]], database: src)
            let targetClient = try Client(ConnectionString(target))
            defer { _ = try? targetClient.runCommand(["dropDatabase": 1], database: src) }
            let deadline = Date().addingTimeInterval(60)
            var copied: [Document] = []
            while Date() < deadline {
                copied = (try? TestEnv.documents(targetClient, users)) ?? []
                if copied.count == 60, copied.first(where: { $0["_id"] == .int32(3) })?["plain"] == .int32(-3) { break }
                usleep(200_000)
            }
            XCTAssertEqual(copied.count, 60, "\(example): the target did not catch up\n\(run.output)")
            XCTAssertEqual(copied.first(where: { $0["_id"] == .int32(3) })?["plain"], .int32(-3))
            for doc in copied {
                if encrypted {
                    guard case .binary(let subtype, _)? = doc["email"] else { XCTFail("\(example): email is not ciphertext in the target"); break }
                    XCTAssertEqual(subtype, 6)
                    XCTAssertFalse(doc.relaxedJSON.contains("REPL-CANARY"), "plaintext in the target")
                } else {
                    XCTAssertEqual(doc["email"]?.stringValue?.hasPrefix("REPL-CANARY"), true)
                }
            }
            usleep(1_200_000)
            XCTAssertNotNil(try run.metric("ciphertail_replication_lag_seconds"), run.output)
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(try run.metric("ciphertail_replication_events_total")), 21)
            XCTAssertEqual(run.stop(), 0, run.output)
        }
    }
}
