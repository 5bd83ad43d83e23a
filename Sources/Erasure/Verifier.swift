import Archive
import BSON
import Digest
import Dispatch
import FieldCrypto
import Foundation
import KMIPClient
import Mongo
#if canImport(Glibc)
import Glibc
#endif

/// One thing `verify-erasure` found: where it is, never the value itself.
public struct ErasureFinding: Codable, Equatable, Sendable, CustomStringConvertible {
    public enum Check: String, Codable, Sendable {
        /// (a) a key of the subject survives (key vault, key-vault backup, KMIP server, ledger).
        case keys
        /// (b) a value of the subject is encrypted under a key that still exists.
        case ciphertext
        /// (c) plaintext of the subject (its id outside its subject key field, a canary, a
        /// protected field in clear).
        case plaintext
        /// A segment or file that could not be read: unverified, which is a failure.
        case unverifiable
    }

    public var check: Check
    /// The backup id, "change log", a key-vault backup, a log file...
    public var scope: String
    /// The file (a segment, relative to its repository, or a path).
    public var location: String
    public var namespace: String?
    public var field: String?
    public var detail: String

    public var description: String {
        var s = "[\(check.rawValue)] \(scope): \(location)"
        if let namespace { s += " \(namespace)" }
        if let field { s += " field \(field)" }
        return s + ": \(detail)"
    }
}

/// One row of the report: one scope (a backup, the change log, the key vault...) under one check.
public struct ErasureReportRow: Codable, Equatable, Sendable {
    public var scope: String
    public var check: ErasureFinding.Check
    public var passed: Bool
    public var detail: String
}

public struct ErasureReport: Codable, Equatable, Sendable {
    public var subjectHash: String
    public var rows: [ErasureReportRow]
    public var findings: [ErasureFinding]
    public var segments: Int
    /// Archive bytes read (as stored, compressed) and what they decompress to.
    public var storedBytes: Int64
    public var decompressedBytes: Int64
    public var otherBytes: Int64
    /// The whole run, and the archive and log scan alone (after the key checks).
    public var seconds: Double
    public var scanSeconds: Double
    public var passed: Bool { findings.isEmpty }
}

/// What is looked for, and what counts as the subject's own.
public struct ErasureTarget: Sendable {
    public var subject: BSONValue
    public var subjectHash: String
    /// Every key of the subject the ledger names (destroyed, or to be).
    public var erasedKeys: Set<UUID>
    /// Every key the ledger names, of any subject: a value of this subject under any of them
    /// is unreadable too.
    public var allErasedKeys: Set<UUID>
    public var canaries: [String]
    public var rules: [ProtectionRule]

    public init(subject: BSONValue, subjectHash: String, erasedKeys: Set<UUID>, allErasedKeys: Set<UUID>, canaries: [String], rules: [ProtectionRule]) {
        self.subject = subject
        self.subjectHash = subjectHash
        self.erasedKeys = erasedKeys
        self.allErasedKeys = allErasedKeys
        self.canaries = canaries
        self.rules = rules
    }

    /// The bytes searched for in decompressed records: the id as BSON stores it, and each canary.
    var needles: [[UInt8]] {
        var out: [[UInt8]] = []
        if let n = Self.valueBytes(subject), !n.isEmpty { out.append(n) }
        for c in canaries where !c.isEmpty { out.append(Array(c.utf8)) }
        return out
    }

    /// The needles in text files (logs, JSON): as they are, and hex-encoded (resume tokens
    /// carry document keys as hex). `isId`: the subject's id (found only as a whole token).
    var textNeedles: [(bytes: [UInt8], isId: Bool, form: String)] {
        var out: [(bytes: [UInt8], isId: Bool, form: String)] = []
        let id = Self.valueBytes(subject) ?? []
        for n in needles {
            let isId = n == id
            out.append((n, isId, "in clear"))
            out.append((Array(n.map { String(format: "%02x", $0) }.joined().utf8), false, "hex-encoded"))
            out.append((Array(n.map { String(format: "%02X", $0) }.joined().utf8), false, "hex-encoded"))
        }
        return out
    }

