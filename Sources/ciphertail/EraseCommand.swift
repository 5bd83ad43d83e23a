import ArgumentParser
import BSON
import Erasure
import FieldCrypto
import Foundation
import Pipeline

/// The subject as the data holds it: the id and its BSON type (the key is chosen by the
/// value's BSON bytes, so "42" and 42 are different subjects).
struct SubjectOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The subject's id: the value of the rule's subject field (for example a userId).", valueName: "id"))
    var subject: String

    @Option(name: .customLong("subject-type"), help: ArgumentHelp("Its BSON type: string (default), int, long, objectId.", valueName: "type"))
    var subjectType = "string"

    func value() throws -> BSONValue {
        switch subjectType {
        case "string": return .string(subject)
        case "int":
            guard let v = Int32(subject) else { throw ValidationError("--subject value is not an int") }
            return .int32(v)
        case "long":
            guard let v = Int64(subject) else { throw ValidationError("--subject value is not a long") }
            return .int64(v)
        case "objectId":
            let digits = Array(subject.utf8)
            let bytes: [UInt8] = stride(from: 0, to: digits.count - 1, by: 2).compactMap { UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16) }
            guard digits.count == 24, bytes.count == 12 else { throw ValidationError("--subject value is not a 24-digit hex ObjectId") }
            return .objectId(ObjectId(bytes: bytes))
        default:
            throw ValidationError("--subject-type must be string, int, long or objectId")
        }
    }
}

/// The erasure stage: keys, the subject hasher, the ledger and the managed key-vault backups.
struct ErasureSetup {
    let protector: DocumentProtector
    let ledger: ErasureLedger
    let keyVaultBackups: String?
    let rules: [ProtectionRule]
    let file: PipelineFile
    let keyVaultDescription: String

    init(common: CommonOptions, keys: KeyOptions, keyVaultBackups flag: String?) throws {
        file = try common.loadPipeline()
        guard let ledger = try keys.ledger(common) else { throw LedgerError.notConfigured }
        self.ledger = ledger
        rules = file.encryption?.protectionRules() ?? []
        let settings = try keys.settings(common)
        keyVaultDescription = settings.keyVault.description
        protector = DocumentProtector(rules: rules, engine: try settings.openEngine())
        keyVaultBackups = flag ?? file.encryption?.keyVaultBackups
    }
}

