import Archive
import ArgumentParser
import Foundation
import Pipeline

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove base snapshots and change-log entries the retention policy no longer keeps.",
        discussion: """
        Keeps the union of the newest --keep-last base snapshots and every snapshot needed to \
        restore any point of the last --keep-days days (the pipeline's retention section gives \
        the defaults). The newest snapshot always stays, and so does every change-log entry a \
        kept snapshot's restorable window reads: only entries that end at or before the oldest \
        kept snapshot's consistent point go. `ciphertail run` prunes after each scheduled \
        snapshot; this command is for backups scheduled by cron or a systemd timer.

        Crash-safe: the plan is written first (prune.json), each backup loses its manifest \
        before its segments, log entries go oldest first, and an interrupted prune is completed \
        by the next one.

        Examples:
          ciphertail prune --pipeline pipelines/nightly-kmip.yaml --dry-run
          ciphertail prune --repo /srv/ct --keep-last 7 --keep-days 30 --json
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder (default: archive.repo of the pipeline).", valueName: "dir"))
    var repo: String?

    @Option(name: .customLong("keep-last"), help: ArgumentHelp("Keep the newest N base snapshots.", valueName: "n"))
    var keepLast: Int?

    @Option(name: .customLong("keep-days"), help: ArgumentHelp("Keep what restoring any point of the last D days needs.", valueName: "days"))
    var keepDays: Double?

    @Flag(name: .customLong("dry-run"), help: "Print what would be removed; change nothing.")
    var dryRun = false

    func validate() throws {
        if let n = keepLast, n < 1 { throw ValidationError("--keep-last must be at least 1") }
        if let d = keepDays, !(d > 0) { throw ValidationError("--keep-days must be more than 0") }
    }

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            guard let path = repo ?? file.archive?.repo else { throw ValidationError("no repository: give --repo or archive.repo in the pipeline file") }
            let policy = RetentionPolicy(keepLast: keepLast ?? file.retention?.keepLast, keepDays: keepDays ?? file.retention?.keepDays)
            guard policy.keepLast != nil || policy.keepDays != nil else {
                throw ValidationError("no retention policy: give --keep-last and/or --keep-days, or a retention section in the pipeline file")
            }
            let repository = try Repository(path: path)
            let logger = common.makeLogger("prune")
            let plan = dryRun ? Retention.plan(repository, policy: policy)
                : try Retention.prune(repository, policy: policy) { line in logger.notice("\(line)") }
            if common.json {
                try printJSON(PruneOutput(dryRun: dryRun, plan: plan))
            } else {
                let verb = dryRun ? "would remove" : "removed"
                print("kept \(plan.keep.count) base snapshots; \(verb) \(plan.remove.count)" + (plan.remove.isEmpty ? "" : ": \(plan.remove.joined(separator: ", "))"))
                if let below = plan.removeEntriesBelow {
                    print(dryRun ? "would remove change-log entries below \(below)" : "removed \(plan.entriesRemoved) change-log entries (below \(below))")
                }
            }
        }
    }
}

struct PruneOutput: Encodable {
    var dryRun: Bool
    var plan: PrunePlan
}
