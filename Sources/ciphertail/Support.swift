import Archive
import ArgumentParser
import Capture
import Durable
import Erasure
import Export
import FieldCrypto
import Foundation
import KMIPClient
import Logging
import Mongo
import Observability
import Pipeline
import Replication
import Restore

/// Exit codes, documented in `ciphertail --help` and the README.
enum Exit {
    static let unexpected: Int32 = 1
    static let mongo: Int32 = 3
    static let refused: Int32 = 4
    static let notFound: Int32 = 5
    static let damaged: Int32 = 6
    static let fileSystem: Int32 = 7
    static let keys: Int32 = 8
    /// verify-erasure found something (a surviving key, live ciphertext, plaintext, an unreadable segment).
    static let findings: Int32 = 9
    static let usage: Int32 = 64
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Pipeline file to take settings from (flags override it).", valueName: "file"))
    var pipeline: String?

    @Flag(name: .long, help: "Print a JSON result on stdout instead of text.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error.", valueName: "level"))
    var logLevel: String = "notice"

    @Option(name: .long, help: ArgumentHelp("Log format on stderr: auto (text on a terminal, JSON lines otherwise), text, json.", valueName: "format"))
    var logFormat: String = "auto"

    func validate() throws {
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be auto, text or json (not '\(logFormat)')")
        }
    }

    func loadPipeline() throws -> PipelineFile {
        guard let pipeline else { return PipelineFile() }
        return try PipelineFile.load(path: pipeline)
    }

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        let format = LogFormat(rawValue: logFormat) ?? .auto
        return Logger(label: "ciphertail.\(label)") { LogOutput.makeHandler(label: $0, format: format, level: level) }
    }
}

/// Runs a command body and turns known errors into a one-line message and a meaningful exit code.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch let rotated as MasterKeyRotated {
        // rotateMasterKey: true does the rotation and nothing else, as mongod does. The exit
        // status says the command's own work did not run, so a scheduled backup left with
        // the option on fails loudly instead of succeeding without a backup.
        print(rotated.description)
        FileHandle.standardError.write(Data("ciphertail: the master key was rotated (rotateMasterKey); the command itself did not run\n".utf8))
        throw ExitCode(Exit.refused)
    } catch {
        let (code, message) = classify(error)
        FileHandle.standardError.write(Data("ciphertail: error: \(message)\n".utf8))
        throw ExitCode(code)
    }
}

