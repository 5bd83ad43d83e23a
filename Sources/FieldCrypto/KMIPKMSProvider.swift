import BSON
import Foundation
import KMIP
import KMIPClient
import Logging

/// libmongocrypt's `kmip` KMS provider, with a KMIP key manager as the master key.
///
/// The master key is a KMIP Secret Data object of 96 bytes, what libmongocrypt (and every
/// MongoDB driver) uses as the key-encryption key of the `kmip` provider: a data key's
/// keyMaterial is wrapped locally with it, and unwrapping asks the server for it (Get).
/// libmongocrypt writes the KMIP request bytes; this class sends them over the one TLS
/// transport (with its failover) and feeds the reply back.
///
/// Unwrapping is cached for the life of the process, in memory only: the first Get of a
/// master key goes to the server, later ones are answered with the same reply, so the
/// steady-state cost of KMIP per encrypted field is zero. The cache is dropped, and every
/// further exchange refused, once `stop(because:)` is called (the key left Active).
public final class KMIPKMSProvider: KMSProvider, @unchecked Sendable {
    public let client: KMIPClient
    /// The master key new data keys are wrapped with.
    public let keyIdentifier: String
    /// host:port of the first server, which libmongocrypt requires in its documents; the
    /// transport decides where requests really go.
    public let endpoint: String
    private let lock = NSLock()
    private var replies: [String: [UInt8]] = [:]
    private var stoppedReason: String?
    private(set) var serverRoundTrips = 0

    public init(client: KMIPClient, keyIdentifier: String, endpoint: String) {
        self.client = client
        self.keyIdentifier = keyIdentifier
        self.endpoint = endpoint
    }

    deinit { wipeCache() }

    /// Caller holds `lock` (or is deinit).
    private func wipeCache() {
        for k in replies.keys { replies[k]!.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) } }
        replies = [:]
    }

    public var name: String { "kmip" }
    public func kmsProvidersEntry() -> Document { ["endpoint": .string(endpoint)] }
    public func masterKeyDocument() -> Document { masterKeyDocument(keyIdentifier) }

    public func masterKeyDocument(_ id: String) -> Document {
        ["provider": "kmip", "keyId": .string(id), "endpoint": .string(endpoint)]
    }

    /// Fails closed from now on: the cached key material is wiped and every operation that
    /// needs the master key is refused with `reason`.
    public func stop(because reason: String) {
        lock.withLock {
            stoppedReason = reason
            wipeCache()
        }
    }

    public func checkUsable() throws {
        if let why = lock.withLock({ stoppedReason }) { throw FieldCryptoError.kms(provider: name, message: why) }
    }

    /// How many requests went to a server (the rest were answered from the cache).
    public var roundTrips: Int { lock.withLock { serverRoundTrips } }

    public func exchange(_ request: KMSRequest) throws {
        try checkUsable()
        let (operation, id) = Self.describe(request.message)
        let cacheable = operation == .get && id != nil
        var reply: [UInt8]
        if cacheable, let cached = lock.withLock({ replies[id!] }) {
            reply = cached
        } else {
            do {
                reply = try client.transport.roundTrip(request.message, idempotent: cacheable)
            } catch {
                throw FieldCryptoError.kms(provider: name, message: "\(error)")
            }
            lock.withLock { serverRoundTrips += 1 }
            // Only successful replies are kept: a failure is asked again next time.
            if let failure = Self.failure(reply) {
                throw FieldCryptoError.kms(provider: name, message: "key \(id ?? "?"): \(failure)")
            }
            if cacheable { lock.withLock { if stoppedReason == nil { replies[id!] = reply } } }
        }
        defer { reply.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) } }
        var offset = 0
        while request.bytesNeeded > 0 && offset < reply.count {
            let n = min(request.bytesNeeded, reply.count - offset)
            try request.feed(Array(reply[offset..<offset + n]))
            offset += n
        }
    }

    /// The operation and object of libmongocrypt's request, read with our codec.
    static func describe(_ message: [UInt8]) -> (KMIPOperation?, String?) {
        guard let root = try? TTLV.decode(message), case .structure(let top) = root.value,
              let item = top.first(where: { $0.tag == .batchItem }), case .structure(let fields) = item.value else { return (nil, nil) }
        var operation: KMIPOperation?
        var id: String?
        for f in fields {
            if f.tag == .operation, case .enumeration(let raw) = f.value { operation = KMIPOperation(rawValue: raw) }
            if f.tag == .requestPayload, case .structure(let payload) = f.value {
                for p in payload where p.tag == .uniqueIdentifier {
                    if case .textString(let s) = p.value { id = s }
                }
            }
        }
        return (operation, id)
    }

    /// Why the reply is not a success, or nil when it is one.
    static func failure(_ reply: [UInt8]) -> String? {
        do {
            try KMIPMessage.parseResponse(reply).resultItem().requireSuccess()
            return nil
        } catch {
            return "\(error)"
        }
    }
}

