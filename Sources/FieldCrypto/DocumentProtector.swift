import BSON
import Digest
import Foundation

/// Applies protection rules to documents and change events: each configured field is
/// replaced by its CSFLE ciphertext under the rule's data key. Per-subject keys are created
/// on first use and named by a keyed hash of the subject, so the key vault never holds a
/// subject id in clear.
public final class DocumentProtector: @unchecked Sendable {
    public let rules: [ProtectionRule]
    public let engine: MongoCryptEngine
    private let lock = NSLock()
    private var subjectNames: [BSONValue: String] = [:]
    private var knownKeys: Set<String> = []
    /// Counters for the run summary and metrics.
    public private(set) var encryptedValues: Int64 = 0
    public private(set) var keysCreated: Int64 = 0

    /// The data key whose deterministic encryption serves as the keyed hash of subject ids.
    public static let subjectHashKeyName = "ciphertail/subject-id-hash"

    public init(rules: [ProtectionRule], engine: MongoCryptEngine) {
        self.rules = rules
        self.engine = engine
    }

    public func rule(database: String, collection: String) -> ProtectionRule? {
        rules.first { $0.matches(database: database, collection: collection) }
    }

    /// Rules exist for this namespace.
    public func covers(database: String, collection: String) -> Bool { rule(database: database, collection: collection) != nil }

    // MARK: Keys

    /// The keyAltName of a subject's data key: `subject/<hex SHA-256 of the deterministic
    /// CSFLE encryption of the subject under the vault's subject-hash key>`. A keyed hash:
    /// without the vault and master key, nobody can test a guessed subject id against it.
    public func subjectKeyName(_ subject: BSONValue) throws -> String {
        lock.lock()
        if let n = subjectNames[subject] { lock.unlock(); return n }
        lock.unlock()
        try ensureKey(DocumentProtector.subjectHashKeyName)
        let canonical = Document(["s": subject]).canonicalJSON
        let sealed = try engine.encrypt(.string(canonical), keyAltName: DocumentProtector.subjectHashKeyName, algorithm: .deterministic)
        guard case .binary(6, let bytes) = sealed else { throw FieldCryptoError.invalidArgument("subject hash") }
        let name = "subject/" + SHA256.hash(bytes).hexString
        lock.lock(); subjectNames[subject] = name; lock.unlock()
        return name
    }

    /// Makes sure a data key with this keyAltName exists, creating it on first use.
    public func ensureKey(_ altName: String) throws {
        lock.lock()
        if knownKeys.contains(altName) { lock.unlock(); return }
        lock.unlock()
        if try engine.keyVault.keys(matching: KeyVaultQuery(ids: [], altNames: [altName])).isEmpty {
            do {
                _ = try engine.createDataKey(keyAltNames: [altName])
                lock.lock(); keysCreated += 1; lock.unlock()
            } catch FieldCryptoError.invalidKeyDocument {
                // Created concurrently by another writer: the name is taken, which is all we need.
            }
        }
        lock.lock(); knownKeys.insert(altName); lock.unlock()
    }

    /// The key for one document under `rule`, or nil when it has no subject and the rule
    /// says to stop (the caller reports it).
    func keyName(for doc: Document, rule: ProtectionRule, namespace: String) throws -> String {
        switch rule.key {
        case .named(let name):
            try ensureKey(name)
            return name
        case .perSubject(let field, let onMissing):
            if let subject = doc.value(atPath: field), subject != .null, subject != .undefined {
                let name = try subjectKeyName(subject)
                try ensureKey(name)
                return name
            }
            switch onMissing {
            case .fallback(let name):
                try ensureKey(name)
                return name
            case .stop:
                throw ProtectionError.missingSubject(namespace: namespace, id: DocumentProtector.idString(doc), field: field)
            }
        }
    }

    static func idString(_ doc: Document) -> String {
        guard let id = doc["_id"] else { return "(none)" }
        return Document(["_id": id]).relaxedJSON.dropFirst(10).dropLast(2).description
    }

