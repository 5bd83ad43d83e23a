import BSON
import FieldCrypto
import Foundation
import KMIPClient

/// `verify-erasure`: proves one subject's erasure across the key vault, the key-vault
/// backups, the KMIP server, every backup and change segment of the repositories, and the
/// log files. Any finding fails it; a segment that cannot be read is a finding too.
public struct ErasureVerification {
    public var subject: BSONValue
    public var protector: DocumentProtector
    public var ledger: ErasureLedger
    public var rules: [ProtectionRule]
    public var repositories: [String] = []
    public var logs: [String] = []
    public var canaries: [String] = []
    /// The managed folder (`erase` scrubs it: a key there is a finding).
    public var keyVaultBackups: String?
    /// Other key-vault backups (offline copies): a key there passes when the ledger names
    /// it, since `keys restore` withholds it.
    public var extraKeyVaultBackups: [String] = []
    public var threads: Int?
    /// Bytes of segments scanned and in all, as the scan goes (see `ArchiveScanner.progress`).
    public var progress: (@Sendable (_ scanned: Int64, _ total: Int64) -> Void)?
    /// How findings name the key vault (a path, or servers and namespace without credentials).
    public var keyVaultDescription = "key vault"

    public init(subject: BSONValue, protector: DocumentProtector, ledger: ErasureLedger, rules: [ProtectionRule]) {
        self.subject = subject
        self.protector = protector
        self.ledger = ledger
        self.rules = rules
    }

    public func run() throws -> ErasureReport {
        let started = Date()
        try ledger.load()
        let name = try protector.subjectKeyName(subject)
        let hash = String(name.dropFirst(LedgerEntry.subjectKeyPrefix.count))
        var rows: [ErasureReportRow] = []
        var findings: [ErasureFinding] = []
        func add(_ scope: String, _ check: ErasureFinding.Check, ok: String, _ found: [ErasureFinding]) {
            rows.append(ErasureReportRow(scope: scope, check: check, passed: found.isEmpty, detail: found.isEmpty ? ok : "\(found.count) finding(s)"))
            findings += found
        }

        // (a) The ledger, the vault, the key-vault backups, the KMIP server.
        let entries = ledger.entries(subject: hash)
        let intents = entries.filter { $0.kind == .intent }
        let keys = Set(intents.flatMap { $0.keys.compactMap(UUID.init(uuidString:)) })
        var ledgerFindings: [ErasureFinding] = []
        if intents.isEmpty {
            ledgerFindings.append(ErasureFinding(check: .keys, scope: "erasure ledger", location: ledger.path, detail: "the ledger has no erasure of this subject"))
        } else if !ledger.pendingIntents.filter({ $0.subject == hash }).isEmpty {
            ledgerFindings.append(ErasureFinding(check: .keys, scope: "erasure ledger", location: ledger.path, detail: "the erasure was interrupted: run ciphertail erase again to complete it"))
        }
        add("erasure ledger", .keys, ok: "erased (entries \(entries.map { String($0.seq) }.joined(separator: ", ")))", ledgerFindings)

        let vault = protector.engine.keyVault
        let left = try vault.keys(matching: KeyVaultQuery(ids: Array(keys), altNames: [name]))
        add("key vault", .keys, ok: "no key of the subject", try left.map {
            ErasureFinding(check: .keys, scope: "key vault", location: keyVaultDescription, detail: "data key \(try DataKeyInfo($0).id.keyIdString) of the subject is still there")
        })

        var backupFiles: [(String, Bool)] = keyVaultBackups.map { KeyVaultBackups.list($0).map { ($0, true) } } ?? []
        backupFiles += extraKeyVaultBackups.map { ($0, false) }
        if !backupFiles.isEmpty {
            var found: [ErasureFinding] = []
            var covered = 0
            for (path, managed) in backupFiles {
                do {
                    let (_, docs) = try KeyVaultBackups.read(path)
                    for d in docs where KeyVaultBackups.isErased(d, ids: keys, names: [name]) {
                        if managed || intents.isEmpty {
                            found.append(ErasureFinding(check: .keys, scope: "key-vault backups", location: path,
                                                        detail: "holds data key \((try? DataKeyInfo(d).id.keyIdString) ?? "?") of the subject (run ciphertail erase again to scrub it)"))
                        } else {
                            covered += 1
                        }
                    }
                } catch {
                    found.append(ErasureFinding(check: .unverifiable, scope: "key-vault backups", location: path, detail: "unreadable, so unverified: \(error)"))
                }
            }
            let ok = "\(backupFiles.count) file(s) checked" + (covered > 0 ? "; \(covered) key(s) in offline copies, withheld by the ledger on keys restore" : "")
            add("key-vault backups", .keys, ok: ok, found)
        }

        if let kmip = protector.engine.provider(named: "kmip") as? KMIPKMSProvider {
            var found: [ErasureFinding] = []
            let objects = Set(intents.flatMap { $0.kmipObjects ?? [] })
            for object in objects.sorted() {
                do {
                    let state = try kmip.client.state(object)
                    if state != .destroyed && state != .destroyedCompromised {
                        found.append(ErasureFinding(check: .keys, scope: "KMIP server", location: object, detail: "the subject's KMIP object is \(state), not destroyed"))
                    }
                } catch KMIPClientError.keyNotFound {
                } catch {
                    found.append(ErasureFinding(check: .unverifiable, scope: "KMIP server", location: object, detail: "cannot ask the server: \(error)"))
                }
            }
            do {
                for object in try kmip.client.locate(name: name) where !objects.contains(object) {
                    let state = try kmip.client.state(object)
                    if state != .destroyed && state != .destroyedCompromised {
                        found.append(ErasureFinding(check: .keys, scope: "KMIP server", location: object, detail: "an object named after the subject's key is \(state)"))
                    }
                }
            } catch {
                found.append(ErasureFinding(check: .unverifiable, scope: "KMIP server", location: "locate", detail: "cannot ask the server: \(error)"))
            }
            add("KMIP server", .keys, ok: objects.isEmpty ? "no object of the subject" : "\(objects.count) object(s) of the subject destroyed", found)
        }

        // (b) and (c) The archives and the logs.
        let target = ErasureTarget(subject: subject, subjectHash: hash, erasedKeys: keys, allErasedKeys: ledger.erasedKeyIds,
                                   canaries: canaries, rules: rules)
        let scanner = ArchiveScanner(target: target)
        if let threads { scanner.threads = threads }
        scanner.progress = progress
        let scanStarted = Date()
        let scan = scanner.scan(repositories: repositories, logs: logs)
        let scanSeconds = Date().timeIntervalSince(scanStarted)
        rows += scan.rows
        findings += scan.findings
        return ErasureReport(subjectHash: hash, rows: rows, findings: findings, segments: scan.segments, storedBytes: scan.stored,
                             decompressedBytes: scan.decompressed, otherBytes: scan.other, seconds: Date().timeIntervalSince(started),
                             scanSeconds: scanSeconds)
    }
}
