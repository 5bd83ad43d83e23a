import BSON
import CMongoCrypt
import Foundation

extension MongoCryptEngine {
    /// Encrypts every marking (`Marking.make`) in `documents`, at any depth (subdocuments,
    /// arrays), in one libmongocrypt context: the result has the same documents in the same
    /// order, each marking replaced by its ciphertext (the bytes explicit `encrypt` gives
    /// for the same value, key and algorithm; deterministic ones are equal byte for byte)
    /// and every other byte, field order included, unchanged.
    ///
    /// Batches: at most `MarkedBatch.maxBytes` (16 MiB) of documents per call, else
    /// `FieldCryptoError.invalidArgument` (nothing is split here); batches of
    /// `MarkedBatch.recommendedDocuments` (1,000) documents or
    /// `MarkedBatch.recommendedBytes` (8 MiB), whichever is reached first, are recommended.
    ///
    /// Every marking is checked first (shape, and the value's type against the algorithm,
    /// which libmongocrypt leaves to mongocryptd for markings); a bad one fails the whole
    /// batch with an error naming the document index and field path, never the value. A
    /// missing data key fails it with `keyNotFound`, naming the key.
    ///
    /// How: libmongocrypt's automatic encryption of `{insert: "marked", documents: []}` on
    /// a private namespace (`MarkedBatch`); in NEED_MONGO_MARKINGS it is given, as
    /// mongocryptd's reply, the insert command holding `documents`; then keys are fetched
    /// (NEED_MONGO_KEYS, skipped while libmongocrypt's key cache holds them) and the
    /// finalized command's documents are returned.
    public func encryptMarked(_ documents: [Document]) throws -> [Document] {
        try encryptMarked(documents, observedStates: nil, check: true)
    }

    /// `encryptMarked`, also returning the libmongocrypt states it went through (tests).
    package func encryptMarkedObservingStates(_ documents: [Document]) throws -> (documents: [Document], states: [String]) {
        var states: [String] = []
        let out = try encryptMarked(documents, observedStates: &states, check: true)
        return (out, states)
    }

    /// `encryptMarked` without checking the markings first, to show what libmongocrypt
    /// alone lets through (tests only). Needs at least one marking.
    package func encryptMarkedBypassingChecksForTests(_ documents: [Document]) throws -> [Document] {
        try encryptMarked(documents, observedStates: nil, check: false)
    }

    /// `mongocrypt_crypt_shared_lib_version`: 0 when crypt_shared is not loaded (tests).
    package var cryptSharedLibraryVersionForTests: UInt64 { mongocrypt_crypt_shared_lib_version(currentHandle().crypt) }

    private func encryptMarked(_ documents: [Document], observedStates: UnsafeMutablePointer<[String]>?, check: Bool) throws -> [Document] {
        let total = try Self.checkBatchSize(documents)
        var markings = check ? 0 : 1
        for (i, d) in documents.enumerated() where check {
            do {
                markings += try d.bytes.withUnsafeBytes { try MarkingWalk.check($0, document: 0, limit: $0.count) }
            } catch let problem as MarkingProblem {
                throw FieldCryptoError.invalidArgument("encryptMarked: \(problem.message(document: i))")
            }
        }
        // No marking: libmongocrypt would request no key and return the original command
        // (without the documents), so there is nothing to ask it.
        if markings == 0 { return documents }

        let op = "encrypt marked documents"
        let ctx = try CryptContext(self, operation: op)
        if observedStates != nil { ctx.observedStates = [] }
        ctx.markingsReply = MarkingWalk.markingsReply(collection: MarkedBatch.collection, documents: documents, totalBytes: total)
        try ctx.check(CBinary.with(MarkedBatch.command.bytes) {
            mongocrypt_ctx_encrypt_init(ctx.ctx, MarkedBatch.database, -1, $0)
        })
        let command: [UInt8]
        do {
            command = try ctx.run()
        } catch {
            observedStates?.pointee = ctx.observedStates ?? []
            throw error
        }
        observedStates?.pointee = ctx.observedStates ?? []
        let out: [Document]
        do { out = try MarkingWalk.documents(ofCommand: command) } catch let problem as MarkingProblem {
            throw FieldCryptoError.unexpectedState(operation: op, state: "unreadable result: \(problem.why)")
        }
        guard out.count == documents.count else {
            throw FieldCryptoError.unexpectedState(operation: op, state: "\(out.count) documents back for \(documents.count)")
        }
        return out
    }

    /// The same result as `encryptMarked` (random ciphertexts aside), one explicit
    /// `encrypt` call per marking: the reference for tests, and a fallback.
    public func encryptMarkedExplicitly(_ documents: [Document]) throws -> [Document] {
        try documents.enumerated().map { i, d in
            try d.bytes.withUnsafeBytes { p in
                var out: [UInt8] = []
                out.reserveCapacity(d.bytes.count * 2)
                do {
                    try MarkingWalk.rewrite(p, document: 0, limit: p.count, into: &out) { m in
                        let result = try encrypt(valueDocument: m.valueDocument(p), key: m.key(p), algorithm: m.algorithm)
                        // {"v": BinData(6, ...)}: int32, 0x05, "v\0", int32 length, subtype, data, 0
                        guard result.count > 13, result[4] == 0x05, result[11] == 6 else {
                            throw FieldCryptoError.unexpectedState(operation: "encrypt", state: "result is not {v: BinData(6)}")
                        }
                        return Array(result[12..<(result.count - 1)])
                    }
                } catch let problem as MarkingProblem {
                    throw FieldCryptoError.invalidArgument("encryptMarkedExplicitly: \(problem.message(document: i))")
                }
                return Document(trusted: out)
            }
        }
    }

    /// Total bytes of the documents; refuses a batch over `MarkedBatch.maxBytes`.
    static func checkBatchSize(_ documents: [Document]) throws -> Int {
        let total = documents.reduce(0) { $0 + $1.bytes.count }
        if total > MarkedBatch.maxBytes {
            throw FieldCryptoError.invalidArgument(
                "encryptMarked: a batch of \(documents.count) documents is \(total) bytes, over the \(MarkedBatch.maxBytes)-byte "
                    + "(16 MiB) limit of one call; split it (recommended: up to \(MarkedBatch.recommendedDocuments) documents "
                    + "or \(MarkedBatch.recommendedBytes >> 20) MiB per batch)")
        }
        return total
    }
}
