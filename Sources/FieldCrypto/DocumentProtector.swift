import BSON
import Digest
import Foundation

/// Applies protection rules to documents and change events: each configured field is
/// replaced by its CSFLE ciphertext under the rule's data key. Per-subject keys are created
/// on first use and named by a keyed hash of the subject, so the key vault never holds a
/// subject id in clear.
/// Subjects whose keys an erasure destroyed (the erasure ledger, by key name).
public protocol ErasedSubjects: AnyObject, Sendable {
    func isErased(keyName: String) -> Bool
}

public final class DocumentProtector: @unchecked Sendable {
    public let rules: [ProtectionRule]
    public let engine: MongoCryptEngine
    private let lock = NSLock()
    private var subjectHasher: HMACSHA256?
    /// Named keys (a handful): their ids, once known to exist.
    private var namedKeyIds: [String: UUID] = [:]
    /// Counters for the run summary and metrics.
    public private(set) var encryptedValues: Int64 = 0
    public private(set) var keysCreated: Int64 = 0
    /// Plaintext values of erased subjects that were removed or replaced by the marker.
    public private(set) var erasedValuesWithheld: Int64 = 0
    private var erasedSource: (any ErasedSubjects)?
    /// Erased subjects never get a key again, even one this process still holds: their
    /// plaintext is withheld (removed, or the field's marker), never encrypted anew.
    public var erasedSubjects: (any ErasedSubjects)? {
        get { lock.withLock { erasedSource } }
        set { lock.withLock { erasedSource = newValue } }
    }
    private var subjectWrapping: (@Sendable (String) throws -> Document)?
    /// When set, each new subject key is wrapped by a master key of its own, which this
    /// makes for the key name (a KMIP object named after it): erasing the subject then
    /// destroys that object too, and no copy of the vault can open the key again.
    public var subjectMasterKey: (@Sendable (String) throws -> Document)? {
        get { lock.withLock { subjectWrapping } }
        set { lock.withLock { subjectWrapping = newValue } }
    }

    /// The data key from which the keyed hash of subject ids is derived.
    public static let subjectHashKeyName = "ciphertail/subject-id-hash"
    /// What is deterministically encrypted under that key to make the HMAC key.
    static let subjectHashLabel = "ciphertail subject-id HMAC key v1"

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

    /// The keyAltName of a subject's data key: `subject/<hex HMAC-SHA-256 of the subject's
    /// BSON element {"s": subject}>`. The HMAC key is the SHA-256 of the deterministic CSFLE
    /// encryption of a fixed label under the vault's subject-hash data key, so it exists only
    /// where that data key can be unwrapped: without the vault and the master key, nobody can
    /// test a guessed subject id against a key name. (A hash of the id alone could be tested.)
    public func subjectKeyName(_ subject: BSONValue) throws -> String {
        let hasher = try subjectHMAC()
        return "subject/" + hasher.authenticate(Document(["s": subject]).bytes).hexString
    }

