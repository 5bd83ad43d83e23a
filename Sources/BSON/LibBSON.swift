import CBSON
import Foundation

/// The only place that handles libbson pointers: static views over Swift-owned bytes,
/// element iteration and appends.
enum LibBSON {
    static func message(_ error: bson_error_t) -> String {
        var e = error
        return withUnsafeBytes(of: &e.message) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
    }

    static func copyBytes(_ b: OpaquePointer) -> [UInt8] {
        let len = Int(ct_bson_len(b))
        let data = bson_get_data(b)!
        return Array(UnsafeBufferPointer(start: data, count: len))
    }

    /// A bson_t that views `bytes` without copying, valid inside `body` only.
    static func withStatic<R>(_ bytes: [UInt8], _ body: (OpaquePointer) -> R) -> R {
        bytes.withUnsafeBufferPointer { buf in
            withStatic(UnsafeRawBufferPointer(buf), body)
        }
    }

    static func withStatic<R>(_ raw: UnsafeRawBufferPointer, _ body: (OpaquePointer) -> R) -> R {
        guard let b = ct_bson_static_new(raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count) else {
            preconditionFailure("bson_init_static refused a document that was validated before")
        }
        defer { bson_free(UnsafeMutableRawPointer(b)) }
        return body(b)
    }

    static func json(_ b: OpaquePointer, canonical: Bool) -> String {
        var len = 0
        guard let s = canonical ? bson_as_canonical_extended_json(b, &len) : bson_as_relaxed_extended_json(b, &len) else {
            return "<unprintable BSON>"
        }
        defer { bson_free(s) }
        return String(cString: s)
    }

    static func elements(_ b: OpaquePointer) -> [(key: String, value: BSONValue)] {
        let iter = ct_iter_new()!
        defer { bson_free(UnsafeMutableRawPointer(iter)) }
        var out: [(key: String, value: BSONValue)] = []
        guard bson_iter_init(iter, b) else { return out }
        while bson_iter_next(iter) {
            out.append((key(iter), value(iter)))
        }
        return out
    }

    /// Depth-first over subdocuments and arrays without decoding anything else.
    static func contains(_ b: OpaquePointer, binarySubtype: UInt8, orScopedCode: Bool) -> Bool {
        let iter = ct_iter_new()!
        defer { bson_free(UnsafeMutableRawPointer(iter)) }
        guard bson_iter_init(iter, b) else { return false }
        return scan(iter, binarySubtype: binarySubtype, orScopedCode: orScopedCode)
    }

    private static func scan(_ iter: OpaquePointer, binarySubtype: UInt8, orScopedCode: Bool) -> Bool {
        while bson_iter_next(iter) {
            switch bson_iter_type(iter) {
            case BSON_TYPE_BINARY:
                var subtype = BSON_SUBTYPE_BINARY
                var len: UInt32 = 0
                var data: UnsafePointer<UInt8>?
                bson_iter_binary(iter, &subtype, &len, &data)
                if UInt8(subtype.rawValue) == binarySubtype { return true }
            case BSON_TYPE_CODEWSCOPE:
                if orScopedCode { return true }
            case BSON_TYPE_DOCUMENT, BSON_TYPE_ARRAY:
                let child = ct_iter_new()!
                defer { bson_free(UnsafeMutableRawPointer(child)) }
                if bson_iter_recurse(iter, child), scan(child, binarySubtype: binarySubtype, orScopedCode: orScopedCode) { return true }
            default:
                break
            }
        }
        return false
    }

    static func find(_ b: OpaquePointer, _ key: String) -> BSONValue? {
        let iter = ct_iter_new()!
        defer { bson_free(UnsafeMutableRawPointer(iter)) }
        guard bson_iter_init(iter, b) else { return nil }
        while bson_iter_next(iter) {
            if self.key(iter) == key { return value(iter) }
        }
        return nil
    }

