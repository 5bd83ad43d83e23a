import Archive
import ArgumentParser
import Foundation

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the backups, the change log and the restorable windows of a repository.",
        discussion: """
        Shows each backup's id, consistent cluster time, namespaces, documents and sizes; the \
        change log's covered stretches and gaps; and the windows a point-in-time restore \
        (restore --at) can reach: from a base snapshot's consistent point to the end of the \
        unbroken change log after it. --json prints the manifests, the coverage and the windows.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder.", valueName: "dir"))
    var repo: String?

    func run() throws {
        try runReportingErrors {
            guard let path = try repo ?? common.loadPipeline().archive?.repo else {
                throw ValidationError("no repository: give --repo or archive.repo in the pipeline file")
            }
            let repository = try Repository(path: path)
            let (manifests, unreadable) = repository.listBackups()
            let coverage = ChangeLog(repository: repository).coverage()
            let windows = PointInTime.windows(repository)
            if common.json {
                try printJSON(ListOutput(backups: manifests, unreadable: unreadable.map { ["id": $0.id, "error": "\($0.error)"] },
                                         incomplete: repository.incompleteBackupIDs(), changeLog: coverage.intervals,
                                         breaks: coverage.breaks, windows: windows))
                return
            }
            if manifests.isEmpty { print("no backups in \(repository.path)") }
            for m in manifests {
                let ratio = m.rawBytes > 0 ? Double(m.rawBytes) / Double(max(m.storedBytes, 1)) : 0
                print("\(m.id)  consistent at \(m.clusterTime.end)  \(m.namespaces.count) namespaces  \(m.documentCount) documents  "
                      + "\(m.events.count) events  \(formatBytes(m.rawBytes)) -> \(formatBytes(m.storedBytes)) (\(String(format: "%.1fx", ratio)))")
                for n in m.namespaces {
                    print("    \(n.namespace)  \(n.type)  \(n.documents) documents  \(n.indexes.count) indexes")
                }
            }
            for (id, error) in unreadable { print("\(id)  UNREADABLE: \(error)") }
            for id in repository.incompleteBackupIDs() { print("\(id)  incomplete (interrupted; not restorable)") }
            if !coverage.intervals.isEmpty || !coverage.breaks.isEmpty {
                print("change log:")
                for c in coverage.intervals {
                    print("    \(PointInTimeTarget.describe(c.from)) to \(PointInTimeTarget.describe(c.to))  entries \(c.firstSequence)-\(c.lastSequence)")
                }
                for b in coverage.breaks { print("    break at \(b)") }
            }
            if !windows.isEmpty {
                print("restorable (restore --at):")
                for w in windows { print("    \(w)") }
            }
        }
    }
}

struct ListOutput: Encodable {
    var backups: [Manifest]
    var unreadable: [[String: String]]
    var incomplete: [String]
    var changeLog: [Coverage]
    var breaks: [ChainBreak]
    var windows: [RestorableWindow]
}
