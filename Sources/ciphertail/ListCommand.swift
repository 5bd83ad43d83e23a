import Archive
import ArgumentParser
import Foundation

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the backups in a repository.",
        discussion: "Shows each backup's id, consistent cluster time, namespaces, documents and sizes. --json prints the manifests.")

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
            if common.json {
                try printJSON(ListOutput(backups: manifests, unreadable: unreadable.map { ["id": $0.id, "error": "\($0.error)"] },
                                         incomplete: repository.incompleteBackupIDs()))
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
        }
    }
}

struct ListOutput: Encodable {
    var backups: [Manifest]
    var unreadable: [[String: String]]
    var incomplete: [String]
}
