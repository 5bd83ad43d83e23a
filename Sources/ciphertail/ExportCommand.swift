import Archive
import ArgumentParser
import Export
import FieldCrypto
import Foundation
import Mongo
import Pipeline

enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
    case mongodumpArchive = "mongodump-archive"
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a backup as a mongodump archive, for mongorestore --archive.",
        discussion: """
        The archive holds the data as of the backup's consistent cluster time: the snapshot \
        with its change events replayed in memory (no MongoDB needed), each collection's \
        options and indexes, views and time series (as their buckets). The file is written \
        under a temporary name and renamed when complete (mode 0600).

        With keys (--key-vault and a master key, or the pipeline's encryption section), \
        protected fields are decrypted; values whose key is missing stay ciphertext and are \
        counted. --keep-encrypted keeps every ciphertext as it is (binary subtype 6, which \
        mongorestore loads unchanged).

        Examples:
          ciphertail export --repo /srv/ct --format mongodump-archive \\
              --out shop.archive
          mongorestore --archive=shop.archive --uri 'mongodb://127.0.0.1:27017'

          ciphertail export --pipeline pipelines/encrypted-backup.yaml \\
              --backup 20261122T020000Z-1a2b3c4d --ns 'shop.*' \\
              --format mongodump-archive --out - | mongorestore --archive ...
          ciphertail export --repo /srv/ct --keep-encrypted \\
              --format mongodump-archive --out sealed.archive
        """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Repository folder.", valueName: "dir"))
    var repo: String?

    @Option(help: ArgumentHelp("Backup id (default: the newest).", valueName: "id"))
    var backup: String?

    @Option(help: ArgumentHelp("Point in time: an ISO 8601 time (the whole second included), a cluster time T:I, or a resume token; the newest backup before it plus the change log (`ciphertail tail`) up to it.", valueName: "time"))
    var at: String?

    @Option(help: ArgumentHelp("Output format: mongodump-archive.", valueName: "format"))
    var format: ExportFormat

    @Option(help: ArgumentHelp("Output file, or - for stdout (then not written atomically).", valueName: "file"))
    var out: String

    @Option(help: ArgumentHelp("Only export namespaces matching db.coll or db.* (repeatable).", valueName: "pattern"))
    var ns: [String] = []

    @OptionGroup var keys: KeyOptions

    @Flag(name: .customLong("keep-encrypted"), help: "Keep protected fields as ciphertext, even with keys.")
    var keepEncrypted = false

    @Flag(help: "Require keys and decrypt protected fields (without this flag, fields are decrypted only when keys are given).")
    var decrypt = false

    @Flag(help: "Fail on the first value that cannot be decrypted instead of keeping it encrypted and counting it.")
    var strict = false

    func validate() throws {
        if decrypt && keepEncrypted { throw ValidationError("--decrypt and --keep-encrypted exclude each other") }
        if out.isEmpty { throw ValidationError("--out needs a file name, or - for stdout") }
        if at != nil && backup != nil { throw ValidationError("--at picks its own base snapshot: give --at or --backup, not both") }
    }

    func run() throws {
        try runReportingErrors {
            let file = try common.loadPipeline()
            guard let repoPath = file.resolve(uri: nil, namespaces: [], repo: repo, level: nil).repo else {
                throw ValidationError("no repository: give --repo or archive.repo in the pipeline file")
            }
            let patterns = try ns.map(NamespacePattern.init)
            let toStdout = out == "-"
            if toStdout && isatty(STDOUT_FILENO) == 1 { throw ValidationError("--out - would write a binary archive to a terminal") }
            var options = ExportOptions()
            options.include = { db, coll in patterns.matches(Namespace(database: db, collection: coll)) }
            options.strict = strict
            options.toolVersion = "ciphertail \(Ciphertail.configuration.version)"
            if !keepEncrypted, let ks = try KeySettings.resolve(file.encryption, keyVault: keys.keyVault, masterKeyFile: keys.masterKeyFile, kmip: keys.kmip.section) {
                options.decryptor = LenientDecryptor(engine: try ks.openEngine(), erasure: try keys.erasure(common, rules: file.encryption?.protectionRules() ?? [])?.1)
            } else if decrypt {
                throw ValidationError("--decrypt needs keys: --key-vault with --master-key-file or --kmip-server-name, or the pipeline's encryption section")
            }
            let repository = try Repository(path: repoPath)
            let source: ExportSource
            if let at {
                source = try resolvePointInTime(at, repository: repository)
            } else {
                source = .snapshot(try backup.map { try repository.manifest($0) } ?? repository.latest())
            }
            let progress = ProgressLine("export", unit: .documents, enabled: !common.json)
            options.progress = { p in
                progress.update(done: p.documents, total: p.expectedDocuments, detail: p.namespace)
            }
            let output: ArchiveOutput = toStdout ? FileDescriptorOutput(fd: STDOUT_FILENO, name: "stdout") : try AtomicFileOutput(path: out)
            let exporter = Exporter(repository: repository, base: source.base, target: source.target,
                                    extraEventSegments: source.extraEventSegments, options: options, logger: common.makeLogger("export"))
            var summary: ExportSummary
            do {
                summary = try exporter.run(to: MongodumpArchiveWriter(output: output))
                try (output as? AtomicFileOutput)?.commit()
            } catch {
                (output as? AtomicFileOutput)?.abort()
                throw error
            }
            progress.finish()
            summary.file = toStdout ? "-" : out
            // With the archive on stdout, the summary goes to stderr.
            let say: (String) -> Void = toStdout ? { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } : { print($0) }
            if common.json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                say(String(decoding: try e.encode(summary), as: UTF8.self))
            } else {
                say("exported backup \(summary.backup) at cluster time \(summary.clusterTime): \(summary.namespaces.count) namespaces, "
                    + "\(summary.documents) documents, \(summary.eventsApplied) events replayed"
                    + (summary.eventsSuperseded > 0 ? " (\(summary.eventsSuperseded) superseded)" : "")
                    + ", \(formatBytes(summary.bytes)) to \(toStdout ? "stdout" : out)")
                for (name, n) in summary.namespaces.sorted(by: { $0.key < $1.key }) {
                    say("  \(name): \(n) documents" + (summary.undecryptable[name].map { "  (\($0) values left encrypted)" } ?? ""))
                }
                if !summary.decrypted && source.base.protectedFields != nil {
                    say("protected fields were written as ciphertext (--keep-encrypted, or no key vault given)")
                }
                for line in summary.undecryptableDetail { say("  cannot decrypt: \(line)") }
            }
        }
    }
}
