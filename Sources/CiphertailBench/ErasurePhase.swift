import Archive
import BSON
import Erasure
import FieldCrypto
import Foundation
import Pipeline

// Erasure verification against its limit, in the same run: `ciphertail erase` of one subject
// of the encrypted backup, then `ciphertail verify-erasure` of that subject over the
// repository (timed) against `zstd -d` of the very same segments' zstd frames to /dev/null.

/// The figures of the erasure phase, in `latest.json` as `erasure`.
struct ErasureResults: Codable {
    struct Verify: Codable {
        var segments: Int
        /// Segment bytes read (as stored) and what they decompress to, from its --json report.
        var storedBytes: Int64
        var decompressedBytes: Int64
        /// Manifests and change log entries, read as text.
        var otherBytes: Int64
        /// Wall time of the whole process (start-up, ledger, key vault and backups included).
        var seconds: Double
        /// Its own `seconds` from the report (from opening the ledger to the end of the scan).
        var ownSeconds: Double
        var cpuSeconds: Double
        var storedMegabytesPerSecond: Double
        var decompressedMegabytesPerSecond: Double
        var storedMegabytesPerSecondOwn: Double
        /// The archive scan alone as the command reports it (after the key checks), and its rate.
        var scanSeconds: Double
        var scanStoredMegabytesPerSecond: Double
        var peakRSSBytes: Int64
        var peakRSSFloorBytes: Int64
        var sampledPeakRSSBytes: Int64?
        var exitStatus: Int32
        var passed: Bool
        var findings: Int
    }

    struct ZstdDecompress: Codable {
        var segments: Int
        /// Every `*.seg` file under the repository, whole, and the block payloads (zstd frames) in them.
        var segmentBytes: Int64
        var frames: Int
        var frameBytes: Int64
        /// Sum of the blocks' raw lengths: what the frames decompress to.
        var decompressedBytes: Int64
        var seconds: Double
        var cpuSeconds: Double
        /// Over the segment bytes, the basis verify-erasure's stored rate uses.
        var storedMegabytesPerSecond: Double
        var decompressedMegabytesPerSecond: Double
    }

    var subject: String
    var keysDestroyed: Int
    var scrubbedKeyVaultBackups: Int
    /// Threads the scanner uses (one per core).
    var verifyThreads: Int
    var verify: Verify
    var zstd: ZstdDecompress?
    /// Stored bytes per second, verify-erasure (process wall time) / zstd -d: the goal is >= 0.5.
    var verifyToZstd: Double?
    var verifyToZstdOwn: Double?
    /// The command's archive scan (its `scanSeconds`) / zstd -d: archive bytes scanned per second.
    var scanToZstd: Double?
    var breakdown: ErasureBreakdown?
    var notes: [String] = []
}

/// Where verify-erasure's time goes, its stages timed one by one in this process (after the
/// child runs, so this process's footprint does not touch their RSS figures).
struct ErasureBreakdown: Codable {
    /// Keys in the file key vault, and one full read of it (`FileKeyVault.open`): the command
    /// reads it whole once, when it opens the engine.
    var vaultKeys: Int
    var vaultFileBytes: Int64
    var vaultLoadSeconds: Double
    /// Reading every managed key-vault backup (`KeyVaultBackups.read`).
    var keyVaultBackupFiles: Int
    var keyVaultBackupBytes: Int64
    var keyVaultBackupReadSeconds: Double
    /// The archive scan alone (`ArchiveScanner.scan`, the same target), with one thread per
    /// core and with one thread.
    var scanThreads: Int
    var scanSeconds: Double
    var scanOneThreadSeconds: Double
    var scanStoredBytes: Int64
    var scanStoredMegabytesPerSecond: Double
    var scanOneThreadStoredMegabytesPerSecond: Double
    /// Stored bytes per second, the scan alone / zstd -d.
    var scanToZstd: Double?
}

/// What the breakdown needs to scan as verify-erasure did (kept out of the JSON: the canary is
/// the synthetic subject's email).
struct ErasedSubject {
    var id: String
    var hash: String
    var keys: [String]
    var canary: String
}

/// What `extractZstdFrames` copied.
struct FrameExtract {
    var segments = 0
    var segmentBytes: Int64 = 0
    var frames = 0
    var frameBytes: Int64 = 0
    var rawBytes: Int64 = 0
}

