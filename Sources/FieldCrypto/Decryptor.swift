import BSON
import Foundation

/// One value that could not be decrypted: which key and which field, never the value.
public struct DecryptFailure: Hashable, Sendable, CustomStringConvertible {
    public let keyId: String
    public let path: String
    public let reason: String
    public var description: String { "field \(path) (data key \(keyId)): \(reason)" }
}

/// Decrypts whole documents; a value whose key is missing or whose ciphertext fails its
/// check stays as it is (ciphertext) and is reported, so one erased or lost key does not
/// stop a restore.
public final class LenientDecryptor: @unchecked Sendable {
    public let engine: MongoCryptEngine

    public init(engine: MongoCryptEngine) { self.engine = engine }

    public func decrypt(_ doc: Document) -> (Document, [DecryptFailure]) {
        // Most documents of most collections hold no ciphertext: no libmongocrypt context for them.
        guard doc.contains(binarySubtype: 6) else { return (doc, []) }
        if let whole = try? engine.decryptDocument(doc) { return (whole, []) }
        var failures: [DecryptFailure] = []
        let out = walk(doc, prefix: "", failures: &failures)
        return (out, failures)
    }

    /// Decrypts many documents with few libmongocrypt contexts: those holding ciphertext are
    /// wrapped, up to `batchDocuments` and `batchBytes`, as the fields of one document that
    /// libmongocrypt decrypts in one go (one key lookup for the whole batch). A batch with
    /// any value that fails falls back to `decrypt(_:)` document by document, so failures
    /// are found and reported exactly as there.
    ///
    /// libmongocrypt 1.7 matches every value's key against the batch's keys by a linear
    /// search, so a batch of many documents with a key each costs quadratically: batches
    /// stay small.
    public func decrypt(batch docs: [Document], batchDocuments: Int = 64, batchBytes: Int = 4 << 20) -> [(Document, [DecryptFailure])] {
        var out: [(Document, [DecryptFailure])] = docs.map { ($0, []) }
        var pending: [Int] = []
        var bytes = 0
        func flush() {
            defer { pending.removeAll(keepingCapacity: true); bytes = 0 }
            let opened = pending.count > 1 ? decryptWrapped(pending.map { docs[$0] }) : nil
            for (n, i) in pending.enumerated() { out[i] = opened.map { ($0[n], []) } ?? decrypt(docs[i]) }
        }
        for (i, d) in docs.enumerated() where d.contains(binarySubtype: 6) {
            if bytes + d.count > batchBytes || pending.count >= batchDocuments { flush() }
            pending.append(i)
            bytes += d.count
        }
        flush()
        return out
    }

    /// The documents decrypted in one context, as the fields of one wrapper document; nil
    /// when anything in them fails (the caller then goes one by one).
    private func decryptWrapped(_ docs: [Document]) -> [Document]? {
        var wrapper = DocumentBuilder()
        for (n, d) in docs.enumerated() { wrapper.append(String(n), document: d) }
        guard let opened = try? engine.decryptDocument(wrapper.document) else { return nil }
        let parts = opened.elements.compactMap { $0.value.documentValue }
        return parts.count == docs.count ? parts : nil
    }

    private func walk(_ doc: Document, prefix: String, failures: inout [DecryptFailure]) -> Document {
        var b = DocumentBuilder()
        for (k, v) in doc.elements { b.append(k, value(v, path: prefix.isEmpty ? k : "\(prefix).\(k)", failures: &failures)) }
        return b.document
    }

    private func value(_ v: BSONValue, path: String, failures: inout [DecryptFailure]) -> BSONValue {
        switch v {
        case .binary(6, let bytes):
            do {
                return try engine.decrypt(v)
            } catch {
                let keyId = bytes.count >= 17 ? (UUID(keyIdBytes: Array(bytes[1..<17]))?.uuidString.lowercased() ?? "?") : "?"
                let reason: String
                switch error as? FieldCryptoError {
                case .keyNotFound?: reason = "data key not in the key vault"
                case .authenticationFailed?: reason = "ciphertext failed authentication (tampered or damaged)"
                case .masterKeyMismatch?: reason = "the master key cannot unwrap the data key"
                default: reason = "\(error)"
                }
                failures.append(DecryptFailure(keyId: keyId, path: path, reason: reason))
                return v
            }
        case .document(let d): return .document(walk(d, prefix: path, failures: &failures))
        case .array(let items): return .array(items.enumerated().map { value($1, path: "\(path).\($0)", failures: &failures) })
        default: return v
        }
    }
}
