import BSON
import FieldCrypto
import Foundation
import KMIP
import KMIPClient
import Logging
import Metrics

public enum ErasureError: Error, CustomStringConvertible {
    /// No data key of this subject exists and the ledger never erased it: probably a typo in
    /// the id (or a subject with no protected data). Nothing was written.
    case unknownSubject(subjectHash: String)
    case kmip(object: String, problem: String)

    public var description: String {
        switch self {
        case .unknownSubject(let h):
            return "no data key of this subject (subject hash \(h.prefix(16))…) in the key vault, and the erasure ledger has no entry for it: nothing erased, ledger unchanged (check the id and its --subject-type)"
        case let .kmip(object, problem):
            return "KMIP object \(object): \(problem)"
        }
    }
}

public struct EraseResult: Codable, Equatable, Sendable {
    /// The keyed hash of the subject id (what the ledger stores).
    public var subjectHash: String
    public var keys: [String]
    public var kmipObjects: [String]
    /// The subject had been erased before: nothing was left to destroy.
    public var alreadyErased: Bool
    /// Ledger sequence numbers of interrupted erasures this run completed.
    public var completedPending: [Int]
    public var scrubbedKeyVaultBackups: [String]
    /// The ledger entries written: intent and erased.
    public var ledgerEntries: [Int]
}

/// Crypto-shredding of one subject: its data keys are destroyed in the key vault (and, for
/// a KMIP object that wrapped only this subject's keys, revoked and destroyed on the
/// server), the managed key-vault backups are scrubbed, and the ledger records it.
///
/// Order, for crash safety: the ledger's `intent` (fsynced) comes first, so from then on
/// every job treats the keys as erased; then the destruction; then the `erased` entry. A run
/// that finds an intent without its `erased` entry repeats the destruction (each step is
/// idempotent) and completes it.
public final class Eraser {
    /// Counter of subjects erased (equal to Observability's `MetricName.erasures`; a test checks it).
    public static let erasuresMetric = "ciphertail_erasures_total"

    public let protector: DocumentProtector
    public let ledger: ErasureLedger
    public let keyVaultBackups: String?
    let logger: Logger
    /// Test seam: runs after the keys are destroyed and before the ledger records it, to
    /// stand in for a crash at that point.
    var afterDestroy: (() throws -> Void)?

    public init(protector: DocumentProtector, ledger: ErasureLedger, keyVaultBackups: String?, logger: Logger) {
        self.protector = protector
        self.ledger = ledger
        self.keyVaultBackups = keyVaultBackups
        self.logger = logger
    }

    var vault: any KeyVault { protector.engine.keyVault }

    /// The keyed hash that stands for this subject id in the ledger and in reports.
    public func subjectHash(_ subject: BSONValue) throws -> String {
        String(try protector.subjectKeyName(subject).dropFirst(LedgerEntry.subjectKeyPrefix.count))
    }

    /// Finishes every erasure a crash interrupted. Returns their intent sequence numbers.
    @discardableResult
    public func completePending() throws -> [Int] {
        try ledger.load()
        var done: [Int] = []
        for intent in ledger.pendingIntents {
            logger.warning("completing an erasure that was interrupted", metadata: ["ledgerEntry": "\(intent.seq)", "subjectHash": "\(intent.subject.prefix(16))"])
            try destroy(keys: intent.keys.compactMap(UUID.init(uuidString:)), kmipObjects: intent.kmipObjects ?? [])
            try afterDestroy?()
            try scrubBackups()
            try ledger.append(ErasureLedger.draft(.erased, subject: intent.subject, keys: intent.keys.compactMap(UUID.init(uuidString:)),
                                                  kmipObjects: intent.kmipObjects, intent: intent.seq))
            done.append(intent.seq)
            // The interrupted run never got to count it.
            Counter(label: Self.erasuresMetric).increment()
        }
        return done
    }

