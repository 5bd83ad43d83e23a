import Durable
import Foundation

/// Which base snapshots a repository keeps: the union of the newest `keepLast` and those
/// needed to restore any point of the last `keepDays` days (every snapshot taken within them,
/// plus the newest one before them, which the oldest points of the period start from).
public struct RetentionPolicy: Codable, Equatable, Sendable {
    public var keepLast: Int?
    public var keepDays: Double?
    public init(keepLast: Int?, keepDays: Double?) {
        self.keepLast = keepLast
        self.keepDays = keepDays
    }
}

/// What a prune removes (or, dry, would remove), and why the rest stays.
public struct PrunePlan: Codable, Equatable, Sendable {
    public var keep: [String]
    public var remove: [String]
    /// Change-log entries below this sequence are removed: every one of them ends at or before
    /// the oldest kept snapshot's consistent point, so no kept window reads them.
    public var removeEntriesBelow: Int64?
    public var entriesRemoved: Int64 = 0
}

/// Applies a retention policy to a repository, crash-safely: the plan is written first
/// (`prune.json`); then each removed backup loses its manifest (from that moment it is no
/// backup, and readers skip it) before its segments and folder go; then change-log entries
/// are removed oldest first, each entry before its segment (a segment without an entry is
/// what an interrupted close leaves, and the next writer removes it), and `changes/pruned.json`
/// records where the log now starts. The plan file is removed last; a prune that finds one
/// completes it before anything else. One prune at a time (`prune.lock`).
public enum Retention {
    public static let planFile = "prune.json"
    public static let lockFile = "prune.lock"

    /// `keepEntriesFrom`: no entry at or after this sequence is removed (a replica that has
    /// not applied them yet).
    public static func plan(_ repo: Repository, policy: RetentionPolicy, now: Date = Date(), keepEntriesFrom: Int64? = nil) -> PrunePlan {
        let manifests = repo.listBackups().manifests.sorted { $0.clusterTime.end < $1.clusterTime.end }
        var keep = Set<String>()
        if let n = policy.keepLast { keep.formUnion(manifests.suffix(max(1, n)).map(\.id)) }
        if let days = policy.keepDays {
            let cutoff = now.addingTimeInterval(-days * 86_400)
            let cutoffTime = ClusterTime(t: UInt32(max(0, min(Double(UInt32.max), cutoff.timeIntervalSince1970))), i: 0)
            keep.formUnion(manifests.filter { $0.clusterTime.end >= cutoffTime }.map(\.id))
            if let before = manifests.last(where: { $0.clusterTime.end < cutoffTime }) { keep.insert(before.id) }
        }
        // The newest snapshot always stays: it is where the change log's restores start.
        if let newest = manifests.last { keep.insert(newest.id) }
        let kept = manifests.filter { keep.contains($0.id) }
        var plan = PrunePlan(keep: kept.map(\.id), remove: manifests.filter { !keep.contains($0.id) }.map(\.id))
        if let oldest = kept.first {
            let log = ChangeLog(repository: repo)
            let entries = log.load().entries.map(\.entry)
            // Never the newest entry: it holds the tailer's resume point.
            let removable = entries.dropLast().prefix { $0.to <= oldest.clusterTime.end }
            if let last = removable.last {
                let below = min(last.sequence + 1, keepEntriesFrom ?? .max)
                if below > (entries.first?.sequence ?? 1) { plan.removeEntriesBelow = below }
            }
        }
        return plan
    }

