import Durable
import Foundation

/// The repository: a folder of backups (docs/FORMAT.md, "Repository layout").
///
///     ciphertail-repo.json
///     backups/<id>/manifest.json
///     backups/<id>/data/<n>-<seq>.seg
///     backups/<id>/events/<seq>.seg
public final class Repository {
    public let path: String
    public static let configName = "ciphertail-repo.json"

    public struct Config: Codable {
        public var format = "ciphertail-repo"
        public var version = 1
        public var id: String
        public var createdAt: Date
    }

    /// Opens a repository; with `create`, makes it when the folder is empty or absent.
    public init(path: String, create: Bool = false) throws {
        self.path = (path as NSString).standardizingPath
        let configPath = (self.path as NSString).appendingPathComponent(Repository.configName)
        if FileManager.default.fileExists(atPath: configPath) {
            let d = JSONDecoder()
            d.dateDecodingStrategy = .iso8601
            guard let config = try? d.decode(Config.self, from: Data(try Durable.readFile(configPath))) else {
                throw ArchiveError.unsupportedRepository(path: configPath, reason: "unreadable repository configuration")
            }
            guard config.format == "ciphertail-repo", config.version == 1 else {
                throw ArchiveError.unsupportedRepository(path: configPath, reason: "repository format \(config.format) version \(config.version) is not ciphertail-repo version 1")
            }
            return
        }
        guard create else { throw ArchiveError.notARepository(self.path) }
        try Durable.makeDirectory(self.path)
        if access(self.path, W_OK) != 0 { throw FileError(operation: "write to repository", path: self.path, errno: EACCES) }
        let existing = (try? FileManager.default.contentsOfDirectory(atPath: self.path)) ?? []
        if !existing.isEmpty {
            throw FileError(operation: "create a repository in non-empty folder", path: self.path, errno: EEXIST)
        }
        try Durable.makeDirectory(backupsPath)
        let config = Config(id: UUID().uuidString.lowercased(), createdAt: Date())
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        try Durable.writeFile(Array(try e.encode(config)) + [0x0A], to: configPath)
    }

    public var backupsPath: String { (path as NSString).appendingPathComponent("backups") }

    public func backupPath(_ id: String) -> String { (backupsPath as NSString).appendingPathComponent(id) }

    public func manifestPath(_ id: String) -> String { (backupPath(id) as NSString).appendingPathComponent("manifest.json") }

