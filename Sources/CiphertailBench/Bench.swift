import ArgumentParser
import BSON
import Foundation
import Mongo

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ciphertail-bench",
        abstract: "Measure ciphertail backup and restore against the driver's read and write limits.",
        discussion: """
        Seeds bench.profiles with deterministic ~800-byte user profiles (reused when already \
        there), then measures in one run: a raw libmongoc cursor scan (best of two), \
        `ciphertail backup`, `ciphertail restore` into bench_restore.profiles, a single-threaded \
        plain bulk insert into bench_plain.profiles, and the zstd -3 CLI on the same raw BSON. \
        Prints throughput, peak RSS of the ciphertail processes, the compressed size and the \
        ratios against the goals. Unless --no-tail: a bare change stream reading events already \
        in the oplog against `ciphertail tail` of the same events (encrypted, compressed), the \
        lag of `ciphertail tail` behind a writer at --lag-rate, and `restore --at` replay against \
        a plain ordered bulk write of the same operations (databases bench_tail, bench_pitr). \
        Unless --no-erasure (or --no-encryption): `ciphertail erase` of one subject of the encrypted \
        backup, then `ciphertail verify-erasure` of it against `zstd -d` of the same segments. \
        Exits 0 whether or not a goal is met; non-zero when a phase fails.
        """)

    @Option(help: "MongoDB connection string (a replica set; databases bench, bench_restore and bench_plain are used).")
    var uri = "mongodb://127.0.0.1:27017/?replicaSet=rs0"

    @Option(help: "Documents to seed and measure.")
    var docs = 300_000

    @Option(help: ArgumentHelp("The ciphertail binary (default: the one next to this executable).", valueName: "path"))
    var ciphertail: String?

    @Option(help: ArgumentHelp("Scratch folder for the repository and the raw BSON file.", valueName: "dir"))
    var work = "/tmp/ciphertail-bench"

    @Option(name: .customLong("json-out"), help: ArgumentHelp("Also write every figure to this JSON file.", valueName: "file"))
    var jsonOut: String?

    @Option(name: .customLong("kmip-server"), help: ArgumentHelp("A PyKMIP (or other KMIP) server for the key-manager figures.", valueName: "host:port"))
    var kmipServer: String?

    @Option(name: .customLong("kmip-pki"), help: ArgumentHelp("Folder with ca.pem and client.pem for --kmip-server (ops/kmip.sh dir).", valueName: "dir"))
    var kmipPKI: String?

    @Flag(name: .customLong("no-encryption"), help: "Skip the encrypted backup and restore phases and the crypto cost figures.")
    var noEncryption = false

    @Flag(name: .customLong("no-tail"), help: "Skip the tailing phases (change-stream read limit against ciphertail tail, lag, point-in-time replay).")
    var noTail = false

    @Flag(name: .customLong("no-erasure"), help: "Skip the erasure phase (erase one subject of the encrypted backup, then verify-erasure against zstd -d of the same segments).")
    var noErasure = false

    @Option(name: .customLong("tail-events"), help: "Change events for the read-limit, tail and replay phases (4 inserts to 1 update).")
    var tailEvents = 100_000

    @Option(name: .customLong("lag-rate"), help: "Inserts per second while the lag is measured.")
    var lagRate = 5_000.0

    @Option(name: .customLong("lag-seconds"), help: "How long the writer runs while the lag is measured.")
    var lagSeconds = 20.0

    static let sourceNS = Namespace(database: "bench", collection: "profiles")
    static let restoreNS = Namespace(database: "bench_restore", collection: "profiles")
    static let plainNS = Namespace(database: "bench_plain", collection: "profiles")

    func validate() throws {
        if docs < 1 { throw ValidationError("--docs must be at least 1") }
        if tailEvents < 100 { throw ValidationError("--tail-events must be at least 100") }
        if !(lagRate >= 100) || !(lagSeconds >= 1) { throw ValidationError("--lag-rate must be at least 100 and --lag-seconds at least 1") }
    }

    func run() throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        let ciphertail = try resolveCiphertail()
        let repo = "\(work)/repo"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let client = try Client(ConnectionString(uri), appName: "ciphertail-bench")
        let source = client.collection(Bench.sourceNS)
        var phases: [String: PhaseResult] = [:]
        var notes: [String] = []

        print("seeding \(Bench.sourceNS) with \(docs) documents")
        var reused = false
        let seeding = try Timing.measure { reused = try seed(source, count: docs) { print($0) } }
        let seedInfo = Results.Seed(reused: reused, seconds: seeding.seconds)
        print(reused ? "  reused the existing collection" : "  seeded in \(String(format: "%.1f", seedInfo.seconds)) s")

        print("raw scan (twice, the faster counts)")
        let scans = try (0..<2).map { _ in try scan(source) }
        let best = scans.min { $0.timing.seconds < $1.timing.seconds }!
        guard best.documents == Int64(docs) else { throw BenchError("scan saw \(best.documents) documents, expected \(docs)") }
        phases["scan"] = PhaseResult("raw scan (best of 2)", documents: best.documents, bytes: best.bytes, timing: best.timing)

        // Both ciphertail runs come before this process loads the collection into memory:
        // a spawned child's ru_maxrss can never read below our own peak (see runChild).
        print("ciphertail backup")
        try? FileManager.default.removeItem(atPath: repo)
        let backup = try runCiphertail(ciphertail, ["backup", "--uri", uri, "--repo", repo, "--ns", Bench.sourceNS.description, "--json"],
                                       output: "\(work)/backup.json")
        let backupOut = try decode(BackupOutput.self, backup, "backup")
        guard backupOut.documents == best.documents else {
            throw BenchError("backup copied \(backupOut.documents) documents, the scan saw \(best.documents)")
        }
        if backupOut.events > 0 {
            notes.append("backup captured \(backupOut.events) change event(s) although this bench does not write to \(Bench.sourceNS) "
                         + "while it runs; rawBytes and storedBytes include them")
        }
        phases["backup"] = PhaseResult("ciphertail backup", documents: backupOut.documents, bytes: best.bytes, child: backup)

        print("ciphertail restore")
        let restore = try runCiphertail(ciphertail, ["restore", "--repo", repo, "--uri", uri, "--ns-from", Bench.sourceNS.description,
                                                     "--ns-to", Bench.restoreNS.description, "--drop", "--json"],
                                        output: "\(work)/restore.json")
        let restoreOut = try decode(RestoreOutput.self, restore, "restore")
        let restored = try client.collection(Bench.restoreNS).countDocuments()
        guard restoreOut.documents == best.documents, restored == best.documents else {
            throw BenchError("restore reported \(restoreOut.documents) documents and \(Bench.restoreNS) holds \(restored); expected \(best.documents)")
        }
        phases["restore"] = PhaseResult("ciphertail restore", documents: restoreOut.documents, bytes: best.bytes, child: restore)
        // Both insert phases start from the same server state: only bench.profiles present.
        try client.collection(Bench.restoreNS).drop()

        var encryptedValues: Int64 = 0
        var erasure: (results: ErasureResults, subject: ErasedSubject)?
        if !noEncryption {
            encryptedValues = try encryptedPhases(ciphertail, client: client, scanned: best, phases: &phases)
            // It erases a subject's key: after the decrypting restore, which needs every key.
            if !noErasure { erasure = try erasurePhase(ciphertail, scanned: best, phases: &phases) }
        } else if !noErasure {
            notes.append("the erasure phase runs over the encrypted backup: skipped with --no-encryption")
        }

        // Before the bulk insert loads the collection into this process (RSS floors, see above).
        var tailing: TailingResults?
        if !noTail {
            tailing = try tailPhases(ciphertail, client: client)
        }

        print("plain bulk insert (loading the documents into memory first, untimed)")
        let bsonFile = "\(work)/profiles.bson"
        let plain = client.collection(Bench.plainNS)
        try plain.drop()
        let insertTiming: Timing
        do {
            let loaded = try LoadedDocuments(source, expectedBytes: best.bytes)
            try loaded.write(to: bsonFile)
            insertTiming = try bulkInsert(loaded, into: plain)
        }
        let inserted = try plain.countDocuments()
        guard inserted == best.documents else { throw BenchError("\(Bench.plainNS) holds \(inserted) documents after the bulk insert, expected \(best.documents)") }
        phases["bulkInsert"] = PhaseResult("plain bulk insert (1 thr)", documents: inserted, bytes: best.bytes, timing: insertTiming)
        try plain.drop()

        if let zstd = executablePath(named: "zstd") {
            print("zstd -3 on the raw BSON file")
            let run = try runChild([zstd, "-3", "-q", "-c", bsonFile], stdoutPath: "/dev/null")
            guard run.succeeded else { throw BenchError("zstd exited with status \(run.exitStatus)") }
            phases["zstd"] = PhaseResult("zstd -3 CLI (context)", documents: best.documents, bytes: best.bytes, child: run, withRSS: false)
        } else {
            notes.append("zstd is not on PATH: the zstd -3 context figure was skipped (apt-get install zstd)")
        }
        try? FileManager.default.removeItem(atPath: bsonFile)

        var costs: CryptoCosts?
        if !noEncryption {
            print("crypto costs per value (one thread, in this process)")
            costs = try measureCryptoCosts()
        }

        if erasure != nil {
            print("verify-erasure stages (key vault read, key-vault backups read, archive scan; in this process)")
            try erasureBreakdown(&erasure!.results, erasure!.subject)
        }

        var kmipCosts: KMIPCosts?
        if let kmipServer, let kmipPKI {
            print("KMIP key manager: Get round trips and cold starts")
            kmipCosts = try measureKMIPCosts(server: kmipServer, pki: kmipPKI, work: work)
        }

        var results = summarize(phases: phases, notes: notes, seed: seedInfo, scans: scans, backup: backupOut)
        results.kmip = kmipCosts
        if !noEncryption { addEncryption(&results, phases: phases, values: encryptedValues, costs: costs) }
        if let tailing { addTailing(&results, tailing) }
        if let erasure { addErasure(&results, erasure.results) }
        printTable(results, order: ["scan", "backup", "bulkInsert", "restore", "encBackupCold", "encBackupWarm", "encRestore", "zstd",
                                    "verifyErasure", "zstdDecompress"])
        if let e = results.encryption { printEncryption(e) }
        if let e = results.erasure { printErasure(e) }
        if let t = results.tailing { printTailing(t) }
        if let k = results.kmip {
            print(String(format: "\nKMIP (%@): Get round trip %.0f µs; TLS connect %.1f ms; pipeline cold start %.1f ms with the KMIP master key, "
                         + "%.1f ms with a local one (steady state: no KMIP request per field, unwrapping is cached)",
                         k.server, k.getRoundTripMicros, k.connectMillis, k.pipelineColdStartMillis, k.localPipelineColdStartMillis))
        }
        if let jsonOut {
            try writeJSON(results, to: jsonOut)
            print("\nwrote \(jsonOut)")
        }
    }

    /// Encrypted backup twice (the first creates one data key per user, the second finds
    /// them), then a decrypting restore checked against the seeded documents. Returns the
    /// number of values the warm backup encrypted.
    func encryptedPhases(_ ciphertail: String, client: Client, scanned: Scan, phases: inout [String: PhaseResult]) throws -> Int64 {
        let pipeline = try writeEncryptionPipeline(work: work, uri: uri)
        for f in ["enc-repo", "enc-keyvault", "enc-master.key", "enc-erasure.ledger", "enc-keyvault-backups"] { try? FileManager.default.removeItem(atPath: "\(work)/\(f)") }
        _ = try runCiphertail(ciphertail, ["keys", "init", "--pipeline", pipeline], output: "\(work)/keys-init.out")
        var values: Int64 = 0
        for (key, label) in [("encBackupCold", "encrypted backup (cold)"), ("encBackupWarm", "encrypted backup (warm)")] {
            print("ciphertail backup, 5 encrypted fields, key per user: \(key == "encBackupCold" ? "creating the keys" : "keys exist")")
            try? FileManager.default.removeItem(atPath: "\(work)/enc-repo")
            let run = try runCiphertail(ciphertail, ["backup", "--pipeline", pipeline, "--json"], output: "\(work)/\(key).json")
            let out = try decode(EncryptedBackupOutput.self, run, "encrypted backup")
            guard out.documents == scanned.documents, let v = out.encryptedValues, v == 5 * scanned.documents else {
                throw BenchError("encrypted backup copied \(out.documents) documents and encrypted \(out.encryptedValues ?? 0) values; "
                                 + "expected \(scanned.documents) and \(5 * scanned.documents)")
            }
            if key == "encBackupCold", !(scanned.documents...scanned.documents + 1).contains(out.keysCreated ?? 0) {
                throw BenchError("the cold run created \(out.keysCreated ?? 0) keys, expected one per user and the subject-hash key")
            }
            values = v
            phases[key] = PhaseResult(label, documents: out.documents, bytes: scanned.bytes, child: run)
        }
        print("ciphertail restore with decryption")
        let restore = try runCiphertail(ciphertail, ["restore", "--pipeline", pipeline, "--ns-from", Bench.sourceNS.description,
                                                     "--ns-to", Bench.restoreNS.description, "--drop", "--json"],
                                        output: "\(work)/enc-restore.json")
        let target = client.collection(Bench.restoreNS)
        let restored = try target.countDocuments()
        for i in [0, docs / 2, docs - 1] {
            guard try target.find(["_id": .int64(Int64(i))]).next() == Profiles.document(i) else {
                throw BenchError("document \(i) restored with decryption differs from the seeded one")
            }
        }
        guard restored == scanned.documents else { throw BenchError("\(Bench.restoreNS) holds \(restored) documents after the decrypting restore") }
        phases["encRestore"] = PhaseResult("restore with decryption", documents: restored, bytes: scanned.bytes, child: restore)
        try target.drop()
        return values
    }

    func addEncryption(_ r: inout Results, phases: [String: PhaseResult], values: Int64, costs: CryptoCosts?) {
        guard let scan = phases["scan"], let cold = phases["encBackupCold"], let warm = phases["encBackupWarm"],
              let restore = phases["encRestore"], let bulk = phases["bulkInsert"] else { return }
        let e = Results.Encryption(
            encryptedValuesPerBackup: values,
            encryptionsPerCoreSecond: Double(values) / warm.cpuSeconds,
            warmBackupToScan: warm.docsPerSecond / scan.docsPerSecond,
            coldBackupToScan: cold.docsPerSecond / scan.docsPerSecond,
            decryptingRestoreToBulkInsert: restore.docsPerSecond / bulk.docsPerSecond,
            costs: costs)
        r.encryption = e
        r.goals.append(Goal(name: "encrypted backup / scan", value: e.warmBackupToScan, target: ">= 0.35", met: e.warmBackupToScan >= 0.35))
    }

    func resolveCiphertail() throws -> String {
        let path = ciphertail ?? Bundle.main.executableURL.map { $0.deletingLastPathComponent().appendingPathComponent("ciphertail").path } ?? "ciphertail"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError("no ciphertail binary at \(path): build it (swift build -c release --product ciphertail) or pass --ciphertail PATH")
        }
        return path
    }

    func runCiphertail(_ path: String, _ args: [String], output: String) throws -> ChildRun {
        let run = try runChild([path] + args, stdoutPath: output)
        guard run.succeeded else {
            throw BenchError("ciphertail \(args[0]) failed with exit status \(run.exitStatus) (its messages are above; stdout in \(output))")
        }
        return run
    }

    func decode<T: Decodable>(_ type: T.Type, _ run: ChildRun, _ what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: run.stdout)
        } catch {
            throw BenchError("cannot read the JSON output of ciphertail \(what): \(error)")
        }
    }

    func summarize(phases: [String: PhaseResult], notes: [String], seed: Results.Seed, scans: [Scan], backup: BackupOutput) -> Results {
        var notes = notes
        let scan = phases["scan"]!, backupPhase = phases["backup"]!, restore = phases["restore"]!, bulk = phases["bulkInsert"]!
        let backupToScan = backupPhase.docsPerSecond / scan.docsPerSecond
        let restoreToBulk = restore.docsPerSecond / bulk.docsPerSecond
        var goals = [
            Goal(name: "backup / scan", value: backupToScan, target: ">= 0.60", met: backupToScan >= 0.6),
            Goal(name: "restore / bulk insert", value: restoreToBulk, target: ">= 0.80", met: restoreToBulk >= 0.8),
        ]
        if let zstd = phases["zstd"] {
            // zstd at the same level on one core is the other limit on backup: it compresses
            // every byte the scan reads.
            notes.append(String(format: "context: zstd -3 CLI / scan = %.2f; backup / zstd -3 CLI = %.2f",
                                zstd.docsPerSecond / scan.docsPerSecond, backupPhase.docsPerSecond / zstd.docsPerSecond))
        }
        for (label, p) in [("backup", backupPhase), ("restore", restore)] {
            guard let rss = p.peakRSSBytes else { continue }
            goals.append(Goal(name: "\(label) peak RSS MB", value: megabytes(rss), target: "< 300", met: rss < 300_000_000))
            let sampled = p.sampledPeakRSSBytes.map { String(format: "%.1f MB", megabytes($0)) } ?? "n/a"
            if !p.peakRSSIsChilds {
                notes.append("* \(p.name): ru_maxrss (\(String(format: "%.1f", megabytes(rss))) MB) is not above this bench's own peak at spawn "
                             + "(\(String(format: "%.1f", megabytes(p.peakRSSFloorBytes ?? 0))) MB), so it is only an upper bound; sampled VmHWM \(sampled)")
            }
        }
        return Results(
            date: Date(), uri: ConnectionString(uri).redacted, namespace: Bench.sourceNS.description, documents: docs,
            averageDocumentBytes: Double(scan.bytes) / Double(scan.documents), seed: seed, scanRunsSeconds: scans.map(\.timing.seconds),
            phases: phases,
            compression: .init(rawBytes: backup.rawBytes, storedBytes: backup.storedBytes,
                               ratio: Double(backup.rawBytes) / Double(max(backup.storedBytes, 1))),
            backupToScan: backupToScan, restoreToBulkInsert: restoreToBulk, goals: goals, notes: notes)
    }
}

struct BackupOutput: Decodable {
    var documents: Int64
    var events: Int64
    var rawBytes: Int64
    var storedBytes: Int64
}

struct RestoreOutput: Decodable {
    var documents: Int64
}
