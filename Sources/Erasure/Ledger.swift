import Digest
import Durable
import FieldCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One line of the erasure ledger. Subjects appear only as the keyed hash that names their
/// data key (`subject/<hash>`), never as the id itself.
public struct LedgerEntry: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// Written before anything is destroyed: from here on the keys count as erased.
        case intent
        /// Written once the keys are gone from the vault, the KMIP server and the key-vault backups.
        case erased
    }

    public var seq: Int
    /// Hex SHA-256 of the previous line's bytes (without its newline); 64 zeros for the first.
    public var prev: String
    public var kind: Kind
    /// ISO 8601 UTC, milliseconds.
    public var time: String
    /// The keyed hash of the subject id (the hex part of its key name `subject/<hash>`).
    public var subject: String
    /// The data keys destroyed (UUIDs).
    public var keys: [String]
    /// KMIP objects that wrapped only this subject's keys, revoked and destroyed with them.
    public var kmipObjects: [String]?
    public var reason: String?
    /// For `erased`: the sequence number of its intent.
    public var intent: Int?

    /// The key name of the subject's data key.
    public var keyName: String { LedgerEntry.subjectKeyPrefix + subject }
    public static let subjectKeyPrefix = "subject/"
}

public enum LedgerError: Error, CustomStringConvertible, Equatable {
    /// The file cannot be trusted from this line on: nothing is erased or restored with it.
    case damaged(path: String, line: Int, problem: String)
    case notConfigured

    public var description: String {
        switch self {
        case let .damaged(path, line, problem):
            return "erasure ledger \(path) is damaged at line \(line): \(problem); refusing to use it (restore it from a copy; never edit it by hand)"
        case .notConfigured:
            return "no erasure ledger: set encryption.erasureLedger in the pipeline file or give --ledger"
        }
    }
}

/// The erasure ledger: an append-only file of JSON lines, each naming the SHA-256 of the line
/// before it, fsynced on every append, kept apart from the key vault and the archives (and
/// out of their backups). It outlives the keys it names: restoring an old key vault, a
/// capture, a restore and `keys restore` all read it, so an erased key can never be used again.
///
/// A last line without its newline is an append a crash interrupted: it is ignored when
/// reading and cut off by the next append (nothing was destroyed on its strength, since
/// destruction starts only after the intent's fsync). Any other defect (a line that does not
/// parse, a broken hash chain, a sequence gap) makes the whole ledger unusable, naming the line.
public final class ErasureLedger: @unchecked Sendable {
    public let path: String
    public private(set) var entries: [LedgerEntry] = []
    /// SHA-256 (hex) of the last complete line: the head a key-vault backup records.
    public private(set) var headHash = ErasureLedger.zeroHash
    /// Bytes of complete lines read.
    private(set) var validLength = 0

    public static let zeroHash = String(repeating: "0", count: 64)

    private init(path: String) { self.path = path }

    /// Opens the ledger; a missing file is an empty ledger (created on first append).
    public static func open(at path: String) throws -> ErasureLedger {
        let l = ErasureLedger(path: path)
        try l.load()
        return l
    }

    /// Re-reads the file.
    public func load() throws {
        var bytes: [UInt8] = []
        if access(path, F_OK) == 0 { bytes = try Durable.readFile(path) }
        var parsed: [LedgerEntry] = []
        var prev = Self.zeroHash
        var start = 0
        var line = 0
        let decoder = JSONDecoder()
        while start < bytes.count {
            guard let nl = bytes[start...].firstIndex(of: 0x0A) else { break }  // torn last line
            line += 1
            let text = Array(bytes[start..<nl])
            func damaged(_ why: String) -> LedgerError { .damaged(path: path, line: line, problem: why) }
            let entry: LedgerEntry
            do { entry = try decoder.decode(LedgerEntry.self, from: Data(text)) } catch {
                throw damaged("not a ledger entry (\(error))")
            }
            guard entry.seq == parsed.count + 1 else { throw damaged("entry \(entry.seq) where \(parsed.count + 1) was expected") }
            guard entry.prev == prev else { throw damaged("entry \(entry.seq) does not name the hash of entry \(entry.seq - 1): the hash chain is broken") }
            if entry.kind == .erased {
                guard let i = entry.intent, i >= 1, i < entry.seq, parsed[i - 1].kind == .intent, parsed[i - 1].subject == entry.subject else {
                    throw damaged("entry \(entry.seq) completes no intent of its subject")
                }
            }
            parsed.append(entry)
            prev = SHA256.hash(text).hexString
            start = nl + 1
        }
        entries = parsed
        headHash = prev
        validLength = start
    }

    /// Intents with no `erased` entry yet: an erasure a crash interrupted.
    public var pendingIntents: [LedgerEntry] {
        let done = Set(entries.compactMap { $0.kind == .erased ? $0.intent : nil })
        return entries.filter { $0.kind == .intent && !done.contains($0.seq) }
    }

