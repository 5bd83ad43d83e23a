import Archive
import ArgumentParser
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Read every block of a backup and check every checksum.",
        discussion: """
        Checks each segment's header, every block checksum, decompression, record framing and \
        BSON structure, the footer, and the manifest's whole-file hashes and counts. Exits 6 and \
        names the segment and byte offset of any damage. Without --backup, verifies all backups \
        and the change log (every entry, the chain of entry hashes, every change segment); \
        recorded gaps are listed but are not damage.
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder.", valueName: "dir"))
    var repo: String?

    @Option(help: ArgumentHelp("Backup id (default: every backup).", valueName: "id"))
    var backup: String?

    func run() throws {
        try runReportingErrors {
            guard let path = try repo ?? common.loadPipeline().archive?.repo else {
                throw ValidationError("no repository: give --repo or archive.repo in the pipeline file")
            }
            let repository = try Repository(path: path)
            var reports: [VerifyReport] = []
            let manifests: [Manifest]
            if let backup {
                manifests = [try repository.manifest(backup)]
            } else {
                let listed = repository.listBackups()
                manifests = listed.manifests
                for (id, error) in listed.unreadable {
                    let r = Verifier.unreadable(id: id, in: repository, error: error)
                    reports.append(r)
                    if !common.json { print("\(id): DAMAGED"); for p in r.problems { print("  \(p)") } }
                }
            }
            /// One verification with its progress line, and its result printed unless --json.
            func check(_ name: String, total: Int64?, records: String = "records",
                       _ run: (@escaping (Int64) -> Void) -> (VerifyReport, [ChainBreak])) {
                let progress = ProgressLine("verify", unit: .bytes, enabled: !common.json)
                let (report, gaps) = run { done in progress.update(done: done, total: total, detail: name) }
                progress.finish()
                reports.append(report)
                guard !common.json else { return }
                print("\(name): \(report.ok ? "ok" : "DAMAGED")  \(report.segments) segments, \(report.blocks) blocks, \(report.records) \(records)")
                for p in report.problems { print("  \(p)") }
                for g in gaps { print("  recorded gap: \(g)") }
            }
            for m in manifests {
                check(m.id, total: m.storedBytes) { (Verifier.verify(m, in: repository, progress: $0), []) }
            }
            if backup == nil && !ChangeLog(repository: repository).sequences().isEmpty {
                check("change log", total: nil, records: "events") { Verifier.verifyChangeLog(repository, progress: $0) }
            }
            if common.json { try printJSON(reports) }
            if reports.contains(where: { !$0.ok }) { throw ExitCode(Exit.damaged) }
        }
    }
}