    // MARK: Batches

    /// Creates, in one durable append, the data keys a batch of documents needs.
    public func prepareKeys(for docs: [Document], database: String, collection: String) throws {
        guard let rule = rule(database: database, collection: collection) else { return }
        var wanted: [String] = []
        switch rule.key {
        case .named(let name): wanted = [name]
        case .perSubject(let field, let onMissing):
            for d in docs {
                if let subject = d.value(atPath: field), subject != .null, subject != .undefined {
                    wanted.append(try subjectKeyName(subject))
                } else if case .fallback(let name) = onMissing {
                    wanted.append(name)
                }
            }
        }
        lock.lock()
        var unknown = Set(wanted.filter { !knownKeys.contains($0) })
        lock.unlock()
        guard !unknown.isEmpty else { return }
        let present = try engine.keyVault.keys(matching: KeyVaultQuery(ids: [], altNames: Array(unknown)))
        let presentNames = Set(try present.flatMap { try DataKeyInfo($0).altNames })
        unknown.subtract(presentNames)
        if !unknown.isEmpty {
            do {
                _ = try engine.createDataKeys(keyAltNames: unknown.sorted().map { [$0] })
                lock.lock(); keysCreated += Int64(unknown.count); lock.unlock()
            } catch FieldCryptoError.invalidKeyDocument {
                // Another writer created some of them meanwhile: fall back to one at a time.
                for name in unknown { try ensureKey(name) }
            }
        }
        lock.lock(); knownKeys.formUnion(presentNames); knownKeys.formUnion(unknown); lock.unlock()
    }

    /// Protects a batch of documents of one namespace: keys are prepared in one append, values
    /// are marked, and libmongocrypt encrypts the whole batch in one context. The same result
    /// as `protect(_:)` one by one, much cheaper per value.
    public func protect(batch docs: [Document], database: String, collection: String) throws -> [Document] {
        guard let rule = rule(database: database, collection: collection), !docs.isEmpty else { return docs }
        try prepareKeys(for: docs, database: database, collection: collection)
        let ns = "\(database).\(collection)"
        var marked: [Document] = []
        marked.reserveCapacity(docs.count)
        var values: Int64 = 0
        // libmongocrypt encrypts every marking it finds. A document that already holds a
        // subtype-6 value (or code with scope, whose insides it does not walk) could smuggle a
        // marking in from the source, so such documents take the explicit path, which
        // encrypts only the configured fields.
        var explicit: [Int: Document] = [:]
        for (i, doc) in docs.enumerated() where doc.contains(binarySubtype: 6, orScopedCode: true) {
            explicit[i] = try protect(doc, database: database, collection: collection)
        }
        for (i, doc) in docs.enumerated() {
            if explicit[i] != nil { marked.append(Document()); continue }
            let key = DataKeySelector.altName(try keyName(for: doc, rule: rule, namespace: ns))
            var out = doc
            for field in rule.fields {
                out = try transform(out, path: field.components) { value in
                    guard try needsSealing(value, field: field, namespace: ns, doc: doc) else { return value }
                    values += 1
                    return Marking.make(value: value, key: key, algorithm: field.algorithm)
                }
            }
            marked.append(out)
        }
        lock.lock(); encryptedValues += values; lock.unlock()
        // libmongocrypt takes one command of at most 16 MB: split by the recommended size.
        var result: [Document] = []
        result.reserveCapacity(docs.count)
        var chunk: [Document] = []
        var bytes = 0
        for (i, d) in marked.enumerated() {
            if let done = explicit[i] {
                if !chunk.isEmpty { result += try engine.encryptMarked(chunk); chunk.removeAll(keepingCapacity: true); bytes = 0 }
                result.append(done)
                continue
            }
            if !chunk.isEmpty && (bytes + d.count > MarkedBatch.recommendedBytes || chunk.count >= MarkedBatch.recommendedDocuments) {
                result += try engine.encryptMarked(chunk)
                chunk.removeAll(keepingCapacity: true)
                bytes = 0
            }
            chunk.append(d)
            bytes += d.count
        }
        if !chunk.isEmpty { result += try engine.encryptMarked(chunk) }
        return result
    }

