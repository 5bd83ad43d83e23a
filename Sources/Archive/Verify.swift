import BSON
import Digest
import Foundation

/// What `verify` found in one backup.
public struct VerifyReport: Codable, Sendable {
    public struct Problem: Codable, Sendable, CustomStringConvertible {
        public var segment: String
        public var offset: Int?
        public var reason: String
        public var description: String {
            "\(segment)" + (offset.map { " at offset \($0)" } ?? "") + ": \(reason)"
        }
    }
    public var backup: String
    public var segments: Int
    public var blocks: Int64
    public var records: Int64
    public var bytes: Int64
    public var problems: [Problem]
    public var ok: Bool { problems.isEmpty }
}

/// Reads every block of every segment of a backup: block checksums, decompression, record
/// framing and BSON structure, footers, and the manifest's whole-file hashes and counts.
public enum Verifier {
    /// A backup whose manifest does not load: reported, never skipped.
    public static func unreadable(id: String, in repo: Repository, error: Error) -> VerifyReport {
        VerifyReport(backup: id, segments: 0, blocks: 0, records: 0, bytes: 0,
                     problems: [.init(segment: repo.manifestPath(id), offset: nil, reason: "\(error)")])
    }

    /// `progress` gets the bytes read so far across all of the backup's segments.
    public static func verify(_ manifest: Manifest, in repo: Repository, progress: ((Int64) -> Void)? = nil) -> VerifyReport {
        var report = VerifyReport(backup: manifest.id, segments: 0, blocks: 0, records: 0, bytes: 0, problems: [])
        for n in manifest.namespaces {
            do {
                _ = try n.optionsDocument()
                _ = try n.indexDocuments()
            } catch {
                report.problems.append(.init(segment: repo.manifestPath(manifest.id), offset: nil, reason: "\(error)"))
            }
        }
        check(manifest.allSegments.map { (repo.segmentPath(backup: manifest.id, $0), $0) }, into: &report, progress: progress)
        return report
    }

    /// The change log: every entry loads, the chain of `previous` hashes and sequence numbers
    /// is whole, and every segment is read like a backup's. Recorded gaps are not damage: they
    /// are listed in `gaps`, and `list` shows what they cut from the restorable windows.
    public static func verifyChangeLog(_ repo: Repository, progress: ((Int64) -> Void)? = nil) -> (report: VerifyReport, gaps: [ChainBreak]) {
        let log = ChangeLog(repository: repo)
        var report = VerifyReport(backup: "changes", segments: 0, blocks: 0, records: 0, bytes: 0, problems: [])
        let loaded = log.load()
        let (_, breaks) = log.coverage(checkSegments: true, of: loaded)
        var gaps: [ChainBreak] = []
        for b in breaks {
            if b.reason.hasPrefix("gap ") { gaps.append(b); continue }
            if b.reason.hasPrefix("segment ") { continue }  // reported below, with the path
            report.problems.append(.init(segment: log.entryPath(b.sequence), offset: nil, reason: b.reason))
        }
        let entries = loaded.entries.map(\.entry).filter { $0.kind == .segment }
        check(entries.compactMap { e in e.segment.map { (log.segmentPath(e), $0) } }, into: &report, progress: progress)
        return (report, gaps)
    }

    static func check(_ segments: [(path: String, info: SegmentInfo)], into report: inout VerifyReport, progress: ((Int64) -> Void)?) {
        for (path, s) in segments {
            report.segments += 1
            do {
                let reader = try SegmentReader(path: path)
                var blocks: Int64 = 0
                var records: Int64 = 0
                while let block = try reader.nextBlock() {
                    blocks += 1
                    records += Int64(block.recordCount)
                    var index = 0
                    try block.forEachRecord { raw in
                        do {
                            try Document.validate(raw)
                        } catch {
                            throw ArchiveError.damaged(segment: path, offset: block.offset, reason: "record \(index) of the block: \(error)")
                        }
                        index += 1
                    }
                    progress?(report.bytes + Int64(reader.position))
                }
                report.blocks += blocks
                report.records += records
                report.bytes += Int64(reader.fileSize)
                if reader.fileHash.finalize().hexString != s.sha256 {
                    report.problems.append(.init(segment: path, offset: nil, reason: "file hash differs from the manifest"))
                } else if records != s.records || blocks != s.blocks || Int64(reader.fileSize) != s.size {
                    report.problems.append(.init(segment: path, offset: nil, reason: "counts differ from the manifest"))
                }
            } catch ArchiveError.damaged(let seg, let offset, let reason) {
                report.problems.append(.init(segment: seg, offset: offset, reason: reason))
            } catch {
                report.problems.append(.init(segment: path, offset: nil, reason: "\(error)"))
            }
        }
    }
}