    static func valueBytes(_ v: BSONValue) -> [UInt8]? {
        switch v {
        case .string(let s): return Array(s.utf8)
        default:
            // The value's bytes as they sit in a BSON element: {"": v} minus the framing.
            let b = Document(["": v]).bytes
            return b.count > 7 ? Array(b[6..<(b.count - 1)]) : nil
        }
    }

    func rule(_ namespace: String?) -> ProtectionRule? {
        guard let namespace else { return nil }
        let parts = namespace.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        return rules.first { $0.matches(database: parts[0], collection: parts[1]) }
    }
}

/// Scans repositories and log files for what an erased subject left behind: checks (b) and
/// (c) of `verify-erasure`. Segments are read as a stream, several at once; a block is
/// searched with memmem for the needles, and only a record with a hit is parsed.
public final class ArchiveScanner: @unchecked Sendable {
    public let target: ErasureTarget
    private let needles: [[UInt8]]
    private let textNeedles: [(bytes: [UInt8], isId: Bool, form: String)]
    private let lock = NSLock()
    private var findings: [ErasureFinding] = []
    private var subjectRecords: [String: Int] = [:]  // per scope
    private var subjectValues: [String: Int] = [:]
    private var scopeSegments: [String: Int] = [:]
    private var scopeFiles: [String: Int] = [:]
    private var stored: Int64 = 0
    private var decompressed: Int64 = 0
    private var other: Int64 = 0
    private var segmentCount = 0
    public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// Stored bytes of the segments read so far and of all of them, after each block;
    /// called from the scanning threads.
    public var progress: (@Sendable (_ scanned: Int64, _ total: Int64) -> Void)?
    private var scanned: Int64 = 0
    private var scanTotal: Int64 = 0

    public init(target: ErasureTarget) {
        self.target = target
        needles = target.needles
        textNeedles = target.textNeedles
    }

    struct SegmentJob {
        var path: String
        var relative: String
        var scope: String
        var namespace: String?
    }

    /// Scans every segment and file of the repositories, then the log files.
    public func scan(repositories: [String], logs: [String]) -> (rows: [ErasureReportRow], findings: [ErasureFinding], segments: Int, stored: Int64, decompressed: Int64, other: Int64) {
        var jobs: [SegmentJob] = []
        var textFiles: [(path: String, scope: String)] = []
        var scopes: [String] = []
        for repoPath in repositories {
            let label = repositories.count > 1 ? "\(repoPath) " : ""
            let (segmentJobs, files, order) = plan(repoPath, label: label)
            jobs += segmentJobs
            textFiles += files
            scopes += order
        }
        for log in logs {
            for f in Self.files(under: log) { textFiles.append((f, "log files")) }
        }
        if !logs.isEmpty { scopes.append("log files") }
        // Largest first, each thread taking the next one free: a few big segments still
        // keep every core busy.
        let sized = jobs.map { ($0, Self.size($0.path)) }
        let order = sized.sorted { $0.1 > $1.1 }.map(\.0)
        scanTotal = Int64(sized.reduce(0) { $0 + $1.1 })
        var next = 0
        let nextLock = NSLock()
        DispatchQueue.concurrentPerform(iterations: min(threads, max(1, order.count))) { _ in
            while true {
                let i: Int = nextLock.withLock { defer { next += 1 }; return next }
                guard i < order.count else { return }
                scanSegment(order[i])
            }
        }
        for f in textFiles { scanText(f.path, scope: f.scope) }
        var rows: [ErasureReportRow] = []
        for scope in scopes {
            let mine = findings.filter { $0.scope == scope }
            func row(_ check: ErasureFinding.Check, _ ok: String) {
                let n = mine.filter { $0.check == check }.count
                rows.append(ErasureReportRow(scope: scope, check: check, passed: n == 0, detail: n == 0 ? ok : "\(n) finding(s)"))
            }
            let segs = scopeSegments[scope] ?? 0
            // Scopes of text files only (logs, the repository's own files): only plaintext applies.
            if segs > 0 || mine.contains(where: { $0.check != .plaintext }) {
                row(.unverifiable, "\(segs) segment(s) read whole")
                row(.ciphertext, "\(subjectRecords[scope] ?? 0) record(s) of the subject, \(subjectValues[scope] ?? 0) encrypted value(s), all under erased keys")
            }
            row(.plaintext, "no plaintext of the subject" + ((scopeFiles[scope] ?? 0) > 0 ? " (also in \(scopeFiles[scope]!) text file(s))" : ""))
        }
        return (rows, findings, segmentCount, stored, decompressed, other)
    }