    // MARK: Documents

    /// Encrypts the rule's fields of one document. Values already encrypted (subtype 6),
    /// nulls and absent fields are left alone; field order is kept.
    public func protect(_ doc: Document, database: String, collection: String) throws -> Document {
        guard let rule = rule(database: database, collection: collection) else { return doc }
        let ns = "\(database).\(collection)"
        let key = DataKeySelector.altName(try keyName(for: doc, rule: rule, namespace: ns))
        var out = doc
        for field in rule.fields {
            out = try transform(out, path: field.components) { value in
                try self.seal(value, key: key, field: field, namespace: ns, doc: doc)
            }
        }
        return out
    }

    /// False for values left as they are (nulls, which CSFLE cannot encrypt and which hide
    /// nothing, and values already encrypted); throws for a type the algorithm forbids.
    private func needsSealing(_ value: BSONValue, field: ProtectionRule.Field, namespace: String, doc: Document) throws -> Bool {
        switch value {
        case .null, .undefined, .binary(6, _): return false
        default: break
        }
        guard BSONTypeName.allowed(value, field.algorithm) else {
            throw ProtectionError.forbiddenType(namespace: namespace, id: DocumentProtector.idString(doc), path: field.path,
                                                type: BSONTypeName.of(value), algorithm: field.algorithm == .deterministic ? "deterministic" : "random")
        }
        return true
    }

    private func seal(_ value: BSONValue, key: DataKeySelector, field: ProtectionRule.Field, namespace: String, doc: Document) throws -> BSONValue {
        guard try needsSealing(value, field: field, namespace: namespace, doc: doc) else { return value }
        lock.lock(); encryptedValues += 1; lock.unlock()
        return try engine.encrypt(value, key: key, algorithm: field.algorithm)
    }

    /// Rewrites the value at `path` (through subdocuments and arrays of subdocuments).
    func transform(_ doc: Document, path: [String], _ leaf: (BSONValue) throws -> BSONValue) throws -> Document {
        guard let head = path.first else { return doc }
        var changed = false
        var b = DocumentBuilder()
        for (k, v) in doc.elements {
            if k == head {
                let nv = try transform(v, rest: Array(path.dropFirst()), leaf)
                if nv != v { changed = true }
                b.append(k, nv)
            } else {
                b.append(k, v)
            }
        }
        return changed ? b.document : doc
    }

    private func transform(_ value: BSONValue, rest: [String], _ leaf: (BSONValue) throws -> BSONValue) throws -> BSONValue {
        if rest.isEmpty { return try leaf(value) }
        switch value {
        case .document(let d): return .document(try transform(d, path: rest, leaf))
        case .array(let items): return .array(try items.map { try transform($0, rest: rest, leaf) })
        default: return value  // the path does not continue here: nothing to encrypt
        }
    }

    // MARK: Change events

