import BSON
import Mongo
import Foundation

/// Why a re-key cannot go on. Messages name namespaces, `_id`s, field paths, key ids and key
/// vaults; never a value.
public enum RekeyError: Error, CustomStringConvertible, Equatable {
    /// The target key vault is the source's: the source keys could open the result.
    case sameKeyVault(String)
    /// The two vaults hold keys with the same id (one is a copy of the other).
    case sharedDataKeys(count: Int, example: UUID)
    /// A value that is ciphertext in the source would be written in clear: the target rules
    /// do not encrypt its path.
    case wouldExposePlaintext(namespace: String, id: String, path: String)
    /// A backup encrypts a field the target rules do not (found before anything is written).
    case targetRulesMissField(backup: String, namespace: String, field: String)
    /// The target rules cover a time series namespace (their buckets cannot have field rules).
    case unsupportedNamespace(namespace: String, reason: String)
    /// The destination cannot take this re-key.
    case destination(path: String, reason: String)

    public var description: String {
        switch self {
        case .sameKeyVault(let v):
            return "the target key vault is the source key vault (\(v)): the source keys could open the result; give the target its own key vault"
        case let .sharedDataKeys(n, example):
            return "the target key vault holds \(n) data keys that are also in the source key vault (for example \(example.uuidString.lowercased())): "
                + "it is a copy of the source vault, whose keys could open the result; run keys init for a new target vault"
        case let .wouldExposePlaintext(ns, id, path):
            return "\(ns) _id \(id): field \(path) is encrypted in the source but the target rules do not encrypt it; "
                + "refusing to write it in clear (add the path to the target pipeline's encryption.rules)"
        case let .targetRulesMissField(backup, ns, field):
            return "backup \(backup) encrypts field \(field) of \(ns), which the target rules do not encrypt: "
                + "the re-keyed repository would hold it in clear (add it to the target pipeline's encryption.rules)"
        case let .unsupportedNamespace(ns, reason):
            return "target rule for \(ns): \(reason)"
        case let .destination(path, reason):
            return "\(path): \(reason)"
        }
    }
}

/// Opens values with the source keys and seals them again under the target's: the target
/// rules decide what is encrypted, and per-subject keys are named and created in the target
/// vault (its own subject-hash key), so the result shares no data key with the source.
///
/// A value the source cannot decrypt (its key is gone: an erased subject, or a value from
/// elsewhere) stays exactly as it was, old ciphertext under the old key id: `protect` leaves
/// subtype-6 values alone. The target vault does not hold that key, so a re-key never makes
/// an erased value readable. And a value that was ciphertext in the source is never written
/// in clear: every result is checked, and a path the target rules do not cover fails the
/// call (`RekeyError.wouldExposePlaintext`).
public final class Reprotector: @unchecked Sendable {
    public let source: LenientDecryptor
    public let target: DocumentProtector

    public init(source: LenientDecryptor, target: DocumentProtector) {
        self.source = source
        self.target = target
    }

    /// Re-protects documents of one namespace: one batched decryption, one batched
    /// encryption. Each result comes with the values that stayed as they were because the
    /// source keys could not open them.
    public func reprotect(batch docs: [Document], database: String, collection: String) throws -> [(Document, [DecryptFailure])] {
        let opened = source.decrypt(batch: docs, namespace: "\(database).\(collection)")
        let sealed = try target.protect(batch: opened.map(\.0), database: database, collection: collection)
        let ns = "\(database).\(collection)"
        for (before, after) in zip(docs, sealed) { try Reprotector.refuseExposure(before: before, after: after, namespace: ns) }
        return zip(sealed, opened).map { ($0, $1.1) }
    }

