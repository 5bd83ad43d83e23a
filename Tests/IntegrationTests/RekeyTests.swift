import Archive
import Capture
import BSON
import Digest
import FieldCrypto
import Foundation
import Mongo
import Pipeline
import TestSupport
import XCTest

/// `ciphertail rekey` end to end, through the CLI, against the real mongod and libmongocrypt:
/// an encrypted repository (with change events and an erased subject) rewritten under a new
/// key vault and master key. The result verifies, restores with the target keys to exactly
/// what the source restores to with the source keys, opens nothing with the source keys,
/// holds no plaintext, and the source repository does not change by a byte.
final class RekeyTests: XCTestCase {
    var dir: String!
    var src: String!
    var srcRepo: String { dir + "/src-repo" }
    var dstRepo: String { dir + "/dst-repo" }
    var sourcePipeline: String!
    var targetPipeline: String!

    static let fields = ["ssn": "deterministic", "email": "deterministic", "name": "random", "address": "random", "orders.card": "random"]

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("rekey")
        src = TestEnv.uniqueName("ctrekey")
        sourcePipeline = try pipeline("source", repo: srcRepo, vault: dir + "/src-vault", master: dir + "/src.key")
        targetPipeline = try pipeline("target", repo: dstRepo, vault: dir + "/dst-vault", master: dir + "/dst.key")
        for p in [sourcePipeline!, targetPipeline!] {
            let r = TestEnv.ciphertail(["keys", "init", "--pipeline", p])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
    }