    private func subjectHMAC() throws -> HMACSHA256 {
        if let h = lock.withLock({ subjectHasher }) { return h }
        let id = try ensureKey(DocumentProtector.subjectHashKeyName)
        let sealed = try engine.encrypt(.string(DocumentProtector.subjectHashLabel), keyId: id, algorithm: .deterministic)
        guard case .binary(6, var bytes) = sealed else { throw FieldCryptoError.invalidArgument("subject hash") }
        var key = SHA256.hash(bytes)
        let hasher = HMACSHA256(key: key)
        bytes.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) }
        key.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) }
        return lock.withLock {
            if subjectHasher == nil { subjectHasher = hasher }
            return subjectHasher!
        }
    }

    /// The id of the data key with this keyAltName, created on first use.
    @discardableResult
    public func ensureKey(_ altName: String) throws -> UUID {
        if let id = lock.withLock({ namedKeyIds[altName] }) { return id }
        guard let id = try keyIds(forNames: [altName])[0] else {
            throw FieldCryptoError.keyNotFound(ids: [], altNames: [altName], message: "the key was erased")
        }
        lock.withLock { namedKeyIds[altName] = id }
        return id
    }

    /// The ids of the data keys with these keyAltNames (one per name, in order); those that
    /// do not exist yet are created with one durable append. Nil for an erased subject.
    func keyIds(forNames names: [String]) throws -> [UUID?] {
        let erased = erasedSubjects
        let live = erased.map { e in names.filter { !e.isErased(keyName: $0) } } ?? names
        var known = try engine.keyVault.keyIds(forAltNames: live)
        var missing: [String] = []
        var seen = Set<String>()
        for n in live where known[n] == nil && seen.insert(n).inserted { missing.append(n) }
        if let wrap = subjectMasterKey {
            // Subject keys one by one, each under its own new master key.
            for n in missing where n.hasPrefix("subject/") {
                do {
                    known[n] = try DataKeyInfo(engine.createDataKey(keyAltNames: [n], masterKey: try wrap(n))).id
                    lock.withLock { keysCreated += 1 }
                } catch FieldCryptoError.invalidKeyDocument {
                    known.merge(try engine.keyVault.keyIds(forAltNames: [n])) { a, _ in a }
                }
            }
            missing.removeAll { known[$0] != nil }
        }
        if !missing.isEmpty {
            do {
                let created = try engine.createDataKeys(keyAltNames: missing.map { [$0] })
                for (n, key) in zip(missing, created) { known[n] = try DataKeyInfo(key).id }
                lock.withLock { keysCreated += Int64(missing.count) }
            } catch FieldCryptoError.invalidKeyDocument {
                // Another writer created some of them meanwhile: take theirs, then make the rest one by one.
                known.merge(try engine.keyVault.keyIds(forAltNames: missing)) { a, _ in a }
                for n in missing where known[n] == nil {
                    do {
                        known[n] = try DataKeyInfo(engine.createDataKey(keyAltNames: [n])).id
                        lock.withLock { keysCreated += 1 }
                    } catch FieldCryptoError.invalidKeyDocument {
                        known.merge(try engine.keyVault.keyIds(forAltNames: [n])) { a, _ in a }
                    }
                }
            }
        }
        return try names.map { n in
            if let erased, erased.isErased(keyName: n) { return nil }
            guard let id = known[n] else { throw FieldCryptoError.keyNotFound(ids: [], altNames: [n], message: "not created") }
            return id
        }
    }

    /// The keyAltName of the key for one document under `rule`.
    func keyName(for doc: Document, rule: ProtectionRule, namespace: String) throws -> String {
        switch rule.key {
        case .named(let name):
            return name
        case .perSubject(let field, let onMissing):
            if let subject = doc.value(atPath: field), subject != .null, subject != .undefined {
                return try subjectKeyName(subject)
            }
            switch onMissing {
            case .fallback(let name): return name
            case .stop: throw ProtectionError.missingSubject(namespace: namespace, id: DocumentProtector.idString(doc), field: field)
            }
        }
    }

    /// The data key for each document (created on first use; nil for an erased subject), or
    /// an error naming the first document that has no subject when the rule says to stop.
    func keyIds(for docs: [Document], rule: ProtectionRule, namespace: String) throws -> [UUID?] {
        if case .named(let name) = rule.key {
            let id = try ensureKey(name)
            return docs.map { _ in id }
        }
        return try keyIds(forNames: docs.map { try keyName(for: $0, rule: rule, namespace: namespace) })
    }

    func keyId(for doc: Document, rule: ProtectionRule, namespace: String) throws -> UUID? {
        try keyIds(for: [doc], rule: rule, namespace: namespace)[0]
    }

    static func idString(_ doc: Document) -> String {
        guard let id = doc["_id"] else { return "(none)" }
        return Document(["_id": id]).relaxedJSON.dropFirst(10).dropLast(2).description
    }

    // MARK: Batches

    /// Protects a batch of documents of one namespace: keys are found (or created in one
    /// append), values are marked with their key's id, and libmongocrypt encrypts the whole
    /// batch in one context. The same result as `protect(_:)` one by one, much cheaper per value.
    public func protect(batch docs: [Document], database: String, collection: String) throws -> [Document] {
        guard let rule = rule(database: database, collection: collection), !docs.isEmpty else { return docs }
        let ns = "\(database).\(collection)"
        let keys = try keyIds(for: docs, rule: rule, namespace: ns)
        var marked: [Document] = []
        marked.reserveCapacity(docs.count)
        var values: Int64 = 0
        // libmongocrypt encrypts every marking it finds. A document that already holds a
        // subtype-6 value (or code with scope, whose insides it does not walk) could smuggle a
        // marking in from the source, so such documents take the explicit path, which
        // encrypts only the configured fields.
        var explicit: [Int: Document] = [:]
        for (i, doc) in docs.enumerated() where keys[i] == nil || doc.contains(binarySubtype: 6, orScopedCode: true) {
            explicit[i] = try keys[i].map { try protect(doc, key: .id($0), rule: rule, namespace: ns) } ?? withhold(doc, rule: rule)
        }
        for (i, doc) in docs.enumerated() {
            if explicit[i] != nil { marked.append(Document()); continue }
            let key = DataKeySelector.id(keys[i]!)
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
        guard let key = try keyId(for: doc, rule: rule, namespace: ns) else { return withhold(doc, rule: rule) }
        return try protect(doc, key: .id(key), rule: rule, namespace: ns)
    }

    /// An erased subject's document: plaintext of its protected fields is removed or replaced
    /// by the field's marker; ciphertext (under the destroyed key) stays as it is.
    private func withhold(_ doc: Document, rule: ProtectionRule) -> Document {
        var withheld: Int64 = 0
        func walk(_ d: Document, _ path: [String], _ field: ProtectionRule.Field) -> Document {
            guard let head = path.first else { return d }
            var b = DocumentBuilder()
            for (k, v) in d.elements {
                guard k == head else { b.append(k, v); continue }
                if path.count == 1 {
                    switch v {
                    case .null, .undefined, .binary(6, _): b.append(k, v)
                    default:
                        withheld += 1
                        if case .marker(let text) = field.onErased { b.append(k, .string(text)) }
                    }
                    continue
                }
                switch v {
                case .document(let sub): b.append(k, .document(walk(sub, Array(path.dropFirst()), field)))
                case .array(let items):
                    b.append(k, .array(items.map { item in
                        if case .document(let sub) = item { return .document(walk(sub, Array(path.dropFirst()), field)) }
                        return item
                    }))
                default: b.append(k, v)
                }
            }
            return b.document
        }
        var out = doc
        for field in rule.fields { out = walk(out, field.components, field) }
        lock.withLock { erasedValuesWithheld += withheld }
        return out
    }

    private func protect(_ doc: Document, key: DataKeySelector, rule: ProtectionRule, namespace ns: String) throws -> Document {
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
        var key: DataKeySelector? = try full.flatMap { try keyId(for: $0, rule: rule, namespace: namespace) }.map { .id($0) }
        if key == nil, case .named(let name) = rule.key {
            key = .id(try ensureKey(name))  // a named key needs no document to be chosen
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

