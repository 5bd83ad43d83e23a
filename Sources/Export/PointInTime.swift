import Archive
import Foundation

/// What an export reads: a snapshot, the cluster time to bring it to, and change segments
/// to replay after the snapshot's own events (the `Exporter`'s inputs).
public struct ExportSource {
    public var base: Manifest
    public var target: ClusterTime
    /// Change segments (record kind 2), full paths, in replay order.
    public var extraEventSegments: [(path: String, info: SegmentInfo)]

    public init(base: Manifest, target: ClusterTime, extraEventSegments: [(path: String, info: SegmentInfo)] = []) {
        self.base = base
        self.target = target
        self.extraEventSegments = extraEventSegments
    }

    /// A backup as it is: at its consistent point, with its own events only.
    public static func snapshot(_ manifest: Manifest) -> ExportSource {
        ExportSource(base: manifest, target: manifest.clusterTime.end)
    }
}

/// The one place `--at` becomes an export source: the change log's plan, as for
/// `restore --at` (the newest base snapshot from which the log reaches the point, and the
/// change segments after it).
public func resolvePointInTime(_ text: String, repository: Repository) throws -> ExportSource {
    let plan = try PointInTime.plan(repository, at: try PointInTimeTarget.parse(text), requested: text)
    let log = ChangeLog(repository: repository)
    return ExportSource(base: plan.base, target: plan.target,
                        extraEventSegments: plan.changes.compactMap { e in e.segment.map { (log.segmentPath(e), $0) } })
}