/// Concatenates the stored payload of every block of every `*.seg` file under `repo` (each
/// one zstd frame, docs/FORMAT.md "Blocks") into `output`: concatenated frames are one valid
/// zstd stream. Walks the layout only (file header, 48-byte block headers, 64-byte footer);
/// checksums are not checked here.
func extractZstdFrames(repo: String, to output: String) throws -> FrameExtract {
    var segments: [String] = []
    if let e = FileManager.default.enumerator(atPath: repo) {
        for case let rel as String in e where rel.hasSuffix(".seg") { segments.append("\(repo)/\(rel)") }
    }
    segments.sort()
    guard let out = fopen(output, "wb") else { throw BenchError("cannot write \(output): \(String(cString: strerror(errno)))") }
    defer { fclose(out) }
    var x = FrameExtract()
    for path in segments {
        guard let data = FileManager.default.contents(atPath: path) else { throw BenchError("cannot read \(path)") }
        try data.withUnsafeBytes { buf in
            func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
            func bad(_ at: Int, _ why: String) -> BenchError { BenchError("\(path) at offset \(at): \(why)") }
            guard buf.count >= SegmentFormat.headerSize + SegmentFormat.footerSize,
                  Array(buf[0..<8]) == SegmentFormat.fileMagic else { throw bad(0, "not a ciphertail segment") }
            guard buf[11] == SegmentFormat.codecZstd else { throw bad(11, "codec \(buf[11]), not zstd") }
            var o = SegmentFormat.headerSize
            while true {
                guard o + 4 <= buf.count else { throw bad(o, "ends without a footer") }
                let magic = Array(buf[o..<o + 4])
                if magic == SegmentFormat.footerMagic {
                    guard o + SegmentFormat.footerSize == buf.count else { throw bad(o, "bytes after the footer") }
                    break
                }
                guard magic == SegmentFormat.blockMagic, o + SegmentFormat.blockHeaderSize <= buf.count else { throw bad(o, "bad block header") }
                let raw = u32(o + 8), stored = u32(o + 12)
                let payload = o + SegmentFormat.blockHeaderSize
                guard payload + stored <= buf.count else { throw bad(o, "block payload runs past the end") }
                guard fwrite(buf.baseAddress! + payload, 1, stored, out) == stored else { throw BenchError("short write to \(output)") }
                x.frames += 1
                x.frameBytes += Int64(stored)
                x.rawBytes += Int64(raw)
                o = payload + stored
            }
        }
        x.segments += 1
        x.segmentBytes += Int64(data.count)
    }
    guard fflush(out) == 0 else { throw BenchError("cannot write \(output): \(String(cString: strerror(errno)))") }
    return x
}