    /// The segments of a repository with the scope and namespace each belongs to, and its
    /// other files (manifests, change log entries: read as text).
    func plan(_ repoPath: String, label: String) -> ([SegmentJob], [(path: String, scope: String)], [String]) {
        var known: [String: SegmentJob] = [:]
        var order: [String] = []
        var jobs: [SegmentJob] = []
        var files: [(path: String, scope: String)] = []
        func note(_ f: ErasureFinding) { lock.withLock { findings.append(f) } }
        guard let repo = try? Repository(path: repoPath) else {
            note(ErasureFinding(check: .unverifiable, scope: "\(label)repository", location: repoPath, detail: "not a readable ciphertail repository"))
            return ([], [], ["\(label)repository"])
        }
        for id in repo.backupIDs() {
            let scope = "\(label)backup \(id)"
            order.append(scope)
            guard let m = try? repo.manifest(id) else {
                note(ErasureFinding(check: .unverifiable, scope: scope, location: "backups/\(id)/manifest.json", detail: "manifest unreadable: the backup cannot be verified"))
                continue
            }
            for e in m.namespaces {
                for s in e.segments {
                    let p = repo.segmentPath(backup: id, s)
                    known[p] = SegmentJob(path: p, relative: "backups/\(id)/\(s.path)", scope: scope, namespace: e.namespace)
                }
            }
            for s in m.events.segments {
                let p = repo.segmentPath(backup: id, s)
                known[p] = SegmentJob(path: p, relative: "backups/\(id)/\(s.path)", scope: scope, namespace: nil)
            }
        }
        let changes = (repoPath as NSString).appendingPathComponent("changes")
        var haveChanges = false
        for f in Self.files(under: changes) where f.hasSuffix(".json") {
            haveChanges = true
            guard let bytes = try? FileBytes.read(f), let entry = try? ChangeEntry.decode(bytes, path: f), let s = entry.segment else { continue }
            let p = String(f.dropLast(5)) + ".seg"
            known[p] = SegmentJob(path: p, relative: String(p.dropFirst(repoPath.count + 1)), scope: "\(label)change log", namespace: nil)
        }
        if haveChanges { order.append("\(label)change log") }
        var seen = Set<String>()
        for f in Self.files(under: repoPath) {
            let relative = String(f.dropFirst(repoPath.count + 1))
            if f.hasSuffix(".seg") {
                seen.insert(f)
                jobs.append(known[f] ?? SegmentJob(path: f, relative: relative, scope: "\(label)repository files", namespace: nil))
            } else {
                let scope = relative.hasPrefix("changes/") ? "\(label)change log" : relative.hasPrefix("backups/")
                    ? "\(label)backup \(relative.split(separator: "/")[1])" : "\(label)repository files"
                files.append((f, scope))
            }
        }
        if jobs.contains(where: { $0.scope == "\(label)repository files" }) || files.contains(where: { $0.scope == "\(label)repository files" }) {
            order.append("\(label)repository files")
        }
        for (p, job) in known where !seen.contains(p) {
            note(ErasureFinding(check: .unverifiable, scope: job.scope, location: job.relative, namespace: job.namespace,
                                detail: "the segment is missing: what it held cannot be verified"))
        }
        return (jobs, files, order)
    }