    private static func key(_ iter: OpaquePointer) -> String {
        let len = Int(bson_iter_key_len(iter))
        let p = UnsafeRawPointer(bson_iter_key(iter)!).assumingMemoryBound(to: UInt8.self)
        return String(decoding: UnsafeBufferPointer(start: p, count: len), as: UTF8.self)
    }

    private static func string(_ p: UnsafePointer<CChar>?, _ len: UInt32) -> String {
        guard let p else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: Int(len)), as: UTF8.self)
    }

    private static func oid(_ p: UnsafePointer<bson_oid_t>) -> ObjectId {
        var o = p.pointee
        return ObjectId(bytes: withUnsafeBytes(of: &o.bytes) { Array($0) })
    }

    private static func subdocument(_ iter: OpaquePointer) -> Document {
        var len: UInt32 = 0
        var data: UnsafePointer<UInt8>?
        if bson_iter_type(iter) == BSON_TYPE_ARRAY { bson_iter_array(iter, &len, &data) } else { bson_iter_document(iter, &len, &data) }
        return Document(trusted: Array(UnsafeBufferPointer(start: data, count: Int(len))))
    }

    static func value(_ iter: OpaquePointer) -> BSONValue {
        switch bson_iter_type(iter) {
        case BSON_TYPE_DOUBLE: return .double(bson_iter_double(iter))
        case BSON_TYPE_UTF8:
            var len: UInt32 = 0
            let p = bson_iter_utf8(iter, &len)
            return .string(string(p, len))
        case BSON_TYPE_DOCUMENT: return .document(subdocument(iter))
        case BSON_TYPE_ARRAY: return .array(subdocument(iter).elements.map(\.value))
        case BSON_TYPE_BINARY:
            var subtype = BSON_SUBTYPE_BINARY
            var len: UInt32 = 0
            var data: UnsafePointer<UInt8>?
            bson_iter_binary(iter, &subtype, &len, &data)
            return .binary(subtype: UInt8(subtype.rawValue), data: data.map { Array(UnsafeBufferPointer(start: $0, count: Int(len))) } ?? [])
        case BSON_TYPE_UNDEFINED: return .undefined
        case BSON_TYPE_OID: return .objectId(oid(bson_iter_oid(iter)))
        case BSON_TYPE_BOOL: return .bool(bson_iter_bool(iter))
        case BSON_TYPE_DATE_TIME: return .datetime(bson_iter_date_time(iter))
        case BSON_TYPE_NULL: return .null
        case BSON_TYPE_REGEX:
            var options: UnsafePointer<CChar>?
            let pattern = bson_iter_regex(iter, &options)
            return .regex(pattern: pattern.map { String(cString: $0) } ?? "", options: options.map { String(cString: $0) } ?? "")
        case BSON_TYPE_DBPOINTER:
            var len: UInt32 = 0
            var coll: UnsafePointer<CChar>?
            var o: UnsafePointer<bson_oid_t>?
            bson_iter_dbpointer(iter, &len, &coll, &o)
            return .dbPointer(collection: string(coll, len), id: oid(o!))
        case BSON_TYPE_CODE:
            var len: UInt32 = 0
            return .code(string(bson_iter_code(iter, &len), len))
        case BSON_TYPE_SYMBOL:
            var len: UInt32 = 0
            return .symbol(string(bson_iter_symbol(iter, &len), len))
        case BSON_TYPE_CODEWSCOPE:
            var len: UInt32 = 0
            var scopeLen: UInt32 = 0
            var scope: UnsafePointer<UInt8>?
            let code = bson_iter_codewscope(iter, &len, &scopeLen, &scope)
            return .codeWithScope(code: string(code, len), scope: Document(trusted: Array(UnsafeBufferPointer(start: scope, count: Int(scopeLen)))))
        case BSON_TYPE_INT32: return .int32(bson_iter_int32(iter))
        case BSON_TYPE_TIMESTAMP:
            var t: UInt32 = 0
            var i: UInt32 = 0
            bson_iter_timestamp(iter, &t, &i)
            return .timestamp(Timestamp(t: t, i: i))
        case BSON_TYPE_INT64: return .int64(bson_iter_int64(iter))
        case BSON_TYPE_DECIMAL128:
            var d = bson_decimal128_t()
            bson_iter_decimal128(iter, &d)
            return .decimal128(low: d.low, high: d.high)
        case BSON_TYPE_MINKEY: return .minKey
        case BSON_TYPE_MAXKEY: return .maxKey
        default: return .undefined
        }
    }

    /// Strings may hold NUL bytes, so they travel with an explicit length.
    private static func withCString<R>(_ s: String, _ body: (UnsafePointer<CChar>, Int32) -> R) -> R {
        var u = Array(s.utf8)
        let n = Int32(u.count)
        u.append(0)
        return u.withUnsafeBufferPointer { ub in ub.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, n) } }
    }

    static func append(_ b: OpaquePointer, _ key: String, _ value: BSONValue) {
        withCString(key) { kp, kl in
                var ok = true
                switch value {
                case .double(let v): ok = bson_append_double(b, kp, kl, v)
                case .string(let s):
                    ok = withCString(s) { bson_append_utf8(b, kp, kl, $0, $1) }
                case .document(let d):
                    ok = withStatic(d.bytes) { bson_append_document(b, kp, kl, $0) }
                case .array(let items):
                    var child = DocumentBuilder()
                    for (i, item) in items.enumerated() { child.append(String(i), item) }
                    ok = withStatic(child.document.bytes) { bson_append_array(b, kp, kl, $0) }
                case .binary(let subtype, let data):
                    ok = data.withUnsafeBufferPointer { bson_append_binary(b, kp, kl, bson_subtype_t(UInt32(subtype)), $0.baseAddress, UInt32($0.count)) }
                case .undefined: ok = bson_append_undefined(b, kp, kl)
                case .objectId(let o):
                    var oid = bson_oid_t()
                    withUnsafeMutableBytes(of: &oid.bytes) { $0.copyBytes(from: o.bytes) }
                    ok = bson_append_oid(b, kp, kl, &oid)
                case .bool(let v): ok = bson_append_bool(b, kp, kl, v)
                case .datetime(let v): ok = bson_append_date_time(b, kp, kl, v)
                case .null: ok = bson_append_null(b, kp, kl)
                case .regex(let pattern, let options):
                    ok = withCString(pattern) { bson_append_regex_w_len(b, kp, kl, $0, $1, options) }
                case .dbPointer(let coll, let o):
                    var oid = bson_oid_t()
                    withUnsafeMutableBytes(of: &oid.bytes) { $0.copyBytes(from: o.bytes) }
                    ok = bson_append_dbpointer(b, kp, kl, coll, &oid)
                case .code(let s): ok = bson_append_code(b, kp, kl, s)
                case .symbol(let s):
                    ok = withCString(s) { bson_append_symbol(b, kp, kl, $0, $1) }
                case .codeWithScope(let code, let scope):
                    ok = withStatic(scope.bytes) { bson_append_code_with_scope(b, kp, kl, code, $0) }
                case .int32(let v): ok = bson_append_int32(b, kp, kl, v)
                case .timestamp(let ts): ok = bson_append_timestamp(b, kp, kl, ts.t, ts.i)
                case .int64(let v): ok = bson_append_int64(b, kp, kl, v)
                case .decimal128(let low, let high):
                    var d = bson_decimal128_t(low: low, high: high)
                    ok = bson_append_decimal128(b, kp, kl, &d)
                case .minKey: ok = bson_append_minkey(b, kp, kl)
                case .maxKey: ok = bson_append_maxkey(b, kp, kl)
                }
                precondition(ok, "libbson refused to append field \(key): document exceeds the BSON size limit")
        }
    }
}
