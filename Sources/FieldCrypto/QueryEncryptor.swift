import BSON
import Foundation

/// A filter that cannot run against encrypted data, naming the field and why.
public enum QueryError: Error, CustomStringConvertible, Equatable {
    case randomField(String)
    case operatorOnEncrypted(field: String, op: String)
    case needsSubject(field: String, subject: String)
    case insideEncrypted(field: String, encrypted: String)

    public var description: String {
        switch self {
        case .randomField(let f):
            return "field \(f) is encrypted with the random algorithm: it cannot be queried (only deterministic fields support equality)"
        case .operatorOnEncrypted(let f, let op):
            return "field \(f) is encrypted: \(op) cannot run on ciphertext (equality, $eq, $in, $ne and $nin can)"
        case .needsSubject(let f, let s):
            return "querying \(f) needs an equality on \(s) in the filter: each subject has its own data key"
        case .insideEncrypted(let f, let e):
            return "field \(f) lies inside \(e), which is encrypted as a whole"
        }
    }
}

/// Rewrites a query filter the client-side FLE way: equality values on deterministic fields
/// become their ciphertext under the right key, so the server (or an archive scan) compares
/// ciphertexts. Never creates keys: a subject without a key simply matches nothing.
public struct QueryEncryptor {
    let protector: DocumentProtector
    let rule: ProtectionRule
    let namespace: String

    public init?(protector: DocumentProtector, database: String, collection: String) {
        guard let rule = protector.rule(database: database, collection: collection) else { return nil }
        self.protector = protector
        self.rule = rule
        namespace = "\(database).\(collection)"
    }

    /// Nil when the filter names a subject that has no key: nothing can match.
    public func encrypt(_ filter: Document) throws -> Document? {
        var keyName: String??  // resolved lazily: only when a deterministic field is queried
        func key(for field: String) throws -> String? {
            if let k = keyName { return k }
            let k: String?
            switch rule.key {
            case .named(let name): k = name
            case .perSubject(let subjectField, _):
                guard let subject = Self.equalityValue(filter[subjectField]) else {
                    throw QueryError.needsSubject(field: field, subject: subjectField)
                }
                let name = try protector.subjectKeyName(subject)
                k = try protector.engine.keyVault.keys(matching: KeyVaultQuery(ids: [], altNames: [name])).isEmpty ? nil : name
            }
            keyName = .some(k)
            return k
        }
        var out = DocumentBuilder()
        for (k, v) in filter.elements {
            if k == "$and", case .array(let parts) = v {
                var enc: [BSONValue] = []
                for p in parts {
                    guard case .document(let d) = p else { enc.append(p); continue }
                    guard let e = try encrypt(d) else { return nil }
                    enc.append(.document(e))
                }
                out.append(k, .array(enc))
                continue
            }
            guard let field = rule.fields.first(where: { $0.path == k }) else {
                if let outer = rule.fields.first(where: { k.hasPrefix($0.path + ".") }) {
                    throw QueryError.insideEncrypted(field: k, encrypted: outer.path)
                }
                out.append(k, v)
                continue
            }
            guard field.algorithm == .deterministic else { throw QueryError.randomField(k) }
            guard let name = try key(for: k) else { return nil }
            func seal(_ x: BSONValue) throws -> BSONValue {
                try protector.engine.encrypt(x, keyAltName: name, algorithm: .deterministic)
            }
            if case .document(let ops) = v, ops.keys.first?.hasPrefix("$") == true {
                var b = DocumentBuilder()
                for (op, arg) in ops.elements {
                    switch op {
                    case "$eq", "$ne": b.append(op, try seal(arg))
                    case "$in", "$nin":
                        guard case .array(let items) = arg else { throw QueryError.operatorOnEncrypted(field: k, op: op) }
                        b.append(op, .array(try items.map(seal)))
                    default: throw QueryError.operatorOnEncrypted(field: k, op: op)
                    }
                }
                out.append(k, .document(b.document))
            } else {
                out.append(k, try seal(v))
            }
        }
        return out.document
    }

    static func equalityValue(_ v: BSONValue?) -> BSONValue? {
        guard let v else { return nil }
        if case .document(let d) = v, d.keys.first?.hasPrefix("$") == true {
            return d.keys == ["$eq"] ? d["$eq"] : nil
        }
        return v
    }
}

/// Equality matching of a (possibly encrypted) filter against a document, for archives that
/// have no server to run the query: implicit equality, $eq, $ne, $in, $nin and $and, on
/// dotted paths, with arrays matching when any element does, and numbers by value.
public enum FilterMatcher {
    public static func matches(_ doc: Document, _ filter: Document) -> Bool {
        for (k, cond) in filter.elements {
            if k == "$and", case .array(let parts) = cond {
                for p in parts { if case .document(let d) = p, !matches(doc, d) { return false } }
                continue
            }
            let value = doc.value(atPath: k)
            if case .document(let ops) = cond, ops.keys.first?.hasPrefix("$") == true {
                for (op, arg) in ops.elements {
                    let ok: Bool
                    switch op {
                    case "$eq": ok = equal(value, arg)
                    case "$ne": ok = !equal(value, arg)
                    case "$in": ok = (arg.arrayValue ?? []).contains { equal(value, $0) }
                    case "$nin": ok = !(arg.arrayValue ?? []).contains { equal(value, $0) }
                    default: ok = false
                    }
                    if !ok { return false }
                }
            } else if !equal(value, cond) {
                return false
            }
        }
        return true
    }

    static func equal(_ value: BSONValue?, _ wanted: BSONValue) -> Bool {
        guard let value else { return wanted == .null }
        if same(value, wanted) { return true }
        if case .array(let items) = value { return items.contains { same($0, wanted) } }
        return false
    }

    static func same(_ a: BSONValue, _ b: BSONValue) -> Bool {
        if let x = number(a), let y = number(b) { return x == y }
        return a == b
    }

    static func number(_ v: BSONValue) -> Double? {
        switch v {
        case .int32(let x): return Double(x)
        case .int64(let x): return Double(x)
        case .double(let x): return x
        default: return nil
        }
    }
}