    func scanSegment(_ job: SegmentJob) {
        var storedHere: Int64 = 0
        var raw: Int64 = 0
        var local: [ErasureFinding] = []
        var records = 0
        var values = 0
        do {
            // Every block's SHA-256 and framing is checked, and every byte scanned: what is
            // on disk is what is verified. The whole-file hash against the manifest is
            // `ciphertail verify`'s job, so it is skipped here.
            let reader = try SegmentReader(path: job.path)
            reader.hashesFile = false
            var reported = 0
            while let block = try reader.nextBlock() {
                raw += Int64(block.data.count)
                scanBlock(block, job: job, findings: &local, records: &records, values: &values)
                if let progress {
                    let now = lock.withLock { scanned += Int64(reader.position - reported); return scanned }
                    reported = reader.position
                    progress(now, scanTotal)
                }
            }
            storedHere = Int64(reader.fileSize)
        } catch {
            local.append(ErasureFinding(check: .unverifiable, scope: job.scope, location: job.relative, namespace: job.namespace,
                                        detail: "unreadable, so unverified: \(error)"))
        }
        lock.withLock {
            findings += local
            segmentCount += 1
            scopeSegments[job.scope, default: 0] += 1
            subjectRecords[job.scope, default: 0] += records
            subjectValues[job.scope, default: 0] += values
            stored += storedHere
            decompressed += raw
        }
    }