extension Bench {
    /// Erases one subject of the encrypted backup (the repository and pipeline the encrypted
    /// phases left), then times `verify-erasure` of it against `zstd -d` of the same segments.
    func erasurePhase(_ ciphertail: String, scanned: Scan, phases: inout [String: PhaseResult]) throws -> (ErasureResults, ErasedSubject) {
        let pipeline = "\(work)/encrypted.yaml", repo = "\(work)/enc-repo"
        let subjectIndex = docs / 3
        let profile = Profiles.document(subjectIndex)
        guard let subject = profile["userId"]?.stringValue, let canary = profile["email"]?.stringValue else {
            throw BenchError("profile \(subjectIndex) has no userId or email")
        }

        print("ciphertail keys backup, then erase of subject \(subject) (untimed)")
        _ = try runCiphertail(ciphertail, ["keys", "backup", "--pipeline", pipeline, "--json"], output: "\(work)/keys-backup.json")
        let erase = try decode(EraseResult.self, try runCiphertail(ciphertail, ["erase", "--pipeline", pipeline, "--subject", subject,
                                                                                  "--reason", "ciphertail-bench", "--json"],
                                                                   output: "\(work)/erase.json"), "erase")
        guard !erase.keys.isEmpty, !erase.alreadyErased else {
            throw BenchError("erase destroyed \(erase.keys.count) key(s) of \(subject) (already erased: \(erase.alreadyErased)); expected its data key")
        }

        // Untimed, before both timed runs: it also reads every segment once, so both find them in the page cache.
        print("extracting the zstd frames of every segment of \(repo) (untimed)")
        let framesFile = "\(work)/erasure-frames.zst"
        let extract = try extractZstdFrames(repo: repo, to: framesFile)
        defer { try? FileManager.default.removeItem(atPath: framesFile) }

        // The subject's email is the canary: encrypted everywhere, so in clear nowhere.
        print("ciphertail verify-erasure of \(subject) over \(repo) (twice, the faster counts)")
        var runs: [(ChildRun, ErasureReport)] = []
        for _ in 0..<2 {
            let run = try runChild([ciphertail, "verify-erasure", "--pipeline", pipeline, "--subject", subject, "--canary", canary, "--json"],
                                   stdoutPath: "\(work)/verify-erasure.json")
            guard run.exitStatus == 0 || run.exitStatus == 9 else {
                throw BenchError("ciphertail verify-erasure failed with exit status \(run.exitStatus) (its messages are above)")
            }
            runs.append((run, try decode(ErasureReport.self, run, "verify-erasure")))
        }
        let (run, report) = runs.min { $0.0.seconds < $1.0.seconds }!
        let passed = run.exitStatus == 0 && report.findings.isEmpty
        let verify = ErasureResults.Verify(
            segments: report.segments, storedBytes: report.storedBytes, decompressedBytes: report.decompressedBytes,
            otherBytes: report.otherBytes, seconds: run.seconds, ownSeconds: report.seconds, cpuSeconds: run.cpuSeconds,
            storedMegabytesPerSecond: megabytes(report.storedBytes) / run.seconds,
            decompressedMegabytesPerSecond: megabytes(report.decompressedBytes) / run.seconds,
            storedMegabytesPerSecondOwn: megabytes(report.storedBytes) / report.seconds,
            scanSeconds: report.scanSeconds, scanStoredMegabytesPerSecond: megabytes(report.storedBytes) / report.scanSeconds,
            peakRSSBytes: run.maxRSS, peakRSSFloorBytes: run.maxRSSFloor, sampledPeakRSSBytes: run.sampledPeakRSS,
            exitStatus: run.exitStatus, passed: passed, findings: report.findings.count)
        phases["verifyErasure"] = PhaseResult("verify-erasure (best of 2)", documents: scanned.documents, bytes: report.decompressedBytes, child: run)

        var r = ErasureResults(subject: subject, keysDestroyed: erase.keys.count, scrubbedKeyVaultBackups: erase.scrubbedKeyVaultBackups.count,
                               verifyThreads: ProcessInfo.processInfo.activeProcessorCount, verify: verify)
        if !passed {
            r.notes.append("verify-erasure did NOT pass (exit status \(run.exitStatus), \(report.findings.count) finding(s)); "
                           + "the first: " + report.findings.prefix(3).map(\.description)
                               .joined(separator: "; "))
        }
        if extract.segments != report.segments || extract.segmentBytes != report.storedBytes || extract.rawBytes != report.decompressedBytes {
            r.notes.append("the frames extracted (\(extract.segments) segments, \(extract.segmentBytes) bytes, \(extract.rawBytes) decompressed) "
                           + "are not the segments verify-erasure read (\(report.segments), \(report.storedBytes), \(report.decompressedBytes))")
        }

        if let zstd = executablePath(named: "zstd") {
            print("zstd -d of the same segments' frames (\(extract.frames) frames, \(String(format: "%.1f", megabytes(extract.frameBytes))) MB) "
                  + "to /dev/null (twice, the faster counts)")
            let z = try (0..<2).map { _ in
                let z = try runChild([zstd, "-d", "-q", "-c", framesFile], stdoutPath: "/dev/null")
                guard z.succeeded else { throw BenchError("zstd -d exited with status \(z.exitStatus)") }
                return z
            }.min { $0.seconds < $1.seconds }!
            r.zstd = ErasureResults.ZstdDecompress(
                segments: extract.segments, segmentBytes: extract.segmentBytes, frames: extract.frames, frameBytes: extract.frameBytes,
                decompressedBytes: extract.rawBytes, seconds: z.seconds, cpuSeconds: z.cpuSeconds,
                storedMegabytesPerSecond: megabytes(extract.segmentBytes) / z.seconds,
                decompressedMegabytesPerSecond: megabytes(extract.rawBytes) / z.seconds)
            r.verifyToZstd = verify.storedMegabytesPerSecond / r.zstd!.storedMegabytesPerSecond
            r.verifyToZstdOwn = verify.storedMegabytesPerSecondOwn / r.zstd!.storedMegabytesPerSecond
            r.scanToZstd = verify.scanStoredMegabytesPerSecond / r.zstd!.storedMegabytesPerSecond
            phases["zstdDecompress"] = PhaseResult("zstd -d CLI (best of 2)", documents: scanned.documents, bytes: extract.rawBytes, child: z, withRSS: false)
        } else {
            r.notes.append("zstd is not on PATH: the zstd -d limit of the erasure phase was skipped (apt-get install zstd)")
        }
        return (r, ErasedSubject(id: subject, hash: erase.subjectHash, keys: erase.keys, canary: canary))
    }