    /// Backup ids that have a manifest, oldest first (ids sort by time).
    public func backupIDs() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backupsPath)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: manifestPath($0)) }.sorted()
    }

    /// Backup folders without a manifest: interrupted backups (not folders still being
    /// assembled under a temporary name).
    public func incompleteBackupIDs() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: backupsPath)) ?? []
        return names.filter { !$0.hasSuffix(Durable.temporarySuffix) && !FileManager.default.fileExists(atPath: manifestPath($0)) }.sorted()
    }

    public func manifest(_ id: String) throws -> Manifest {
        let p = manifestPath(id)
        guard FileManager.default.fileExists(atPath: p) else {
            throw ArchiveError.unknownBackup(id: id, available: backupIDs())
        }
        return try Manifest.decode(try Durable.readFile(p), path: p)
    }

    /// The newest complete backup.
    public func latest() throws -> Manifest {
        guard let id = backupIDs().last else { throw ArchiveError.unknownBackup(id: "(latest)", available: []) }
        return try manifest(id)
    }

    /// Manifests that load, plus the ids whose manifest does not.
    public func listBackups() -> (manifests: [Manifest], unreadable: [(id: String, error: Error)]) {
        var ok: [Manifest] = []
        var bad: [(String, Error)] = []
        for id in backupIDs() {
            do { ok.append(try manifest(id)) } catch { bad.append((id, error)) }
        }
        return (ok, bad)
    }

    /// Starts a new backup folder; the backup exists for readers once `commit` writes the manifest.
    public func beginBackup(at date: Date = Date()) throws -> BackupWriter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16).leftPad(8)
        let id = "\(f.string(from: date))-\(suffix)"
        return try createBackupFolder(id)
    }

    /// Starts a backup under a given id (a re-key keeps the source's ids). The id must be a
    /// plain folder name, and no backup folder may have it: a complete backup is never written
    /// over. An interrupted one must be removed first (`removeInterruptedBackups`).
    public func beginBackup(id: String) throws -> BackupWriter {
        guard Repository.isPlainBackupID(id) else {
            throw ArchiveError.badManifest(path: id, reason: "backup id \(id) is not a plain folder name")
        }
        return try createBackupFolder(id)
    }

    /// Letters, digits, `-`, `_` and `.`, not starting with `.` nor ending in `.tmp`: what
    /// backup ids are made of, and nothing that could leave `backups/`.
    static func isPlainBackupID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 200 && !id.hasPrefix(".") && !id.hasSuffix(Durable.temporarySuffix)
            && id.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    /// The backup folder is assembled under a temporary name (`<id>.<pid>.<random>.tmp`) with
    /// `writer.pid`, `data/` and `events/`, then renamed into place: a folder under a backup id
    /// always names its writer, so a kill at any moment leaves nothing that cleanup must guess
    /// about. The rename fails if a backup with that id exists (it is not empty).
    private func createBackupFolder(_ id: String) throws -> BackupWriter {
        try Durable.makeDirectory(backupsPath)
        let dir = backupPath(id)
        if FileManager.default.fileExists(atPath: dir) { throw FileError(operation: "create backup folder", path: dir, errno: EEXIST) }
        let staging = dir + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max))" + Durable.temporarySuffix
        if mkdir(staging, 0o755) != 0 { throw FileError(operation: "create backup folder", path: staging, errno: errno) }
        do {
            // Who is writing this backup: cleanup leaves folders of live writers alone.
            try Durable.writeFile("\(getpid())\n", to: (staging as NSString).appendingPathComponent(Repository.writerFile))
            try Durable.makeDirectory((staging as NSString).appendingPathComponent("data"))
            try Durable.makeDirectory((staging as NSString).appendingPathComponent("events"))
            try Durable.rename(staging, to: dir)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        return BackupWriter(repository: self, id: id, path: dir)
    }

    static let writerFile = "writer.pid"

    /// Removes interrupted backups (no manifest, and the process that wrote them is gone) and
    /// returns their ids. Their segments are useless without a manifest.
    @discardableResult
    public func removeInterruptedBackups() -> [String] {
        var removed: [String] = []
        for id in incompleteBackupIDs() {
            let pidPath = (backupPath(id) as NSString).appendingPathComponent(Repository.writerFile)
            let pid = (try? String(contentsOfFile: pidPath, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if let pid, pid > 0 {
                if pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM) { continue }  // still being written
            } else {
                // No writer.pid: a folder made before backup folders were assembled under a
                // temporary name, whose writer may still be starting. Only an old one is abandoned.
                let created = (try? FileManager.default.attributesOfItem(atPath: backupPath(id))[.modificationDate] as? Date) ?? Date()
                if Date().timeIntervalSince(created) < 3600 { continue }
            }
            if (try? FileManager.default.removeItem(atPath: backupPath(id))) != nil { removed.append(id) }
        }
        // Folders still being assembled (`<id>.<pid>.<random>.tmp`) whose writer is gone.
        var staged = false
        for name in (try? FileManager.default.contentsOfDirectory(atPath: backupsPath)) ?? [] where name.hasSuffix(Durable.temporarySuffix) {
            let parts = name.split(separator: ".")
            guard parts.count >= 4, let pid = Int32(parts[parts.count - 3]), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }
            staged = (try? FileManager.default.removeItem(atPath: (backupsPath as NSString).appendingPathComponent(name))) != nil || staged
        }
        if !removed.isEmpty || staged { try? Durable.fsyncDirectory(backupsPath) }
        return removed
    }

    public static let claimFile = "pipeline.json"

    struct Claim: Codable {
        var format = "ciphertail-pipeline-claim"
        var version = 1
        var pipeline: String
        var claimedAt: Date
    }

    /// Binds the repository to one pipeline name on first use; another name is refused
    /// (`ArchiveError.claimed`), so two pipelines never interleave their logs and retention.
    public func claim(pipeline name: String) throws {
        let p = (path as NSString).appendingPathComponent(Repository.claimFile)
        if FileManager.default.fileExists(atPath: p) {
            guard let c = try? Manifest.decoder.decode(Claim.self, from: Data(try Durable.readFile(p))) else {
                throw ArchiveError.badManifest(path: p, reason: "unreadable pipeline claim")
            }
            if c.pipeline != name { throw ArchiveError.claimed(path: path, by: c.pipeline, requested: name) }
            return
        }
        try Durable.writeFile(try Manifest.encoder.encode(Claim(pipeline: name, claimedAt: Date())) + [0x0A], to: p)
    }

    /// The pipeline that claimed the repository, if any.
    public var claimedBy: String? {
        let p = (path as NSString).appendingPathComponent(Repository.claimFile)
        return (try? Durable.readFile(p)).flatMap { try? Manifest.decoder.decode(Claim.self, from: Data($0)) }?.pipeline
    }

    public func segmentPath(backup id: String, _ segment: SegmentInfo) -> String {
        (backupPath(id) as NSString).appendingPathComponent(segment.path)
    }
}

public final class BackupWriter {
    public let repository: Repository
    public let id: String
    public let path: String
    public private(set) var committed = false

    init(repository: Repository, id: String, path: String) {
        self.repository = repository
        self.id = id
        self.path = path
    }

    public func segmentWriter(relativePath: String, kind: RecordKind, level: Int32,
                              blockBytes: Int = SegmentFormat.defaultBlockBytes) throws -> SegmentWriter {
        try SegmentWriter(path: (path as NSString).appendingPathComponent(relativePath), relativePath: relativePath,
                          kind: kind, level: level, blockBytes: blockBytes)
    }

    /// Writes the manifest; from here on the backup is visible and restorable.
    public func commit(_ manifest: Manifest) throws {
        precondition(manifest.id == id)
        try Durable.writeFile(try manifest.encoded(), to: repository.manifestPath(id))
        committed = true
        unlink((path as NSString).appendingPathComponent(Repository.writerFile))
    }

    /// Removes an unfinished backup folder (its segments are useless without a manifest).
    public func discard() {
        guard !committed else { return }
        try? FileManager.default.removeItem(atPath: path)
        try? Durable.fsyncDirectory(repository.backupsPath)
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