func classify(_ error: Error) -> (Int32, String) {
    switch error {
    case let e as CaptureError:
        if case .eventTooLarge = e { return (Exit.unexpected, e.description) }
        if case .unsupportedRule = e { return (Exit.usage, e.description) }
        if case .changeLogExists = e { return (Exit.refused, e.description) }
        if case .leaseLost = e { return (Exit.refused, e.description) }
        return (Exit.mongo, e.description)
    case let e as RestoreError:
        switch e {
        case .targetNotEmpty: return (Exit.refused, e.description)
        case .unreachable: return (Exit.mongo, e.description)
        case .failed: return (Exit.unexpected, e.description)
        case .undecryptable: return (Exit.keys, e.description)
        }
    case let e as ArchiveError:
        switch e {
        case .unknownBackup, .notARepository, .notRestorable: return (Exit.notFound, e.description)
        case .locked, .claimed: return (Exit.refused, e.description)
        default: return (Exit.damaged, e.description)
        }
    case let e as ExportError:
        switch e {
        case .targetBeforeSnapshot: return (Exit.usage, e.description)
        case .unreplayable: return (Exit.unexpected, e.description)
        case .wrongSegmentKind: return (Exit.damaged, e.description)
        case .undecryptable: return (Exit.keys, e.description)
        }
    case let e as MongodumpArchiveError:
        if case .damaged = e { return (Exit.damaged, e.description) }
        return (Exit.unexpected, e.description)
    case let e as FileError: return (Exit.fileSystem, e.description)
    case let e as PipelineError: return (Exit.usage, e.description)
    case let e as FieldCryptoError:
        switch e {
        case .keyNotFound: return (Exit.notFound, e.description)
        case .keyVault, .masterKey, .masterKeyMismatch, .kms: return (Exit.keys, e.description)
        default: return (Exit.unexpected, e.description)
        }
    case let e as ProtectionError: return (Exit.unexpected, e.description)
    // A re-key that would let the source keys open its result, or write in clear what the
    // source encrypts, or that has nowhere safe to write: the configuration must change.
    case let e as RekeyError: return (Exit.usage, e.description)
    case let e as QueryError: return (Exit.usage, e.description)
    case let e as MongoError: return (Exit.mongo, e.description)
    // The key manager is part of the keys: unreachable, refusing, or a key not Active.
    case let e as KMIPTransportError: return (Exit.keys, e.description)
    case let e as KMIPClientError: return (Exit.keys, e.description)
    case let e as KMIPOptionsError: return (Exit.usage, e.description)
    case let e as PSMDBKeyError:
        if case .request = e { return (Exit.usage, e.description) }
        return (Exit.keys, e.description)
    case let e as ErasureError:
        if case .unknownSubject = e { return (Exit.notFound, e.description) }
        return (Exit.keys, e.description)
    case let e as LedgerError:
        if case .notConfigured = e { return (Exit.usage, e.description) }
        return (Exit.damaged, e.description)
    case let e as KeyVaultBackups.BackupError:
        if case .ledgerRolledBack = e { return (Exit.refused, e.description) }
        return (Exit.damaged, e.description)
    case let e as ReplicationError:
        if case .otherRepository = e { return (Exit.refused, e.description) }
        return (Exit.mongo, e.description)
    case let e as ValidationError: return (Exit.usage, e.message)
    default: return (Exit.unexpected, "\(error)")
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    e.dateEncodingStrategy = .iso8601
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Progress for long work on stderr (stdout may carry a result): on a terminal a bar with
/// percentage, rate and ETA redrawn in place; otherwise a plain line every 10 seconds, such as
/// `backup: 120000/300000 docs (40%), 8.1k docs/s, ETA 22s`. Off (`enabled: false`) under
/// --json. The rendering is Observability's `ProgressMeter`.
final class ProgressLine: @unchecked Sendable {
    private let meter: ProgressMeter
    private let enabled: Bool

    init(_ label: String, unit: ProgressUnit, enabled: Bool) {
        meter = ProgressMeter(label: label, unit: unit, tty: isatty(STDERR_FILENO) == 1)
        self.enabled = enabled
    }

    /// For callers that compose their own text (no count, or counts of their own).
    convenience init(enabled: Bool) {
        self.init("", unit: ProgressUnit(""), enabled: enabled)
    }

    /// `done` of `total` (nil: unknown), with a note such as the namespace.
    func update(done: Int64, total: Int64?, detail: String? = nil) {
        guard enabled, let line = meter.update(done: done, total: total, detail: detail) else { return }
        draw(line)
    }

    /// A line of the caller's text, at the same pace as the others.
    func update(_ text: @autoclosure () -> String, done: Double?, total: Double?) {
        guard enabled, meter.update(done: Int64(done ?? 0), total: nil) != nil else { return }
        var line = text()
        if let done, let total, total > 0 {
            line += String(format: "  %3.0f%%", min(100, 100 * done / total))
        }
        draw(line)
    }

    /// Through the log sink, so a log line written meanwhile first erases the bar.
    private func draw(_ line: String) {
        if meter.tty { LogSink.standardError.drawStatus(line) } else { LogSink.standardError.write(Array((line + "\n").utf8)) }
    }

    func finish() {
        if enabled && meter.tty { LogSink.standardError.clearStatus() }
    }
}

func formatBytes(_ n: Int64) -> String { ProgressMeter.formatBytes(Double(n)) }