    /// Every data key an intent named: erased, or being erased. Never to be used again.
    public var erasedKeyIds: Set<UUID> {
        Set(entries.filter { $0.kind == .intent }.flatMap { $0.keys.compactMap(UUID.init(uuidString:)) })
    }

    /// The key names (`subject/<hash>`) of every subject with an intent.
    public var erasedKeyNames: Set<String> { Set(entries.filter { $0.kind == .intent }.map(\.keyName)) }

    public var erasedKMIPObjects: Set<String> { Set(entries.filter { $0.kind == .intent }.flatMap { $0.kmipObjects ?? [] }) }

    public func entries(subject hash: String) -> [LedgerEntry] { entries.filter { $0.subject == hash } }

    /// Appends one entry (its `seq` and `prev` are set here) under an exclusive lock, after
    /// reading what other processes appended. The line is durable when this returns.
    @discardableResult
    public func append(_ draft: LedgerEntry) throws -> LedgerEntry {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try Durable.makeDirectory(dir, mode: 0o700) }
        let created = access(path, F_OK) != 0
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 { throw FileError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw FileError(operation: "lock", path: path, errno: errno) }
        }
        defer { flock(fd, LOCK_UN) }
        if created { try Durable.fsyncDirectory(dir.isEmpty ? "." : dir) }
        try load()
        var entry = draft
        entry.seq = entries.count + 1
        entry.prev = headHash
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = Array(try encoder.encode(entry))
        // A torn line past the last complete one is overwritten.
        if ftruncate(fd, off_t(validLength)) != 0 { throw FileError(operation: "truncate", path: path, errno: errno) }
        let line = text + [0x0A]
        try Durable.pwriteAll(fd, line, at: validLength, path: path, operation: "append")
        if fsync(fd) != 0 { throw FileError(operation: "fsync", path: path, errno: errno) }
        entries.append(entry)
        headHash = SHA256.hash(text).hexString
        validLength += line.count
        return entry
    }

    static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date())
    }

    /// A draft entry; `append` numbers and chains it.
    public static func draft(_ kind: LedgerEntry.Kind, subject: String, keys: [UUID], kmipObjects: [String]? = nil,
                             reason: String? = nil, intent: Int? = nil) -> LedgerEntry {
        LedgerEntry(seq: 0, prev: "", kind: kind, time: now(), subject: subject, keys: keys.map(\.keyIdString),
                    kmipObjects: kmipObjects, reason: reason, intent: intent)
    }
}

/// What running jobs know of the ledger: the erased subjects (for `DocumentProtector`, which
/// never gives them a key again) and keys (for `ErasureTreatment`). `refresh()` re-reads the
/// ledger when its file changed and reports new erasures, so a job that runs while a subject
/// is erased stops using the key (`ErasureWatch` calls it every second).
public final class ErasedSet: ErasedSubjects, @unchecked Sendable {
    private let lock = NSLock()
    private var names: Set<String>
    private var ids: Set<UUID>
    private let ledger: ErasureLedger
    private var stamp: (Int, Int)

    public init(ledger: ErasureLedger) {
        self.ledger = ledger
        names = ledger.erasedKeyNames
        ids = ledger.erasedKeyIds
        stamp = Self.stamp(ledger.path)
    }

    public func isErased(keyName: String) -> Bool { lock.withLock { names.contains(keyName) } }
    public func isErased(keyId: UUID) -> Bool { lock.withLock { ids.contains(keyId) } }
    public var count: Int { lock.withLock { names.count } }

    /// Re-reads the ledger if its file changed; true when it names new erasures. A ledger
    /// that became damaged keeps what was known (still fail-closed for those) and throws.
    public func refresh() throws -> Bool {
        let now = Self.stamp(ledger.path)
        guard lock.withLock({ now != stamp }) else { return false }
        try ledger.load()
        let newNames = ledger.erasedKeyNames
        let newIds = ledger.erasedKeyIds
        return lock.withLock {
            stamp = now
            let grew = !newNames.isSubset(of: names) || !newIds.isSubset(of: ids)
            names.formUnion(newNames)
            ids.formUnion(newIds)
            return grew
        }
    }

    private static func stamp(_ path: String) -> (Int, Int) {
        var st = stat()
        guard stat(path, &st) == 0 else { return (0, 0) }
        return (Int(st.st_size), Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec))
    }

    /// The treatment of values under erased keys, for decryptors.
    public func treatment(rules: [ProtectionRule]) -> ErasureTreatment {
        ErasureTreatment(rules: rules) { [self] in isErased(keyId: $0) }
    }
}

extension ErasureLedger {
    /// The SHA-256 of entry `seq`'s line, as the next entry (or the head) names it.
    public func hash(ofEntry seq: Int) -> String? {
        guard seq >= 1, seq <= entries.count else { return seq == 0 ? Self.zeroHash : nil }
        return seq == entries.count ? headHash : entries[seq].prev
    }
}