    /// Re-protects a change event: the whole event is decrypted (full document, pre-image,
    /// updated fields), then protected as the capture does (`protectEvent`). Entries the
    /// source capture had dropped stay counted in `ciphertailDroppedFields`, added to any the
    /// target drops now.
    public func reprotectEvent(_ event: Document) throws -> (Document, [DecryptFailure]) {
        let (opened, failures) = source.decrypt(event)
        var input = opened
        var droppedBefore: Int32 = 0
        if let desc = opened["updateDescription"]?.documentValue, let n = desc["ciphertailDroppedFields"] {
            droppedBefore = Int32(truncatingIfNeeded: n.int64Value ?? 0)
            input = opened.setting("updateDescription", .document(desc.removing(["ciphertailDroppedFields"])))
        }
        var sealed = try target.protectEvent(input)
        if droppedBefore > 0, let desc = sealed["updateDescription"]?.documentValue {
            let now = Int32(truncatingIfNeeded: desc["ciphertailDroppedFields"]?.int64Value ?? 0)
            sealed = sealed.setting("updateDescription", .document(desc.setting("ciphertailDroppedFields", .int32(droppedBefore &+ now))))
        }
        let ns = event["ns"]?.documentValue.map { "\($0["db"]?.stringValue ?? "").\($0["coll"]?.stringValue ?? "")" } ?? "?"
        try Reprotector.refuseExposure(before: event, after: sealed, namespace: ns, idFrom: event["documentKey"]?.documentValue)
        return (sealed, failures)
    }

    /// Refuses a target key vault that shares data keys with the source's (a copy of it):
    /// the source keys could then open what the re-key writes. Every target key id is looked
    /// up in the source vault, 1,000 at a time.
    public func checkSeparateKeyVaults() throws {
        let ids = try target.engine.keyVault.allKeys().map { try DataKeyInfo($0).id }
        var shared: [UUID] = []
        var start = 0
        while start < ids.count {
            let chunk = Array(ids[start..<min(start + 1000, ids.count)])
            shared += try source.engine.keyVault.keys(matching: KeyVaultQuery(ids: chunk, altNames: [])).map { try DataKeyInfo($0).id }
            start += chunk.count
        }
        if let first = shared.first { throw RekeyError.sharedDataKeys(count: shared.count, example: first) }
    }

    /// Every place that held ciphertext before must hold ciphertext after (the same value,
    /// the new one, or an encrypted ancestor), or be gone (an entry the target dropped).
    static func refuseExposure(before: Document, after: Document, namespace: String, idFrom: Document? = nil) throws {
        guard before.contains(binarySubtype: 6) else { return }
        var path: [String] = []
        func walk(_ value: BSONValue) throws {
            switch value {
            case .binary(6, _):
                if exposed(after, path) {
                    throw RekeyError.wouldExposePlaintext(namespace: namespace, id: DocumentProtector.idString(idFrom ?? after), path: path.joined(separator: "."))
                }
            case .document(let d):
                for (k, v) in d.elements { path.append(k); try walk(v); path.removeLast() }
            case .array(let items):
                for (i, v) in items.enumerated() { path.append(String(i)); try walk(v); path.removeLast() }
            default: break
            }
        }
        try walk(.document(before))
    }

    /// True when `path` leads to a value that is neither ciphertext nor inside ciphertext.
    private static func exposed(_ doc: Document, _ path: [String]) -> Bool {
        var current: BSONValue = .document(doc)
        for part in path {
            switch current {
            case .binary(6, _): return false
            case .document(let d):
                guard let next = d[part] else { return false }
                current = next
            case .array(let items):
                guard let i = Int(part), items.indices.contains(i) else { return false }
                current = items[i]
            default: return true  // the structure changed under a value that was encrypted: treat as exposed
            }
        }
        if case .binary(6, _) = current { return false }
        return true
    }
}

extension KeySource {
    /// The same key vault, however it is written: a file by its device and inode (a link or
    /// another spelling of the path is the same file), a collection by its namespace and its
    /// set of hosts. Vaults that only look different (another host name for the same server)
    /// are caught by `Reprotector.checkSeparateKeyVaults`, which compares the keys themselves.
    public func isSameVault(as other: KeySource) -> Bool {
        switch (self, other) {
        case (.file(let a), .file(let b)):
            var sa = stat(), sb = stat()
            if stat(a, &sa) == 0 && stat(b, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
            return (a as NSString).standardizingPath == (b as NSString).standardizingPath
        case (.collection(let ca, let na), .collection(let cb, let nb)):
            func hosts(_ c: ConnectionString) -> Set<String> {
                Set(c.hosts.lowercased().split(separator: ",").map { h in
                    let s = h.trimmingCharacters(in: .whitespaces)
                    return s.contains(":") ? s : s + ":27017"
                })
            }
            return na == nb && hosts(ca) == hosts(cb)
        default:
            return false
        }
    }
}
