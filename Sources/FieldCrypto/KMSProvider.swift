import BSON
import CMongoCrypt
import Foundation

/// A key management service that protects data keys: libmongocrypt's "local", "kmip",
/// "aws", ... providers. The engine hands libmongocrypt each provider's credentials and,
/// in the NEED_KMS state, passes every KMS request to the provider it names.
///
/// `local` (`LocalKMSProvider`) needs no network: libmongocrypt wraps and unwraps keys
/// itself, so `exchange` is never called. A KMIP provider (`KMIPKMSProvider`) returns
/// `{endpoint: "host:port"}` as its entry, `{provider: "kmip"}` (plus an optional `keyId`)
/// as its master key, and in `exchange` opens a TLS connection (client certificate) to
/// `request.endpoint`, sends `request.message` and feeds the reply back until
/// `request.bytesNeeded` is 0.
public protocol KMSProvider: AnyObject {
    /// libmongocrypt's provider name: "local", "kmip", ...
    var name: String { get }
    /// This provider's value in libmongocrypt's kms_providers document
    /// (`{key: BinData(96 bytes)}` for local, `{endpoint: "host:port"}` for kmip).
    func kmsProvidersEntry() -> Document
    /// The masterKey document new data keys get (`{provider: "local"}` for local).
    func masterKeyDocument() -> Document
    /// Answers one KMS request of the NEED_KMS state. Throwing aborts the operation.
    func exchange(_ request: KMSRequest) throws
    /// Throws when the provider must not be used any more (its master key was withdrawn):
    /// checked before every libmongocrypt operation, so cached data keys stop working too.
    func checkUsable() throws
}

extension KMSProvider {
    public func checkUsable() throws {}
}

/// One KMS request of libmongocrypt (a `mongocrypt_kms_ctx_t`). Valid only during the
/// `KMSProvider.exchange` call it is passed to.
public final class KMSRequest {
    private var kms: OpaquePointer?

    /// The provider the request is for ("kmip", ...).
    public let provider: String
    /// `host:port` to connect to over TLS.
    public let endpoint: String
    /// The bytes to send (an HTTP request, or a KMIP TTLV message).
    public let message: [UInt8]

    init(_ kms: OpaquePointer) throws {
        self.kms = kms
        var len: UInt32 = 0
        provider = mongocrypt_kms_ctx_get_kms_provider(kms, &len).map { String(cString: $0) } ?? "unknown"
        var ep: UnsafePointer<CChar>?
        guard mongocrypt_kms_ctx_endpoint(kms, &ep), let ep else {
            throw KMSRequest.error(kms, provider: provider)
        }
        endpoint = String(cString: ep)
        let msg = mongocrypt_binary_new()!
        defer { mongocrypt_binary_destroy(msg) }
        guard mongocrypt_kms_ctx_message(kms, msg) else { throw KMSRequest.error(kms, provider: provider) }
        message = CBinary.copy(msg)
    }

    /// How many more reply bytes libmongocrypt wants (at most this many may be fed at once);
    /// 0 when the reply is complete.
    public var bytesNeeded: Int {
        guard let kms else { return 0 }
        return Int(mongocrypt_kms_ctx_bytes_needed(kms))
    }

    /// Feeds reply bytes (no more than `bytesNeeded`).
    public func feed(_ bytes: [UInt8]) throws {
        guard let kms else {
            throw FieldCryptoError.kms(provider: provider, message: "KMS request used after its exchange ended")
        }
        guard !bytes.isEmpty else { return }
        let ok = CBinary.with(bytes) { mongocrypt_kms_ctx_feed(kms, $0) }
        if !ok { throw KMSRequest.error(kms, provider: provider) }
    }

    func invalidate() { kms = nil }

    private static func error(_ kms: OpaquePointer, provider: String) -> FieldCryptoError {
        let s = LibStatus.read { mongocrypt_kms_ctx_status(kms, $0) }
        return .kms(provider: provider, message: s.message)
    }
}

/// The `local` KMS provider: a 96-byte master key held by this process.
public final class LocalKMSProvider: KMSProvider, @unchecked Sendable {
    public let masterKey: LocalMasterKey
    public init(masterKey: LocalMasterKey) { self.masterKey = masterKey }

    public var name: String { "local" }
    public func kmsProvidersEntry() -> Document { ["key": .binary(subtype: 0, data: masterKey.bytes)] }
    public func masterKeyDocument() -> Document { ["provider": "local"] }
    public func exchange(_ request: KMSRequest) throws {
        throw FieldCryptoError.kms(provider: name, message: "the local provider never needs a KMS exchange")
    }
}