    /// Times verify-erasure's stages in this process: a full key vault read, the key-vault
    /// backups read, and the archive scan alone (threads: one per core, then one).
    func erasureBreakdown(_ e: inout ErasureResults, _ subject: ErasedSubject) throws {
        let pipeline = try PipelineFile.load(path: "\(work)/encrypted.yaml")
        guard let enc = pipeline.encryption, let vaultPath = enc.keyVault, let repo = pipeline.archive?.repo else {
            throw BenchError("the encrypted pipeline names no key vault or repository")
        }
        var vault: FileKeyVault?
        let vaultLoad = try Timing.measure { vault = try FileKeyVault.open(at: vaultPath) }
        let keys = try vault?.allKeys().count ?? 0
        vault = nil
        let backups = enc.keyVaultBackups.map { KeyVaultBackups.list($0) } ?? []
        let backupRead = try Timing.measure { for b in backups { _ = try KeyVaultBackups.read(b) } }
        func size(_ path: String) -> Int64 { ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0 }

        let ids = Set(subject.keys.compactMap(UUID.init(uuidString:)))
        let target = ErasureTarget(subject: .string(subject.id), subjectHash: subject.hash, erasedKeys: ids, allErasedKeys: ids,
                                   canaries: [subject.canary], rules: enc.protectionRules())
        func scan(threads: Int?) -> (Timing, Int64, Int) {
            let scanner = ArchiveScanner(target: target)
            if let threads { scanner.threads = threads }
            var stored: Int64 = 0, findings = 0
            let t = Timing.measure {
                let r = scanner.scan(repositories: [repo], logs: [])
                stored = r.stored
                findings = r.findings.count
            }
            return (t, stored, findings)
        }
        let threads = ArchiveScanner(target: target).threads
        let (all, stored, findings) = scan(threads: nil)
        let (one, _, _) = scan(threads: 1)
        if findings > 0 { e.notes.append("the in-process archive scan of the breakdown found \(findings) finding(s)") }
        var b = ErasureBreakdown(
            vaultKeys: keys, vaultFileBytes: size(vaultPath), vaultLoadSeconds: vaultLoad.seconds,
            keyVaultBackupFiles: backups.count, keyVaultBackupBytes: backups.reduce(0) { $0 + size($1) },
            keyVaultBackupReadSeconds: backupRead.seconds, scanThreads: threads, scanSeconds: all.seconds,
            scanOneThreadSeconds: one.seconds, scanStoredBytes: stored,
            scanStoredMegabytesPerSecond: megabytes(stored) / all.seconds,
            scanOneThreadStoredMegabytesPerSecond: megabytes(stored) / one.seconds)
        if let z = e.zstd { b.scanToZstd = b.scanStoredMegabytesPerSecond / z.storedMegabytesPerSecond }
        e.breakdown = b
    }

    func addErasure(_ r: inout Results, _ e: ErasureResults) {
        var e = e
        r.goals.append(Goal(name: "verify-erasure findings", value: Double(e.verify.findings), target: "0", met: e.verify.passed))
        if let ratio = e.scanToZstd {
            r.goals.append(Goal(name: "verify-erasure archive scan / zstd -d", value: ratio, target: ">= 0.50", met: ratio >= 0.5))
        }
        if let ratio = e.verifyToZstd {
            r.goals.append(Goal(name: "verify-erasure whole command / zstd -d (context)", value: ratio, target: "-", met: true))
        }
        e.notes.append("verify-erasure: `ciphertail verify-erasure --subject <id> --canary <its email>` after `ciphertail erase` of that "
                       + "subject, over the encrypted backup's repository: every segment read whole, every block SHA-256-checked, "
                       + "decompressed and searched for the id and the canary, the records with a hit parsed; \(e.verifyThreads) thread(s); best of 2. "
                       + "MB/s over the process's wall time (start-up, ledger, key vault and its backups included), 'own' over the "
                       + "report's seconds. Limit: `zstd -d -q -c` (one thread) of the same segments' block payloads, extracted "
                       + "beforehand into one file of concatenated frames, to /dev/null, best of 2; stored MB/s over the segment files' bytes. "
                       + "The breakdown times the command's stages in this process: the key vault and key-vault backup reads grow with "
                       + "the number of subjects (a key each), the scan with the archive")
        r.erasure = e
    }
}