    /// Completes an interrupted prune if one is pending, then plans and applies `policy`.
    @discardableResult
    public static func prune(_ repo: Repository, policy: RetentionPolicy, now: Date = Date(), keepEntriesFrom: Int64? = nil,
                             log: (String) -> Void = { _ in }) throws -> PrunePlan {
        let lockPath = (repo.path as NSString).appendingPathComponent(lockFile)
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw FileError(operation: "open", path: lockPath, errno: errno) }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 { throw ArchiveError.locked(path: lockPath) }
        if let pending = try pendingPlan(repo) {
            log("completing an interrupted prune: \(pending.remove.count) backups, entries below \(pending.removeEntriesBelow ?? 0)")
            _ = try apply(pending, to: repo, log: log)
        }
        let plan = self.plan(repo, policy: policy, now: now, keepEntriesFrom: keepEntriesFrom)
        guard !plan.remove.isEmpty || plan.removeEntriesBelow != nil else { return plan }
        try Durable.writeFile(try Manifest.encoder.encode(plan) + [0x0A], to: planPath(repo))
        return try apply(plan, to: repo, log: log)
    }

    static func planPath(_ repo: Repository) -> String { (repo.path as NSString).appendingPathComponent(planFile) }

    static func pendingPlan(_ repo: Repository) throws -> PrunePlan? {
        let p = planPath(repo)
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        do { return try Manifest.decoder.decode(PrunePlan.self, from: Data(try Durable.readFile(p))) } catch {
            throw ArchiveError.badManifest(path: p, reason: "unreadable prune plan: \(error)")
        }
    }

    static func apply(_ plan: PrunePlan, to repo: Repository, log: (String) -> Void) throws -> PrunePlan {
        var done = plan
        let fm = FileManager.default
        for id in plan.remove {
            let manifest = repo.manifestPath(id)
            if fm.fileExists(atPath: manifest) {
                if unlink(manifest) != 0 && errno != ENOENT { throw FileError(operation: "remove", path: manifest, errno: errno) }
                try Durable.fsyncDirectory(repo.backupPath(id))
            }
            if fm.fileExists(atPath: repo.backupPath(id)) {
                do { try fm.removeItem(atPath: repo.backupPath(id)) } catch {
                    throw FileError(operation: "remove", path: repo.backupPath(id), errno: EIO)
                }
                try Durable.fsyncDirectory(repo.backupsPath)
            }
            log("pruned backup \(id)")
        }
        if let below = plan.removeEntriesBelow {
            let changes = ChangeLog(repository: repo)
            // The marker first: a crash midway leaves a log that starts later than it says,
            // which coverage treats like one that starts where it says.
            try writeMarker(changes, below: below)
            var touched = Set<String>()
            for seq in changes.sequences() where seq < below {
                for p in [changes.entryPath(seq), changes.segmentPath(seq)] where unlink(p) != 0 && errno != ENOENT {
                    throw FileError(operation: "remove", path: p, errno: errno)
                }
                touched.insert((changes.entryPath(seq) as NSString).deletingLastPathComponent)
                done.entriesRemoved += 1
            }
            for dir in touched.sorted() {
                if ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).isEmpty { rmdir(dir) } else { try Durable.fsyncDirectory(dir) }
            }
            if !touched.isEmpty { try Durable.fsyncDirectory(changes.path) }
            if done.entriesRemoved > 0 { log("pruned \(done.entriesRemoved) change-log entries below \(below)") }
        }
        let p = planPath(repo)
        if fm.fileExists(atPath: p) {
            unlink(p)
            try Durable.fsyncDirectory(repo.path)
        }
        return done
    }

    struct Marker: Codable {
        var format = "ciphertail-pruned"
        var version = 1
        var below: Int64
        var at: Date
    }

    static func markerPath(_ log: ChangeLog) -> String { (log.path as NSString).appendingPathComponent("pruned.json") }

    static func writeMarker(_ log: ChangeLog, below: Int64) throws {
        if let old = prunedBelow(log), old >= below { return }
        try Durable.makeDirectory(log.path)
        try Durable.writeFile(try Manifest.encoder.encode(Marker(below: below, at: Date())) + [0x0A], to: markerPath(log))
    }

    /// Where retention says the change log starts (entries below it were removed on purpose).
    public static func prunedBelow(_ log: ChangeLog) -> Int64? {
        guard let bytes = try? Durable.readFile(markerPath(log)),
              let m = try? Manifest.decoder.decode(Marker.self, from: Data(bytes)), m.format == "ciphertail-pruned" else { return nil }
        return m.below
    }
}
