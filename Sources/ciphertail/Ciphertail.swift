import ArgumentParser

@main
struct Ciphertail: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ciphertail",
        abstract: "Encrypted logical backup and replication sidecar for MongoDB.",
        discussion: """
        A backup is a consistent logical copy: every document of the chosen collections, their \
        options and indexes, plus the change events that happened while the copy ran, so that a \
        restore brings the data to one cluster time. Backups live in a repository folder of \
        zstd-compressed, checksummed segments (docs/FORMAT.md).

        Typical session:
          ciphertail backup  --uri mongodb://127.0.0.1:27017/?replicaSet=rs0 --repo /srv/ct --ns shop.*
          ciphertail list    --repo /srv/ct
          ciphertail verify  --repo /srv/ct
          ciphertail restore --repo /srv/ct --uri mongodb://... --ns-from shop.* --ns-to shop_copy.*
          ciphertail rekey   --repo /srv/ct --to-repo /srv/ct-new --pipeline old.yaml --to-pipeline new.yaml
          ciphertail export  --repo /srv/ct --format mongodump-archive --out shop.archive
          ciphertail erase   --pipeline p.yaml --subject u42 --reason "GDPR request 2026-118"
          ciphertail verify-erasure --pipeline p.yaml --subject u42 --canary ada@example.com

        As a sidecar, one long-running process per pipeline (lease, capture, scheduled base \
        snapshots, retention, replication, /metrics and /healthz):
          ciphertail run       --pipeline pipelines/continuous-backup.yaml
          ciphertail prune     --pipeline pipelines/nightly-kmip.yaml --dry-run
          ciphertail replicate --pipeline p.yaml --target-uri mongodb://dr:27017/?replicaSet=dr

        Settings can come from a pipeline file (pipelines/*.yaml, --pipeline FILE); flags win.

        Exit codes: 0 success, 1 unexpected error, 3 MongoDB unreachable or unsuitable, \
        4 refused (target not empty), 5 not found (backup id, repository), 6 damaged archive, \
        7 file system error (not writable, disk full), 8 key problem (key vault or master key \
        refused, wrong master key), 9 verify-erasure findings, 64 bad usage or configuration.
        """,
        version: "0.1.0 (archive format 1)",
        subcommands: [BackupCommand.self, TailCommand.self, RestoreCommand.self, ExportCommand.self, RekeyCommand.self, ListCommand.self, VerifyCommand.self, KeysCommand.self, FindCommand.self, KmipCommand.self,
                      EraseCommand.self, VerifyErasureCommand.self, RunCommand.self, PruneCommand.self, ReplicateCommand.self])
}
