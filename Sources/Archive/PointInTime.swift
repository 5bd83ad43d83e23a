import BSON
import Digest
import Foundation

extension ClusterTime {
    /// The cluster time at the front of a resume token's `_data`: a hex KeyString whose first
    /// value is a timestamp (type byte 0x82, then seconds and increment, big-endian).
    public init?(resumeTokenData hex: String) {
        guard hex.count >= 18, let bytes = [UInt8](hex: String(hex.prefix(18))), bytes[0] == 0x82 else { return nil }
        let t = bytes[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let i = bytes[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        self.init(t: t, i: i)
    }
}

/// Where a point-in-time restore or export should bring the data.
public enum PointInTimeTarget {
    /// Accepts a cluster time `T:I`; a resume token (`{"_data": "82..."}` or the hex string
    /// alone), meaning its event's cluster time; or an ISO 8601 time. Cluster times count whole
    /// seconds, so an ISO time includes every change of its second: `2026-11-22T17:12:00Z` is
    /// `1795367520:4294967295`.
    public static func parse(_ text: String) throws -> ClusterTime {
        let s = text.trimmingCharacters(in: .whitespaces)
        if let ts = ClusterTime(string: s) { return ts }
        if s.hasPrefix("{"), let doc = try? Document(json: s), let hex = doc["_data"]?.stringValue,
           let ts = ClusterTime(resumeTokenData: hex) {
            return ts
        }
        if s.hasPrefix("82"), s.allSatisfy(\.isHexDigit), let ts = ClusterTime(resumeTokenData: s) { return ts }
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            let f = ISO8601DateFormatter()
            f.formatOptions = options
            if let d = f.date(from: s), d.timeIntervalSince1970 >= 0, d.timeIntervalSince1970 < Double(UInt32.max) {
                return ClusterTime(t: UInt32(d.timeIntervalSince1970.rounded(.down)), i: .max)
            }
        }
        throw ArchiveError.notRestorable(target: text, reason: "not a time: give an ISO 8601 time with a zone (2026-11-22T17:12:00Z), a cluster time T:I, or a resume token", windows: [])
    }

    /// `T:I` plus the UTC time for people.
    public static func describe(_ ts: ClusterTime) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return "\(ts) (\(f.string(from: Date(timeIntervalSince1970: TimeInterval(ts.t)))))"
    }
}

/// A stretch of time the repository can restore to: from a base snapshot's consistent point to
/// the end of the unbroken change log after it.
public struct RestorableWindow: Codable, Equatable, Sendable, CustomStringConvertible {
    public var from: ClusterTime
    public var to: ClusterTime
    /// The base snapshots this window starts from.
    public var snapshots: [String]
    public var description: String {
        from == to ? "\(PointInTimeTarget.describe(from)) (snapshot \(snapshots.joined(separator: ", ")))"
            : "\(PointInTimeTarget.describe(from)) to \(PointInTimeTarget.describe(to))"
    }
}

/// What a restore to a point in time reads: a base snapshot (brought to its consistent point by
/// its own events), then the change log's events after that point up to the target.
public struct RestorePoint: Sendable {
    public var base: Manifest
    public var target: ClusterTime
    /// Change segments to replay after the snapshot, in order. Events at or before the
    /// snapshot's consistent point, or past the target, are skipped by the reader.
    public var changes: [ChangeEntry]
    /// The namespace patterns the change log followed over that stretch (empty: all).
    public var followed: [String]?
}

public enum PointInTime {
    /// Every window, merged where they overlap, oldest first.
    public static func windows(_ repo: Repository) -> [RestorableWindow] {
        let coverage = ChangeLog(repository: repo).coverage().intervals
        var raw: [RestorableWindow] = repo.listBackups().manifests.map { m in
            let t1 = m.clusterTime.end
            let to = extending(t1, coverage)?.to ?? t1
            return RestorableWindow(from: t1, to: max(t1, to), snapshots: [m.id])
        }
        raw.sort { $0.from < $1.from }
        var out: [RestorableWindow] = []
        for w in raw {
            if var last = out.last, w.from <= last.to {
                last.to = max(last.to, w.to)
                last.snapshots.append(contentsOf: w.snapshots)
                out[out.count - 1] = last
            } else {
                out.append(w)
            }
        }
        return out
    }

    /// The unbroken stretch of change log that continues right after `t1` the furthest, if
    /// any. (Two can: after a gap, a new line may start at or before a snapshot whose
    /// consistent point did not move because nothing was written.)
    static func extending(_ t1: ClusterTime, _ coverage: [Coverage]) -> Coverage? {
        coverage.filter { $0.from <= t1.successor && $0.to >= t1 }.max { $0.to < $1.to }
    }

    /// The newest base snapshot whose consistent point is at or before `target` and from which
    /// the change log reaches `target` without a break. Refuses with the restorable windows.
    public static func plan(_ repo: Repository, at target: ClusterTime, requested: String? = nil) throws -> RestorePoint {
        let log = ChangeLog(repository: repo)
        let loaded = log.load()
        let (intervals, breaks) = log.coverage(of: loaded)
        let candidates = repo.listBackups().manifests.filter { $0.clusterTime.end <= target }
            .sorted { $0.clusterTime.end > $1.clusterTime.end }
        for m in candidates {
            let t1 = m.clusterTime.end
            if t1 == target { return RestorePoint(base: m, target: target, changes: [], followed: nil) }
            guard let c = extending(t1, intervals), c.to >= target else { continue }
            let entries = loaded.entries.map(\.entry).filter {
                $0.kind == .segment && $0.sequence >= c.firstSequence && $0.sequence <= c.lastSequence
                    && $0.to > t1 && $0.from <= target
            }
            return RestorePoint(base: m, target: target, changes: entries, followed: c.namespaces)
        }
        let name = requested.map { $0 == target.description ? PointInTimeTarget.describe(target) : "\($0) = \(PointInTimeTarget.describe(target))" }
            ?? PointInTimeTarget.describe(target)
        let windows = PointInTime.windows(repo).map(\.description)
        guard let newest = candidates.first else {
            throw ArchiveError.notRestorable(target: name, reason: "no base snapshot at or before it", windows: windows)
        }
        let t1 = newest.clusterTime.end
        if let b = breaks.first(where: { ($0.after ?? t1) >= t1 && ($0.after ?? t1) < target }) {
            throw ArchiveError.notRestorable(target: name, reason: "the change log after snapshot \(newest.id) breaks at \(b)", windows: windows)
        }
        let reach = extending(t1, intervals).map { "reaches only \(PointInTimeTarget.describe($0.to))" } ?? "has nothing after it"
        throw ArchiveError.notRestorable(target: name, reason: "the change log after snapshot \(newest.id) \(reach)", windows: windows)
    }
}