func printErasure(_ e: ErasureResults) {
    func fmt(_ v: Double, _ d: Int) -> String { String(format: "%.\(d)f", v) }
    let v = e.verify
    print("")
    print("erasure: subject \(e.subject) erased (\(e.keysDestroyed) data key(s) destroyed, \(e.scrubbedKeyVaultBackups) key-vault backup(s) "
          + "scrubbed); verify-erasure \(v.passed ? "passed" : "FAILED (\(v.findings) finding(s))"), exit status \(v.exitStatus)")
    print("  verify-erasure: \(v.segments) segments, \(fmt(megabytes(v.storedBytes), 1)) MB stored, \(fmt(megabytes(v.decompressedBytes), 1)) MB "
          + "decompressed, in \(fmt(v.seconds, 2)) s (own \(fmt(v.ownSeconds, 2)) s, cpu \(fmt(v.cpuSeconds, 2)) s, "
          + "peak RSS \(v.sampledPeakRSSBytes.map { fmt(megabytes($0), 1) } ?? "-") MB): \(fmt(v.storedMegabytesPerSecond, 1)) MB/s stored "
          + "(own \(fmt(v.storedMegabytesPerSecondOwn, 1))), \(fmt(v.decompressedMegabytesPerSecond, 1)) MB/s decompressed")
    if let z = e.zstd {
        print("  zstd -d:        \(z.frames) frames, \(fmt(megabytes(z.frameBytes), 1)) MB -> \(fmt(megabytes(z.decompressedBytes), 1)) MB, "
              + "in \(fmt(z.seconds, 2)) s (cpu \(fmt(z.cpuSeconds, 2)) s): \(fmt(z.storedMegabytesPerSecond, 1)) MB/s stored, "
              + "\(fmt(z.decompressedMegabytesPerSecond, 1)) MB/s decompressed")
    }
    if let ratio = e.scanToZstd {
        print("  verify-erasure archive scan / zstd -d (archive bytes scanned per second): \(fmt(ratio, 2)) (goal >= 0.5), "
              + "scan \(fmt(v.scanSeconds, 2)) s, \(fmt(v.scanStoredMegabytesPerSecond, 1)) MB/s")
    }
    if let ratio = e.verifyToZstd {
        print("  verify-erasure whole command / zstd -d: \(fmt(ratio, 2)); over its own seconds \(fmt(e.verifyToZstdOwn ?? 0, 2)) "
              + "(the key checks read the whole key vault and its backups: they grow with the subjects, not the archive)")
    }
    if let b = e.breakdown {
        print("  where the time goes, in this process: a full read of the key vault (\(b.vaultKeys) keys, "
              + "\(fmt(megabytes(b.vaultFileBytes), 1)) MB; the command reads it once, to open the engine) \(fmt(b.vaultLoadSeconds, 2)) s; "
              + "\(b.keyVaultBackupFiles) key-vault backup(s) (\(fmt(megabytes(b.keyVaultBackupBytes), 1)) MB) \(fmt(b.keyVaultBackupReadSeconds, 2)) s; "
              + "the archive scan alone \(fmt(b.scanSeconds, 2)) s with \(b.scanThreads) thread(s) (\(fmt(b.scanStoredMegabytesPerSecond, 1)) MB/s stored"
              + (b.scanToZstd.map { ", \(fmt($0, 2)) of zstd -d" } ?? "") + "), \(fmt(b.scanOneThreadSeconds, 2)) s with one "
              + "(\(fmt(b.scanOneThreadStoredMegabytesPerSecond, 1)) MB/s)")
    }
    e.notes.forEach { print("note: \($0)") }
}