    public func erase(subject: BSONValue, reason: String?) throws -> EraseResult {
        let completed = try completePending()
        let name = try protector.subjectKeyName(subject)
        let hash = String(name.dropFirst(LedgerEntry.subjectKeyPrefix.count))
        try vault.reload()
        let keys = try vault.keys(matching: KeyVaultQuery(altNames: [name]))
        let infos = try keys.map(DataKeyInfo.init)
        if infos.isEmpty {
            guard ledger.entries(subject: hash).contains(where: { $0.kind == .erased }) else {
                throw ErasureError.unknownSubject(subjectHash: hash)
            }
            // Idempotent: nothing is left; the backups are checked once more.
            let scrubbed = try scrubBackups()
            return EraseResult(subjectHash: hash, keys: [], kmipObjects: [], alreadyErased: true, completedPending: completed,
                               scrubbedKeyVaultBackups: scrubbed, ledgerEntries: [])
        }
        let ids = infos.map(\.id)
        let objects = try ownKMIPObjects(of: keys, ids: Set(ids))
        let intent = try ledger.append(ErasureLedger.draft(.intent, subject: hash, keys: ids, kmipObjects: objects.isEmpty ? nil : objects, reason: reason))
        logger.notice("erasing a subject", metadata: ["subjectHash": "\(hash.prefix(16))", "keys": "\(ids.map(\.keyIdString))", "ledgerEntry": "\(intent.seq)"])
        try destroy(keys: ids, kmipObjects: objects)
        try afterDestroy?()
        let scrubbed = try scrubBackups()
        let done = try ledger.append(ErasureLedger.draft(.erased, subject: hash, keys: ids, kmipObjects: objects.isEmpty ? nil : objects, intent: intent.seq))
        Counter(label: Self.erasuresMetric).increment()
        return EraseResult(subjectHash: hash, keys: ids.map(\.keyIdString), kmipObjects: objects, alreadyErased: false,
                           completedPending: completed, scrubbedKeyVaultBackups: scrubbed, ledgerEntries: [intent.seq, done.seq])
    }

    /// KMIP objects that wrap these keys and no other key of the vault: the subject's own,
    /// destroyed with it. The shared master key is never one of them.
    func ownKMIPObjects(of keys: [Document], ids: Set<UUID>) throws -> [String] {
        var wrapping = Set<String>()
        for k in keys {
            if case .document(let mk)? = k["masterKey"], mk["provider"] == "kmip", let id = mk["keyId"]?.stringValue { wrapping.insert(id) }
        }
        guard !wrapping.isEmpty else { return [] }
        let configured = (protector.engine.provider(named: "kmip") as? KMIPKMSProvider)?.keyIdentifier
        wrapping.remove(configured ?? "")
        for k in try vault.allKeys() {
            guard let info = try? DataKeyInfo(k), !ids.contains(info.id) else { continue }
            if case .document(let mk)? = k["masterKey"], let id = mk["keyId"]?.stringValue { wrapping.remove(id) }
        }
        return wrapping.sorted()
    }

    private func destroy(keys: [UUID], kmipObjects: [String]) throws {
        let n = try vault.delete(ids: keys)
        logger.info("data keys destroyed in the key vault", metadata: ["destroyed": "\(n)", "named": "\(keys.count)"])
        if !kmipObjects.isEmpty {
            guard let kmip = protector.engine.provider(named: "kmip") as? KMIPKMSProvider else {
                throw ErasureError.kmip(object: kmipObjects[0], problem: "the subject's keys are wrapped by their own KMIP object, but no KMIP server is configured to destroy it")
            }
            for object in kmipObjects { try Self.revokeAndDestroy(object, client: kmip.client) }
        }
        try protector.engine.dropKeyCache()
    }

    /// Revoke (cessation of operation), then destroy; an object already gone counts as done.
    /// A revoke the server refuses (an earlier, interrupted run already revoked it) is
    /// reported only if the destroy fails too.
    static func revokeAndDestroy(_ object: String, client: KMIPClient) throws {
        var revokeError: Error?
        do {
            try client.revoke(object, reason: .cessationOfOperation, message: "erased by ciphertail (right to erasure)")
        } catch KMIPClientError.keyNotFound {
            return
        } catch {
            revokeError = error
        }
        do {
            try client.destroy(object)
        } catch KMIPClientError.keyNotFound {
        } catch {
            throw ErasureError.kmip(object: object, problem: "destroy failed: \(error)" + (revokeError.map { "; revoke failed: \($0)" } ?? ""))
        }
    }

    @discardableResult
    private func scrubBackups() throws -> [String] {
        guard let folder = keyVaultBackups else { return [] }
        return try KeyVaultBackups.scrub(folder, ledger: ledger)
    }
}