struct EraseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erase",
        abstract: "Erase a subject everywhere at once by destroying its data keys (crypto-shredding).",
        discussion: """
        Every data key of the subject is destroyed in the key vault (a KMIP object that wrapped \
        only this subject's keys is revoked and destroyed on the server), the key-vault backups \
        in encryption.keyVaultBackups are rewritten without them, and the erasure ledger \
        records it: the keyed hash of the subject id, the key ids, the time and the reason. \
        From then on the subject's values are unreadable in the live cluster, in every backup \
        and change segment, and in replicas; capture never gives the subject a key again.

        The ledger's intent is written (and fsynced) before anything is destroyed, so a crash \
        part-way is completed by the next erase. Erasing an erased subject again succeeds and \
        changes nothing. An unknown subject changes nothing and exits 5.

          ciphertail erase --pipeline pipelines/encrypted-backup.yaml --subject u42 --reason "GDPR art. 17, ticket 118"
          ciphertail erase --pipeline pipelines/encrypted-backup.yaml --subject 1042 --subject-type int --json

        Prove it afterwards with ciphertail verify-erasure. Keep the reason free of personal data: \
        the ledger is kept for good.
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var subject: SubjectOptions
    @OptionGroup var keys: KeyOptions

    @Option(help: ArgumentHelp("Why (a ticket number; no personal data).", valueName: "text"))
    var reason: String?

    @Option(name: .customLong("key-vault-backups"), help: ArgumentHelp("Folder of key-vault backups to scrub (default: encryption.keyVaultBackups).", valueName: "dir"))
    var keyVaultBackups: String?

    func run() throws {
        try runReportingErrors {
            let setup = try ErasureSetup(common: common, keys: keys, keyVaultBackups: keyVaultBackups)
            let eraser = Eraser(protector: setup.protector, ledger: setup.ledger, keyVaultBackups: setup.keyVaultBackups,
                                logger: common.makeLogger("erase"))
            let r = try eraser.erase(subject: try subject.value(), reason: reason)
            if common.json { try printJSON(r); return }
            if !r.completedPending.isEmpty { print("completed \(r.completedPending.count) interrupted erasure(s) first (ledger entries \(r.completedPending.map(String.init).joined(separator: ", ")))") }
            if r.alreadyErased {
                print("subject \(r.subjectHash.prefix(16))… was already erased; nothing left to destroy")
            } else {
                print("erased subject \(r.subjectHash.prefix(16))…: \(r.keys.count) data key(s) destroyed (\(r.keys.joined(separator: ", ")))"
                      + (r.kmipObjects.isEmpty ? "" : ", KMIP object(s) \(r.kmipObjects.joined(separator: ", ")) revoked and destroyed"))
                print("ledger entries \(r.ledgerEntries.map(String.init).joined(separator: ", ")) in \(setup.ledger.path)")
            }
            if !r.scrubbedKeyVaultBackups.isEmpty { print("scrubbed \(r.scrubbedKeyVaultBackups.count) key-vault backup(s)") }
        }
    }
}

struct VerifyErasureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-erasure",
        abstract: "Prove a subject's erasure across keys, every backup and change segment, and the logs.",
        discussion: """
        Checks, with a table per scope and check:
          keys        the ledger records the erasure; no key of the subject is left in the key \
        vault, in the key-vault backups (offline copies pass only because keys restore \
        withholds what the ledger names), or on the KMIP server;
          ciphertext  every encrypted value of the subject's records, in every backup (those \
        taken before the erasure included) and change segment, is under an erased key;
          plaintext   the subject's id appears nowhere but in its subject key field, no canary \
        value appears anywhere (decompressed records, manifests, change log entries, and the \
        log files given, also hex-encoded), and no protected field of the subject is in clear;
          unverifiable  every segment was read whole and matches its recorded hash.
        Any finding exits 9, naming the backup, segment, namespace and field (never the value).

          ciphertail verify-erasure --pipeline pipelines/encrypted-backup.yaml --subject u42
          ciphertail verify-erasure --pipeline p.yaml --subject u42 --repo /srv/ct --repo /mnt/offsite/ct \\
                                    --canary ada@example.com --log /var/log/ciphertail --json
        """)

    @OptionGroup var common: CommonOptions
    @OptionGroup var subject: SubjectOptions
    @OptionGroup var keys: KeyOptions

    @Option(help: ArgumentHelp("Repository to scan (repeatable; default: archive.repo).", valueName: "dir"))
    var repo: [String] = []

    @Option(help: ArgumentHelp("A value of the subject that must appear nowhere, such as an email (repeatable).", valueName: "value"))
    var canary: [String] = []

    @Option(help: ArgumentHelp("A log file or folder the pipeline wrote (repeatable).", valueName: "path"))
    var log: [String] = []

    @Option(name: .customLong("key-vault-backups"), help: ArgumentHelp("Folder of managed key-vault backups (default: encryption.keyVaultBackups).", valueName: "dir"))
    var keyVaultBackups: String?

    @Option(name: .customLong("key-vault-backup"), help: ArgumentHelp("Another key-vault backup file, such as an offline copy (repeatable).", valueName: "file"))
    var keyVaultBackup: [String] = []

    func run() throws {
        try runReportingErrors {
            let setup = try ErasureSetup(common: common, keys: keys, keyVaultBackups: keyVaultBackups)
            var v = ErasureVerification(subject: try subject.value(), protector: setup.protector, ledger: setup.ledger, rules: setup.rules)
            let configuredRepo = setup.file.archive?.repo
            v.repositories = repo.isEmpty ? configuredRepo.map { [$0] } ?? [] : repo
            v.canaries = canary
            v.logs = log
            v.keyVaultBackups = setup.keyVaultBackups
            v.extraKeyVaultBackups = keyVaultBackup
            v.keyVaultDescription = setup.keyVaultDescription
            let progress = ProgressLine("verify-erasure", unit: .bytes, enabled: !common.json)
            v.progress = { scanned, total in progress.update(done: scanned, total: total) }
            let report = try v.run()
            progress.finish()
            if common.json {
                try printJSON(report)
            } else {
                let width = max(12, report.rows.map(\.scope.count).max() ?? 0)
                print("subject \(report.subjectHash.prefix(16))…")
                print("scope".padding(toLength: width, withPad: " ", startingAt: 0) + "  check         result  detail")
                for r in report.rows {
                    print(r.scope.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + r.check.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)
                          + "  " + (r.passed ? "pass  " : "FAIL  ") + "  " + r.detail)
                }
                for f in report.findings { print("finding: \(f)") }
                let rate = report.scanSeconds > 0 ? Double(report.storedBytes) / report.scanSeconds / 1_048_576 : 0
                print(String(format: "%d segments, %@ stored, %@ decompressed, scanned in %.1f s (%.0f MiB/s of archive), %.1f s in all: ", report.segments,
                             formatBytes(report.storedBytes), formatBytes(report.decompressedBytes), report.scanSeconds, rate, report.seconds)
                      + (report.passed ? "erasure verified" : "\(report.findings.count) finding(s): NOT verified"))
            }
            if !report.passed { throw ExitCode(Exit.findings) }
        }
    }
}