    override func tearDown() {
        dropDatabases(src, src + "_a", src + "_b", src + "_c")
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A pipeline over `src.*` with one per-subject rule on users; `masterKey` replaces the
    /// local master key section (for KMIP), `fields` the protected paths.
    func pipeline(_ name: String, repo: String, vault: String, master: String, masterKey: String? = nil,
                  fields: [(String, String)] = RekeyTests.fields.sorted { $0.key < $1.key }) throws -> String {
        let path = "\(dir!)/\(name).yaml"
        let yaml = """
        source: {uri: "\(TestEnv.uri)", namespaces: [\(src!).*]}
        archive: {repo: \(repo)}
        encryption:
          keyVault: \(vault)
          masterKey: \(masterKey ?? "{provider: local, local: {keyFile: \(master)}}")
          rules:
            - namespace: \(src!).users
              subject: userId
              fields:
        \(fields.map { "        - {path: \($0.0), algorithm: \($0.1)}" }.joined(separator: "\n"))
        """
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func canary(_ kind: String, _ i: Int) -> String { "CANARY\(kind)\(String(format: "%05d", i))Z" }

    func seed(_ n: Int) throws {
        let client = try TestEnv.client()
        try insert(client, Namespace(database: src, collection: "users"), (0..<n).map { i in
            Document(["_id": .int32(Int32(i)), "userId": .string("u\(i % 20)"), "name": .string(Self.canary("NAME", i)),
                      "email": .string(Self.canary("MAIL", i)), "ssn": .string(Self.canary("SSN", i % 40)),
                      "address": ["street": .string(Self.canary("STREET", i)), "zip": "12345"],
                      "orders": [["n": 1, "card": .string(Self.canary("CARD", i))]], "visits": .int32(Int32(i))])
        })
        try insert(client, Namespace(database: src, collection: "plain"), [Document(["_id": 1, "note": "not protected"])])
    }

    /// A backup through the CLI while another thread updates protected fields and inserts:
    /// the backup then holds change events of the protected namespace.
    func backupWithWrites() throws -> Manifest {
        let stop = StopFlag()
        let db = src!
        let writer = Thread {
            guard let c = try? TestEnv.client() else { return }
            var i = 1000
            while !stop.isSet {
                i += 1
                _ = try? c.runCommand(["update": "users", "updates": [[
                    "q": ["_id": .int32(Int32(i % 300))],
                    "u": ["$set": ["ssn": .string(Self.canary("SSN", i)), "address.street": .string(Self.canary("STREET", i)),
                                   "orders.0.card": .string(Self.canary("CARD", i)), "visits": .int32(Int32(i))]]]]], database: db)
                _ = try? c.runCommand(["insert": "users", "documents": [["_id": .int32(Int32(i)), "userId": .string("u\(i % 20)"),
                                                                        "email": .string(Self.canary("MAIL", i))]]], database: db)
            }
        }
        writer.start()
        let run = TestEnv.ciphertail(["backup", "--pipeline", sourcePipeline, "--json"])
        stop.set()
        while !writer.isFinished { usleep(10_000) }
        XCTAssertEqual(run.status, 0, run.stderr)
        return try Repository(path: srcRepo).latest()
    }

    /// Every file of a folder with its SHA-256.
    func digest(_ root: String) throws -> [String: String] {
        var out: [String: String] = [:]
        let e = FileManager.default.enumerator(atPath: root)
        while let rel = e?.nextObject() as? String {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + rel, isDirectory: &isDir), !isDir.boolValue else { continue }
            out[rel] = SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: root + "/" + rel)))).hexString
        }
        return out
    }

    /// No canary in any byte of any file, nor in any decompressed block.
    func assertNoCanaries(inRepo repo: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let e = FileManager.default.enumerator(atPath: repo)
        var blocks = 0
        while let rel = e?.nextObject() as? String {
            let path = repo + "/" + rel
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { continue }
            XCTAssertNil(try Data(contentsOf: URL(fileURLWithPath: path)).range(of: Data("CANARY".utf8)), "canary in raw \(rel)", file: file, line: line)
            guard rel.hasSuffix(".seg") else { continue }
            let reader = try SegmentReader(path: path)
            while let block = try reader.nextBlock() {
                blocks += 1
                XCTAssertNil(Data(block.data).range(of: Data("CANARY".utf8)), "canary in a block of \(rel)", file: file, line: line)
            }
        }
        XCTAssertGreaterThan(blocks, 0, file: file, line: line)
    }

    /// Crypto-shredding: the subject's data key is taken out of the source vault.
    func eraseSubject(_ subject: String, vault: String, master: String) throws {
        let engine = try KeySettings(keyVault: .file(vault), masterKeyFile: master).openEngine()
        let name = try DocumentProtector(rules: [], engine: engine).subjectKeyName(.string(subject))
        let kept = try engine.keyVault.allKeys().filter { !(try DataKeyInfo($0).altNames.contains(name)) }
        XCTAssertEqual(kept.count, try engine.keyVault.allKeys().count - 1, "the subject had a key")
        let next = vault + ".next"
        try FileKeyVault.create(at: next).insert(contentsOf: kept)
        XCTAssertEqual(rename(next, vault), 0)
    }

    func restore(_ pipeline: String, repo: String, backup: String, into target: String) -> CLIResult {
        let r = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--repo", repo, "--backup", backup, "--drop",
                                    "--ns-from", "\(src!).*", "--ns-to", "\(target).*", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("CANARY") || r.stderr.contains("CANARY"))
        return r
    }

    func json(_ r: CLIResult) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout + r.stderr)
    }

    func testRekeyedRepositoryRestoresTheSameUnderTheTargetKeysAndNothingUnderTheSourceKeys() throws {
        try seed(300)
        let first = try backupWithWrites()
        XCTAssertGreaterThan(first.events.count, 0, "the test needs change events in the backup")
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", sourcePipeline]).status, 0)
        let ids = try Repository(path: srcRepo).backupIDs()
        XCTAssertEqual(ids.count, 2)
        // Subject u3 is erased before the re-key: it must stay erased after it.
        try eraseSubject("u3", vault: dir + "/src-vault", master: dir + "/src.key")
        let before = try digest(srcRepo)

        let run = TestEnv.ciphertail(["rekey", "--repo", srcRepo, "--to-repo", dstRepo, "--pipeline", sourcePipeline,
                                      "--to-pipeline", targetPipeline, "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertFalse(run.stdout.contains("CANARY") || run.stderr.contains("CANARY"), "no plaintext in the output")
        let summary = try json(run)
        XCTAssertEqual(summary["backups"] as? [String], ids)
        XCTAssertEqual(summary["skipped"] as? [String], [])
        let reencrypted = try XCTUnwrap(summary["valuesReencrypted"] as? [String: Int])
        XCTAssertGreaterThan(reencrypted["\(src!).users"] ?? 0, 2 * 5 * 250, "both backups' documents and the events")
        let undecryptable = try XCTUnwrap(summary["undecryptable"] as? [String: Int])
        XCTAssertGreaterThanOrEqual(undecryptable["\(src!).users"] ?? 0, 2 * 5 * 15, "u3's 15 documents, 5 values each, in both backups")
        XCTAssertEqual((summary["verified"] as? [[String: Any]])?.compactMap { $0["ok"] as? Bool }, [true, true])
        XCTAssertEqual(try digest(srcRepo), before, "the source repository did not change by a byte")

        let verify = TestEnv.ciphertail(["verify", "--repo", dstRepo])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
        try assertNoCanaries(inRepo: dstRepo)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dstRepo + "/dst-vault"))

        // Same ids, time ranges, resume tokens and event logs; new segment contents.
        let s = try Repository(path: srcRepo), d = try Repository(path: dstRepo)
        XCTAssertEqual(d.backupIDs(), ids)
        for id in ids {
            let a = try s.manifest(id), b = try d.manifest(id)
            XCTAssertEqual(b.createdAt, a.createdAt)
            XCTAssertEqual(b.clusterTime, a.clusterTime)
            XCTAssertEqual(b.resumeTokens, a.resumeTokens)
            XCTAssertEqual(b.events.count, a.events.count)
            XCTAssertEqual(b.namespaces.map(\.namespace), a.namespaces.map(\.namespace))
            XCTAssertEqual(b.namespaces.map(\.documents), a.namespaces.map(\.documents))
            XCTAssertEqual(b.allSegments.map(\.path), a.allSegments.map(\.path))
            XCTAssertEqual(b.allSegments.map(\.records), a.allSegments.map(\.records))
            XCTAssertEqual(b.protectedFields, a.protectedFields)
            let users = try XCTUnwrap(b.namespaces.first { $0.namespace == "\(src!).users" })
            XCTAssertNotEqual(users.segments.map(\.sha256), a.namespaces.first { $0.namespace == "\(src!).users" }!.segments.map(\.sha256))
        }

        // Restoring the re-keyed repository with the target keys gives what the source gives
        // with the source keys, document by document (u3's values are the old ciphertext in both).
        let client = try TestEnv.client()
        for id in ids {
            let a = restore(sourcePipeline, repo: srcRepo, backup: id, into: src + "_a")
            let b = restore(targetPipeline, repo: dstRepo, backup: id, into: src + "_b")
            XCTAssertEqual(try json(a)["documents"] as? Int, try json(b)["documents"] as? Int)
            for coll in ["users", "plain"] {
                try assertSameDocuments(client, Namespace(database: src + "_a", collection: coll), Namespace(database: src + "_b", collection: coll))
            }
            // Documents count under their target namespace, events under their source one.
            let left = try json(a)["undecryptable"] as? [String: Int] ?? [:]
            let right = try json(b)["undecryptable"] as? [String: Int] ?? [:]
            XCTAssertEqual(left["\(src!)_a.users"], right["\(src!)_b.users"], "the same documents' values stay encrypted: the erased subject's")
            XCTAssertEqual(left["\(src!).users"], right["\(src!).users"], "and the same events' values")
            XCTAssertEqual(left.count, right.count)
            XCTAssertGreaterThanOrEqual(right["\(src!)_b.users"] ?? 0, 15 * 5)
        }
        let restored = try TestEnv.documents(client, Namespace(database: src + "_b", collection: "users"))
        XCTAssertGreaterThanOrEqual(restored.count, 300)
        for doc in restored {
            let erased = doc["userId"] == "u3"
            XCTAssertEqual(doc.bytes.containsSubtype6, erased, "only the erased subject's values stay ciphertext: \(doc["_id"]!)")
            if !erased, let i = doc["_id"]?.int64Value, i < 300 { XCTAssertEqual(doc["name"], .string(Self.canary("NAME", Int(i)))) }
        }

        // The source keys open nothing of the re-keyed repository: every protected value stays
        // ciphertext and is counted, none comes back in clear.
        let c = restore(sourcePipeline, repo: dstRepo, backup: ids[0], into: src + "_c")
        let counted = try XCTUnwrap(try json(c)["undecryptable"] as? [String: Int])
        let sealed = try TestEnv.documents(client, Namespace(database: src + "_c", collection: "users"))
        var values = 0
        for doc in sealed {
            XCTAssertFalse(String(decoding: doc.bytes, as: UTF8.self).contains("CANARY"), "plaintext with the source keys")
            for f in ["ssn", "email", "name", "address"] {
                guard let v = doc[f] else { continue }
                guard case .binary(6, _) = v else { return XCTFail("\(f) of \(doc["_id"]!) is not ciphertext") }
                values += 1
            }
        }
        XCTAssertGreaterThanOrEqual(counted["\(src!)_c.users"] ?? 0, 300 * 5, "every loaded document's values counted")
        XCTAssertGreaterThanOrEqual(values, 300 * 4)
    }

    /// A repository with a change log (an encrypted tail) re-keyed: the log is rewritten under
    /// the target keys with its chain, time ranges and resume tokens, it verifies, and a
    /// point-in-time restore from it with the target keys equals the source at that moment.
    func testRekeyedChangeLogKeepsPointInTimeRestore() throws {
        try seed(100)
        let tail = try startTailProcess(["--pipeline", sourcePipeline])
        defer { if tail.isRunning { kill(tail.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while ((try? Repository(path: srcRepo).backupIDs().isEmpty) ?? true) && Date() < deadline { usleep(50_000) }
        let client = try TestEnv.client()
        for i in 0..<50 {
            try client.runCommand(["update": "users", "updates": [[
                "q": ["_id": .int32(Int32(i))],
                "u": ["$set": ["ssn": .string(Self.canary("SSN", 500 + i)), "address.street": .string(Self.canary("STREET", 500 + i))]]]]], database: src)
        }
        try client.runCommand(["insert": "users", "documents": [["_id": 9999, "userId": "u1", "name": .string(Self.canary("NAME", 9999))]]], database: src)
        let target = try operationTime(client)
        try waitCovered(srcRepo, target)
        kill(tail.processIdentifier, SIGTERM)
        tail.waitUntilExit()
        XCTAssertEqual(tail.terminationStatus, 0)
        let srcLog = ChangeLog(repository: try Repository(path: srcRepo))
        let sourceEntries = srcLog.load().entries.map(\.entry)
        XCTAssertGreaterThan(sourceEntries.count, 0)
        let before = try digest(srcRepo)

        let run = TestEnv.ciphertail(["rekey", "--repo", srcRepo, "--to-repo", dstRepo, "--pipeline", sourcePipeline,
                                      "--to-pipeline", targetPipeline, "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try json(run)["changeEntries"] as? Int, sourceEntries.count)
        XCTAssertEqual(try digest(srcRepo), before, "the source repository did not change by a byte")
        let verify = TestEnv.ciphertail(["verify", "--repo", dstRepo])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
        XCTAssertTrue(verify.stdout.contains("change log: ok"), verify.stdout)
        try assertNoCanaries(inRepo: dstRepo)
        let dstEntries = ChangeLog(repository: try Repository(path: dstRepo)).load().entries.map(\.entry)
        XCTAssertEqual(dstEntries.map(\.from), sourceEntries.map(\.from))
        XCTAssertEqual(dstEntries.map(\.to), sourceEntries.map(\.to))
        XCTAssertEqual(dstEntries.map(\.resumeToken), sourceEntries.map(\.resumeToken))
        XCTAssertNotEqual(dstEntries.compactMap(\.segment?.sha256), sourceEntries.compactMap(\.segment?.sha256))
        XCTAssertEqual(PointInTime.windows(try Repository(path: dstRepo)), PointInTime.windows(try Repository(path: srcRepo)))

        // The same moment from both repositories, each under its own keys.
        for (pipeline, repo, into) in [(sourcePipeline!, srcRepo, src + "_a"), (targetPipeline!, dstRepo, src + "_b")] {
            let r = TestEnv.ciphertail(["restore", "--pipeline", pipeline, "--repo", repo, "--at", target.description, "--drop",
                                        "--ns-from", "\(src!).*", "--ns-to", "\(into).*", "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual((try json(r)["undecryptable"] as? [String: Int]) ?? [:], [:])
        }
        try assertSameDocuments(client, Namespace(database: src + "_a", collection: "users"), Namespace(database: src + "_b", collection: "users"))
        try assertSameDocuments(client, Namespace(database: src, collection: "users"), Namespace(database: src + "_b", collection: "users"))
        // Under the source keys the re-keyed log opens nothing.
        let sealed = TestEnv.ciphertail(["restore", "--pipeline", sourcePipeline, "--repo", dstRepo, "--at", target.description, "--drop",
                                         "--ns-from", "\(src!).*", "--ns-to", "\(src!)_c.*", "--json"])
        XCTAssertEqual(sealed.status, 0, sealed.stderr)
        XCTAssertGreaterThan((try json(sealed)["undecryptable"] as? [String: Int])?["\(src!)_c.users"] ?? 0, 100)
    }

    func testRefusalsAndRerun() throws {
        try seed(30)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", sourcePipeline]).status, 0)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", sourcePipeline]).status, 0)
        let ids = try Repository(path: srcRepo).backupIDs()
        let before = try digest(srcRepo)
        func rekey(_ to: String, pipeline: String, _ extra: [String] = []) -> CLIResult {
            TestEnv.ciphertail(["rekey", "--repo", srcRepo, "--to-repo", to, "--pipeline", sourcePipeline, "--to-pipeline", pipeline, "--json"] + extra)
        }

        // The source's own key vault, spelled another way: the source keys could open the result.
        let same = try pipeline("same", repo: dstRepo, vault: dir + "/./src-vault", master: dir + "/dst.key")
        var r = rekey(dstRepo, pipeline: same)
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("is the source key vault"), r.stderr)
        // A copy of it, under another name.
        XCTAssertEqual(TestEnv.shell("cp -p '\(dir!)/src-vault' '\(dir!)/copy-vault'").status, 0)
        r = rekey(dstRepo, pipeline: try pipeline("copy", repo: dstRepo, vault: dir + "/copy-vault", master: dir + "/src.key"))
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("copy of the source vault"), r.stderr)
        // Target rules that would leave a protected field in clear.
        let fewer = try pipeline("fewer", repo: dstRepo, vault: dir + "/dst-vault", master: dir + "/dst.key",
                                 fields: [("ssn", "deterministic"), ("name", "random")])
        r = rekey(dstRepo, pipeline: fewer)
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("which the target rules do not encrypt"), r.stderr)
        // The destination inside the source.
        r = rekey(srcRepo + "/backups/inside", pipeline: targetPipeline)
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dstRepo), "nothing written by a refused run")
        XCTAssertEqual(try digest(srcRepo), before)

        // A run, then a rerun: everything already there is skipped.
        r = rekey(dstRepo, pipeline: targetPipeline)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try json(r)["backups"] as? [String], ids)
        r = rekey(dstRepo, pipeline: targetPipeline)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try json(r)["backups"] as? [String], [])
        XCTAssertEqual(try json(r)["skipped"] as? [String], ids)

        // A run cut short: the second backup without its manifest, a dead writer, a temporary
        // file. The rerun removes it and writes it again.
        let dst = try Repository(path: dstRepo)
        let manifest = try Data(contentsOf: URL(fileURLWithPath: dst.manifestPath(ids[1])))
        XCTAssertEqual(unlink(dst.manifestPath(ids[1])), 0)
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        try Data("\(dead.processIdentifier)\n".utf8).write(to: URL(fileURLWithPath: dst.backupPath(ids[1]) + "/writer.pid"))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: dst.backupPath(ids[1]) + "/data/0000-000001.seg.1.2.tmp"))
        XCTAssertEqual(dst.backupIDs(), [ids[0]])
        r = rekey(dstRepo, pipeline: targetPipeline)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try json(r)["backups"] as? [String], [ids[1]])
        XCTAssertEqual(try json(r)["skipped"] as? [String], [ids[0]])
        XCTAssertEqual(dst.backupIDs(), ids)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst.backupPath(ids[1]) + "/data/0000-000001.seg.1.2.tmp"))
        XCTAssertEqual(try dst.manifest(ids[1]).clusterTime, try Repository(path: srcRepo).manifest(ids[1]).clusterTime)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: dst.manifestPath(ids[1]))), manifest, "new random ciphertext, new hashes")
        XCTAssertEqual(TestEnv.ciphertail(["verify", "--repo", dstRepo]).status, 0)

        // A destination that holds another repository's backups is not taken.
        let other = dir + "/other-repo"
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--uri", TestEnv.uri, "--repo", other, "--ns", "\(src!).plain"]).status, 0)
        r = rekey(other, pipeline: targetPipeline)
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("which the source does not"), r.stderr)
        XCTAssertEqual(try digest(srcRepo), before, "the source repository did not change by a byte")
    }

    /// The target master key in a KMIP key manager (the PyKMIP test servers).
    func testRekeyUnderAKMIPTargetMasterKey() throws {
        try seed(50)
        XCTAssertEqual(TestEnv.ciphertail(["backup", "--pipeline", sourcePipeline]).status, 0)
        let id = try XCTUnwrap(try Repository(path: srcRepo).backupIDs().first)
        let kmip = """
        {provider: kmip, kmip: {serverName: "\(KMIPTestServers.server(0))", serverCAFile: \(KMIPTestServers.file("ca.pem")), \
        clientCertificateFile: \(KMIPTestServers.file("client.pem")), connectTimeoutMS: 2000}}
        """
        let target = try pipeline("kmip-target", repo: dstRepo, vault: dir + "/kmip-vault", master: "", masterKey: kmip)
        let initRun = TestEnv.ciphertail(["keys", "init", "--pipeline", target])
        XCTAssertEqual(initRun.status, 0, initRun.stderr)
        let run = TestEnv.ciphertail(["rekey", "--repo", srcRepo, "--to-repo", dstRepo, "--pipeline", sourcePipeline, "--to-pipeline", target])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("re-keyed 1 backups"), run.stdout)
        XCTAssertTrue(run.stdout.contains("verify \(id): ok"), run.stdout)
        // Every key of the target vault is wrapped by the KMIP master key.
        let providers = Set(try FileKeyVault.open(at: dir + "/kmip-vault").allKeys().compactMap { $0["masterKey"]?.documentValue?["provider"]?.stringValue })
        XCTAssertEqual(providers, ["kmip"])
        try assertNoCanaries(inRepo: dstRepo)
        _ = restore(sourcePipeline, repo: srcRepo, backup: id, into: src + "_a")
        _ = restore(target, repo: dstRepo, backup: id, into: src + "_b")
        let client = try TestEnv.client()
        try assertSameDocuments(client, Namespace(database: src + "_a", collection: "users"), Namespace(database: src + "_b", collection: "users"))
        XCTAssertEqual(try TestEnv.documents(client, Namespace(database: src + "_b", collection: "users")).first?["ssn"], .string(Self.canary("SSN", 0)))
    }
}
