import Archive
import ArgumentParser
import FieldCrypto
import Foundation
import Pipeline
import Restore

struct RekeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rekey",
        abstract: "Rewrite a whole repository under new data keys and a new master key.",
        discussion: """
        Reads every backup of --repo, decrypts its protected values with the source keys \
        (--pipeline, or --key-vault with --master-key-file or --kmip-*), encrypts them again \
        under new data keys in the target key vault, wrapped by the target master key, and \
        writes the result into --to-repo: same backup ids, cluster times and change events, \
        so every backup restores to the same point. The target pipeline file's encryption: \
        section gives the target rules, key vault and master key (local or KMIP); create the \
        target keys first with `ciphertail keys init --pipeline TARGET.yaml`.

        The source repository is only read. The target key vault must not be the source's. \
        Values the source keys cannot open (an erased subject) are kept as they were and \
        counted: they stay unreadable. A field the source encrypts must be encrypted by the \
        target rules too (exit 64 otherwise). Each backup appears in --to-repo once it is \
        whole; a run cut short is finished by running it again. Every re-keyed backup is \
        verified at the end (exit 6 on damage). The old repository stays readable with the \
        old keys until you delete it or destroy those keys (docs/SECURITY.md, "Re-keying").

        Examples:
          ciphertail keys init --pipeline new-keys.yaml
          ciphertail rekey --repo /srv/ct --to-repo /srv/ct-new \\
              --pipeline old-keys.yaml --to-pipeline new-keys.yaml
          ciphertail rekey --repo /srv/ct --to-repo /srv/ct-new \\
              --key-vault /keys/old-vault --master-key-file /keys/old.key \\
              --to-pipeline kmip-keys.yaml --json
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Source repository (default: archive.repo of --pipeline). Only read.", valueName: "dir"))
    var repo: String?

    @Option(name: .customLong("to-repo"), help: ArgumentHelp("Destination: an absent or empty folder, or one an interrupted re-key of the same source left (default: archive.repo of --to-pipeline).", valueName: "dir"))
    var toRepo: String?

    @Option(name: .customLong("to-pipeline"), help: ArgumentHelp("Pipeline file whose encryption: section gives the target rules, key vault and master key.", valueName: "file"))
    var toPipeline: String

    @OptionGroup var keys: KeyOptions

    func run() throws {
        try runReportingErrors {
            let sourceFile = try common.loadPipeline()
            let targetFile = try PipelineFile.load(path: toPipeline)
            guard let repo = repo ?? sourceFile.archive?.repo else {
                throw ValidationError("no source repository: give --repo or archive.repo in the --pipeline file")
            }
            guard let toRepo = toRepo ?? targetFile.archive?.repo else {
                throw ValidationError("no destination: give --to-repo or archive.repo in the --to-pipeline file")
            }
            let source = try keys.settings(common)
            let logger = common.makeLogger("rekey")
            let (reprotector, poller) = try makeReprotector(source: source, targetFile: targetFile, targetPath: toPipeline, common: common)
            defer { poller?.cancel() }

            let rekeyer = RepositoryRekeyer(source: repo, destination: toRepo, reprotector: reprotector, logger: logger)
            let progress = ProgressLine("rekey", unit: .records, enabled: !common.json)
            rekeyer.progress = { p in
                progress.update(done: p.records, total: p.expectedRecords, detail: "\(p.backup) (\(p.backupIndex)/\(p.backups))")
            }
            let summary = try rekeyer.run()
            progress.finish()

            // What was written is read back whole before the run counts as done.
            let destination = try Repository(path: toRepo)
            var verified: [VerifyReport] = []
            for id in summary.backups + summary.skipped {
                let manifest = try destination.manifest(id)
                let check = ProgressLine("verify", unit: .bytes, enabled: !common.json)
                verified.append(Verifier.verify(manifest, in: destination) { done in
                    check.update(done: done, total: manifest.storedBytes, detail: id)
                })
                check.finish()
            }
            if !ChangeLog(repository: try Repository(path: summary.destination)).sequences().isEmpty {
                verified.append(Verifier.verifyChangeLog(try Repository(path: summary.destination)).report)
            }
            if common.json {
                try printJSON(RekeyOutput(summary, verified: verified))
            } else {
                print("re-keyed \(summary.backups.count) backups into \(summary.destination)"
                      + (summary.skipped.isEmpty ? "" : " (\(summary.skipped.count) already there)")
                      + ": \(summary.segments) segments, \(summary.records) records (\(summary.documents) documents, \(summary.events) events)"
                      + (summary.changeEntries > 0 ? ", \(summary.changeEntries) change log entries" : ""))
                for ns in Set(summary.valuesReencrypted.keys).union(summary.undecryptable.keys).sorted() {
                    print("  \(ns): \(summary.valuesReencrypted[ns] ?? 0) values re-encrypted"
                          + (summary.undecryptable[ns].map { ", \($0) left as they were (the source keys cannot open them)" } ?? ""))
                }
                for line in summary.undecryptableDetail { print("  cannot decrypt: \(line)") }
                for r in verified {
                    print("verify \(r.backup): \(r.ok ? "ok" : "DAMAGED")")
                    for p in r.problems { print("  \(p)") }
                }
            }
            if verified.contains(where: { !$0.ok }) {
                FileHandle.standardError.write(Data("ciphertail: error: a re-keyed backup does not verify\n".utf8))
                throw ExitCode(Exit.damaged)
            }
        }
    }
}

/// `rekey --json`: the summary, and the verification of each re-keyed backup.
struct RekeyOutput: Encodable {
    var source: String
    var destination: String
    var backups: [String]
    var skipped: [String]
    var segments: Int
    var changeEntries: Int
    var changeSegments: Int
    var records: Int64
    var documents: Int64
    var events: Int64
    var valuesReencrypted: [String: Int64]
    var undecryptable: [String: Int]
    var undecryptableDetail: [String]
    var seconds: Double
    var verified: [Verified]

    struct Verified: Encodable {
        var backup: String
        var ok: Bool
        var problems: [String]
    }

    init(_ s: RekeySummary, verified reports: [VerifyReport]) {
        source = s.source
        destination = s.destination
        backups = s.backups
        skipped = s.skipped
        segments = s.segments
        changeEntries = s.changeEntries
        changeSegments = s.changeSegments
        records = s.records
        documents = s.documents
        events = s.events
        valuesReencrypted = s.valuesReencrypted
        undecryptable = s.undecryptable
        undecryptableDetail = s.undecryptableDetail
        seconds = s.seconds
        verified = reports.map { Verified(backup: $0.backup, ok: $0.ok, problems: $0.problems.map(\.description)) }
    }
}

/// Source keys to decrypt, the target pipeline's rules and keys to encrypt again: shared by
/// `rekey` and `restore --rekey`. Refuses a target that the source keys could open.
func makeReprotector(source: KeySettings, targetFile: PipelineFile, targetPath: String,
                     common: CommonOptions, sourceErasure: ErasureTreatment? = nil) throws -> (Reprotector, KMIPStatePoller?) {
    guard let target = try KeySettings.resolve(targetFile.encryption, keyVault: nil, masterKeyFile: nil) else {
        throw ValidationError("\(targetPath) names no key vault and master key (encryption.keyVault, encryption.masterKey)")
    }
    let rules = targetFile.encryption?.protectionRules() ?? []
    guard !rules.isEmpty else {
        throw ValidationError("\(targetPath) has no encryption.rules: a re-key would write every protected field in clear")
    }
    // The source keys must not be able to open the result: its keys live elsewhere.
    if target.keyVault.isSameVault(as: source.keyVault) { throw RekeyError.sameKeyVault(target.keyVault.description) }
    if let a = source.masterKeyFile, let b = target.masterKeyFile, KeySource.file(a).isSameVault(as: .file(b)) {
        common.makeLogger("rekey").warning("the target uses the source's master key file: whoever holds it and the target key vault can read the result")
    }
    let sourceEngine = try source.openEngine()
    let targetEngine = try target.openEngine()
    // A KMIP target key withdrawn during a long re-key stops it, as it stops a backup.
    let poller = target.startKeyStatePolling(targetEngine, logger: common.makeLogger("kmip"))
    let reprotector = Reprotector(source: LenientDecryptor(engine: sourceEngine, erasure: sourceErasure),
                                  target: DocumentProtector(rules: rules, engine: targetEngine))
    do {
        try reprotector.checkSeparateKeyVaults()
    } catch {
        poller?.cancel()
        throw error
    }
    return (reprotector, poller)
}