extension KMIPKMSProvider {
    /// Checks that `id` names a master key libmongocrypt can use: an Active Secret Data
    /// object of 96 bytes. The error names the key and what is wrong, never the material.
    public func verifyMasterKey(_ id: String) throws {
        do {
            try client.requireActive(id)
            var got = try client.get(id)
            defer { got.keyMaterial.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) } }
            guard got.objectType == .secretData, got.keyMaterial.count == 96 else {
                throw FieldCryptoError.kms(provider: name, message: "KMIP object \(id) is a \(got.objectType) of \(got.keyMaterial.count) bytes; "
                                           + "a CSFLE master key is Secret Data of 96 bytes (ciphertail keys init creates one)")
            }
        } catch let e as FieldCryptoError {
            throw e
        } catch {
            throw FieldCryptoError.kms(provider: name, message: "\(error)")
        }
    }

    /// Registers and activates a new master key: 96 random bytes as Secret Data.
    public func createMasterKey(name: String? = nil) throws -> String {
        var rng = SystemRandomNumberGenerator()  // getrandom(2)
        var material = (0..<96).map { _ in UInt8.random(in: 0...255, using: &rng) }
        defer { material.withUnsafeMutableBytes { wipe($0.baseAddress!, $0.count) } }
        do {
            let id = try client.registerSecretData(material: material, name: name)
            try client.activate(id)
            return id
        } catch {
            throw FieldCryptoError.kms(provider: self.name, message: "creating a master key: \(error)")
        }
    }

    /// Polls the master key's state every `seconds` on a background thread; when it is no
    /// longer Active (or cannot be read) the provider stops, so the pipeline pauses instead
    /// of encrypting under a key the key manager has withdrawn.
    public func startStatePolling(every seconds: Int, logger: Logger) -> KMIPStatePoller {
        let poller = KMIPStatePoller(provider: self, seconds: seconds, logger: logger)
        poller.start()
        return poller
    }
}

/// The background check of `KMIPKMSProvider.startStatePolling`; `cancel()` ends it.
public final class KMIPStatePoller: @unchecked Sendable {
    let provider: KMIPKMSProvider
    let seconds: Int
    let logger: Logger
    private let condition = NSCondition()
    private var cancelled = false

    init(provider: KMIPKMSProvider, seconds: Int, logger: Logger) {
        self.provider = provider
        self.seconds = seconds
        self.logger = logger
    }

    func start() {
        let t = Thread { [self] in
            while true {
                condition.lock()
                let deadline = Date().addingTimeInterval(TimeInterval(seconds))
                while !cancelled && condition.wait(until: deadline) {}
                let done = cancelled
                condition.unlock()
                if done { return }
                do {
                    try provider.client.requireActive(provider.keyIdentifier)
                } catch {
                    logger.error("master key check failed; encryption stops", metadata: ["error": "\(error)"])
                    provider.stop(because: "\(error)")
                    return
                }
            }
        }
        t.name = "kmip-key-state"
        t.start()
    }

    public func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }
}