    static func size(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Offsets in `data` where a needle starts.
    static func hits(_ data: UnsafeRawBufferPointer, _ needles: [[UInt8]]) -> [Int] {
        guard let base = data.baseAddress else { return [] }
        var out: [Int] = []
        for n in needles {
            n.withUnsafeBytes { nb in
                var at = 0
                // memchr (vectorised) for the first byte, memcmp for the rest: glibc's
                // memmem is not exported to Swift.
                let first = Int32(nb[0])
                while at + nb.count <= data.count, let p = memchr(base + at, first, data.count - at - nb.count + 1) {
                    let o = base.distance(to: UnsafeRawPointer(p))
                    if memcmp(p, nb.baseAddress!, nb.count) == 0 { out.append(o) }
                    at = o + 1
                }
            }
        }
        return out.sorted()
    }

    func scanBlock(_ block: Block, job: SegmentJob, findings local: inout [ErasureFinding], records: inout Int, values: inout Int) {
        block.data.withUnsafeBytes { buf in
            let found = Self.hits(buf, needles)
            guard !found.isEmpty else { return }
            var o = 0
            var h = 0
            while o + 4 <= buf.count, h < found.count {
                let len = Int(buf.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian)
                guard len >= 5, o + len <= buf.count else { return }
                if found[h] < o + len {
                    while h < found.count && found[h] < o + len { h += 1 }
                    let doc = Document(trusted: Array(buf[o..<o + len]))
                    inspect(doc, job: job, findings: &local, records: &records, values: &values)
                }
                o += len
            }
        }
    }

    /// One record with a hit: where the needles sit, whether it is the subject's, and if so
    /// whether every value of it is ciphertext under an erased key.
    func inspect(_ doc: Document, job: SegmentJob, findings local: inout [ErasureFinding], records: inout Int, values: inout Int) {
        let namespace = job.namespace ?? Namespace(changeEvent: doc)?.description
        let rule = target.rule(namespace)
        var subjectField: [String]?
        if case .perSubject(let f, _)? = rule?.key { subjectField = f.split(separator: ".").map(String.init) }
        var owned = false
        var ciphertext: [(String, UUID?)] = []
        var clear: [String] = []
        let idText: String? = { if case .string(let s) = target.subject { return s } else { return nil } }()
        func report(_ check: ErasureFinding.Check, _ field: String?, _ detail: String) {
            local.append(ErasureFinding(check: check, scope: job.scope, location: job.relative, namespace: namespace, field: field, detail: detail))
        }
        func walk(_ d: Document, _ path: [String]) {
            for (k, v) in d.elements {
                let p = path + [k]
                let dotted = p.joined(separator: ".")
                for c in target.canaries where !c.isEmpty && k.contains(c) { report(.plaintext, dotted, "a canary value is a field name") }
                switch v {
                case .document(let sub): walk(sub, p)
                case .array(let items):
                    for (i, item) in items.enumerated() {
                        if case .document(let sub) = item { walk(sub, p + [String(i)]) } else { leaf(item, p + [String(i)]) }
                    }
                default: leaf(v, p)
                }
            }
        }
        func leaf(_ v: BSONValue, _ p: [String]) {
            let dotted = p.joined(separator: ".")
            let logical = p.filter { Int($0) == nil }
            if case .binary(6, let bytes) = v {
                ciphertext.append((dotted, bytes.count >= 17 ? UUID(keyIdBytes: Array(bytes[1..<17])) : nil))
                return
            }
            if v == target.subject, let sf = subjectField, logical.count >= sf.count, Array(logical.suffix(sf.count)) == sf {
                owned = true  // the subject key field: the id belongs there
                return
            }
            if let rule, rule.field(at: dotted) != nil, v != .null {
                clear.append(dotted)
            }
            if case .string(let s) = v {
                if let idText, Self.containsToken(s, idText) { report(.plaintext, dotted, "the subject's id in a field that is not its subject key") }
                for c in target.canaries where !c.isEmpty && s.contains(c) { report(.plaintext, dotted, "a canary value in clear") }
            } else if v == target.subject, idText == nil {
                report(.plaintext, dotted, "the subject's id in a field that is not its subject key")
            }
        }
        walk(doc, [])
        guard owned else { return }
        records += 1
        values += ciphertext.count
        for (path, key) in ciphertext {
            guard let key else { report(.ciphertext, path, "ciphertext too short to name its key"); continue }
            if !target.allErasedKeys.contains(key) {
                report(.ciphertext, path, "encrypted under data key \(key.keyIdString), which the ledger does not name as erased: still readable with the key vault")
            }
        }
        for path in clear {
            report(.plaintext, path, "a protected field of the subject is in clear")
        }
    }

    /// `text` contains `token` with no letter or digit right before or after it (so
    /// "user-42" is not found inside "user-420").
    static func containsToken(_ text: String, _ token: String) -> Bool {
        let t = Array(text.utf8), n = Array(token.utf8)
        guard !n.isEmpty, t.count >= n.count else { return false }
        func word(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b >= 0x80 }
        var i = 0
        while i + n.count <= t.count {
            if t[i] == n[0] && Array(t[i..<i + n.count]) == n {
                let before = i == 0 || !word(t[i - 1]) || !word(n[0])
                let after = i + n.count == t.count || !word(t[i + n.count]) || !word(n[n.count - 1])
                if before && after { return true }
            }
            i += 1
        }
        return false
    }

    /// A text file (manifest, change log entry, log): the needles as they are and hex-encoded.
    func scanText(_ path: String, scope: String) {
        guard let bytes = try? FileBytes.read(path) else {
            lock.withLock { findings.append(ErasureFinding(check: .unverifiable, scope: scope, location: path, detail: "unreadable")) }
            return
        }
        var local: [ErasureFinding] = []
        bytes.withUnsafeBytes { buf in
            for n in textNeedles {
                let found = Self.hits(buf, [n.bytes])
                // The id counts only as a whole token ("user-42" is not in "user-420"); canaries anywhere.
                guard let first = found.first(where: { !n.isId || Self.tokenAt(buf, $0, n.bytes.count) }) else { continue }
                let line = buf[..<first].filter { $0 == 0x0A }.count + 1
                let what = n.isId ? "the subject's id" : (n.form == "in clear" ? "a canary value" : "the subject's id or a canary value")
                local.append(ErasureFinding(check: .plaintext, scope: scope, location: "\(path):\(line)", detail: "\(what), \(n.form)"))
            }
        }
        lock.withLock {
            findings += local
            other += Int64(bytes.count)
            scopeFiles[scope, default: 0] += 1
        }
    }

    static func tokenAt(_ buf: UnsafeRawBufferPointer, _ at: Int, _ len: Int) -> Bool {
        func word(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) }
        let before = at == 0 || !word(buf[at - 1])
        let after = at + len >= buf.count || !word(buf[at + len])
        return before && after
    }

    /// Regular files under a path (the path itself when it is a file), sorted.
    static func files(under path: String) -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return [] }
        guard isDir.boolValue else { return [path] }
        var out: [String] = []
        if let e = FileManager.default.enumerator(atPath: path) {
            for case let rel as String in e {
                let full = (path as NSString).appendingPathComponent(rel)
                var d: ObjCBool = false
                if FileManager.default.fileExists(atPath: full, isDirectory: &d), !d.boolValue { out.append(full) }
            }
        }
        return out.sorted()
    }
}

enum FileBytes {
    static func read(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else { throw CocoaError(.fileReadNoPermission) }
        return [UInt8](d)
    }
}