    /// Encrypts what a change event carries of protected fields: the full document, the
    /// pre-image, and the configured paths among `updateDescription.updatedFields`. An update
    /// inside an encrypted subtree (`address.city` when `address` is encrypted whole) becomes
    /// a `$set` of the whole encrypted subtree taken from the event's full document; when the
    /// event has none, those entries are dropped (and counted), never kept in clear.
    public func protectEvent(_ event: Document) throws -> Document {
        guard let ns = event["ns"]?.documentValue, let db = ns["db"]?.stringValue, let coll = ns["coll"]?.stringValue,
              let rule = rule(database: db, collection: coll) else { return event }
        let namespace = "\(db).\(coll)"
        var out = event
        for key in ["fullDocument", "fullDocumentBeforeChange"] {
            if case .document(let d)? = event[key] {
                out = out.setting(key, .document(try protect(d, database: db, collection: coll)))
            }
        }
        guard let desc = event["updateDescription"]?.documentValue else { return out }
        let updated = desc["updatedFields"]?.documentValue ?? Document()
        let removed = (desc["removedFields"]?.arrayValue ?? []).compactMap(\.stringValue)
        let truncated = (desc["truncatedArrays"]?.arrayValue ?? []).compactMap(\.documentValue)
        let full = event["fullDocument"]?.documentValue
        // The key comes from the full document's subject. Without one (deleted since the
        // update), nothing protected can be sealed: those entries are dropped and counted.
        var key: DataKeySelector? = try full.map { .altName(try keyName(for: $0, rule: rule, namespace: namespace)) }
        if key == nil, case .named(let name) = rule.key {
            try ensureKey(name)
            key = .altName(name)  // a named key needs no document to be chosen
        }
        let keyDoc = full ?? Document(["_id": event["documentKey"]?.documentValue?["_id"] ?? .null])
        func logical(_ path: String) -> [String] { path.split(separator: ".").map(String.init).filter { Int($0) == nil } }
        var dropped = 0
        var wholeSubtrees: [String: BSONValue] = [:]
        /// An edit inside an encrypted field cannot be replayed on its ciphertext: send the
        /// whole field, sealed, from the full document instead.
        func resendWhole(_ field: ProtectionRule.Field) throws {
            guard wholeSubtrees[field.path] == nil else { return }
            if let key, let full, let whole = full.value(atPath: field.path) {
                wholeSubtrees[field.path] = try seal(whole, key: key, field: field, namespace: namespace, doc: keyDoc)
            } else {
                dropped += 1
            }
        }
        var newUpdated = DocumentBuilder()
        for (path, value) in updated.elements {
            let lp = logical(path)
            var replacement: BSONValue? = value
            for field in rule.fields {
                let fp = field.components
                if lp == fp || fp.starts(with: lp) {
                    guard let key else { replacement = nil; dropped += 1; break }
                    if lp == fp {
                        replacement = try seal(value, key: key, field: field, namespace: namespace, doc: keyDoc)
                    } else {
                        // The update replaces an ancestor: encrypt the field inside the new value.
                        replacement = try transform(replacement ?? value, rest: Array(fp.dropFirst(lp.count))) { v in
                            try self.seal(v, key: key, field: field, namespace: namespace, doc: keyDoc)
                        }
                    }
                } else if lp.starts(with: fp) {
                    replacement = nil
                    try resendWhole(field)
                }
            }
            if let replacement { newUpdated.append(path, replacement) }
        }
        var keptRemoved: [BSONValue] = []
        for path in removed {
            let lp = logical(path)
            if let field = rule.fields.first(where: { lp.starts(with: $0.components) && lp.count > $0.components.count }) {
                try resendWhole(field)
            } else {
                keptRemoved.append(.string(path))
            }
        }
        var keptTruncated: [BSONValue] = []
        for t in truncated {
            let lp = logical(t["field"]?.stringValue ?? "")
            if let field = rule.fields.first(where: { lp.starts(with: $0.components) }) {
                try resendWhole(field)
            } else {
                keptTruncated.append(.document(t))
            }
        }
        for (path, value) in wholeSubtrees.sorted(by: { $0.key < $1.key }) { newUpdated.append(path, value) }
        var newDesc = desc.setting("updatedFields", .document(newUpdated.document))
        if desc["removedFields"] != nil { newDesc = newDesc.setting("removedFields", .array(keptRemoved)) }
        if desc["truncatedArrays"] != nil { newDesc = newDesc.setting("truncatedArrays", .array(keptTruncated)) }
        if dropped > 0 { newDesc = newDesc.setting("ciphertailDroppedFields", .int32(Int32(dropped))) }
        return out.setting("updateDescription", .document(newDesc))
    }
}

