import COpenSSL

/// HMAC-SHA-256 under one key, for many short messages. The keyed context is built once;
/// each call duplicates it, which costs far less than OpenSSL 3's one-shot `EVP_Q_mac`
/// (that looks the algorithm up and schedules the key again every time).
public final class HMACSHA256: @unchecked Sendable {
    private let mac: OpaquePointer
    private let keyed: OpaquePointer

    /// `key` is copied into OpenSSL's context; the caller should wipe its own copy.
    public init(key: [UInt8]) {
        mac = EVP_MAC_fetch(nil, "HMAC", nil)!
        keyed = EVP_MAC_CTX_new(mac)!
        // OSSL_PARAM keeps these pointers until EVP_MAC_init: static strings outlive it.
        let name: StaticString = "digest", value: StaticString = "SHA256"
        let cName = UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)
        let cValue = UnsafeMutableRawPointer(mutating: value.utf8Start).assumingMemoryBound(to: CChar.self)
        do {
            var params = [
                OSSL_PARAM_construct_utf8_string(cName, cValue, 0),
                OSSL_PARAM_construct_end(),
            ]
            key.withUnsafeBufferPointer { k in
                _ = EVP_MAC_init(keyed, k.baseAddress, k.count, &params)
            }
        }
    }

    deinit {
        EVP_MAC_CTX_free(keyed)
        EVP_MAC_free(mac)
    }

    /// The 32-byte tag of `message`. Safe to call from several threads at once: the keyed
    /// context is only read (duplicated).
    public func authenticate(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        let ctx = EVP_MAC_CTX_dup(keyed)!
        defer { EVP_MAC_CTX_free(ctx) }
        if message.count > 0 { EVP_MAC_update(ctx, message.baseAddress, message.count) }
        var out = [UInt8](repeating: 0, count: 32)
        var len = 0
        out.withUnsafeMutableBufferPointer { _ = EVP_MAC_final(ctx, $0.baseAddress, &len, 32) }
        return out
    }

    public func authenticate(_ message: [UInt8]) -> [UInt8] { message.withUnsafeBytes { authenticate($0) } }
}
