import BSON
import FieldCrypto
import Foundation
import XCTest

/// The NEED_KMS seam, exercised with libmongocrypt's real KMIP requests and a provider that
/// does not talk to any server.
final class KMSProviderTests: XCTestCase {
    final class FakeKMIP: KMSProvider {
        struct Seen { var provider: String; var endpoint: String; var message: [UInt8]; var bytesNeeded: Int }
        var seen: [Seen] = []
        let reply: [UInt8]?
        init(reply: [UInt8]?) { self.reply = reply }

        var name: String { "kmip" }
        func kmsProvidersEntry() -> Document { ["endpoint": "127.0.0.1:5696"] }
        func masterKeyDocument() -> Document { ["provider": "kmip"] }
        func exchange(_ request: KMSRequest) throws {
            seen.append(Seen(provider: request.provider, endpoint: request.endpoint, message: request.message,
                             bytesNeeded: request.bytesNeeded))
            guard let reply else { throw FieldCryptoError.kms(provider: name, message: "no server in this test") }
            // What a real provider does with its TLS connection: read at most bytesNeeded
            // at a time until libmongocrypt has the whole reply.
            var offset = 0
            while request.bytesNeeded > 0 && offset < reply.count {
                let n = min(request.bytesNeeded, reply.count - offset)
                try request.feed(Array(reply[offset..<(offset + n)]))
                offset += n
            }
        }
    }

    func testNeedKMSHandsEachRequestToItsProvider() throws {
        let kmip = FakeKMIP(reply: nil)
        let vault = try InMemoryKeyVault()
        let engine = try MongoCryptEngine(kmsProviders: [LocalKMSProvider(masterKey: randomMasterKey()), kmip], keyVault: vault)

        let e = expectFieldCryptoError { try engine.createDataKey(keyAltNames: ["k"], kmsProvider: "kmip") }
        guard case .kms("kmip", "no server in this test")? = e else { return XCTFail("the provider's error must surface: \(String(describing: e))") }
        XCTAssertEqual(kmip.seen.count, 1)
        let r = try XCTUnwrap(kmip.seen.first)
        XCTAssertEqual(r.provider, "kmip")
        XCTAssertEqual(r.endpoint, "127.0.0.1:5696")
        // A KMIP TTLV RequestMessage: tag 0x420078, type 0x01 (structure).
        XCTAssertEqual(Array(r.message.prefix(4)), [0x42, 0x00, 0x78, 0x01])
        XCTAssertGreaterThan(r.bytesNeeded, 0)
        XCTAssertEqual(try vault.allKeys().count, 0, "nothing stored")

        // The local provider still works beside it, without any exchange.
        let local = try engine.createDataKey(keyAltNames: ["l"])
        XCTAssertEqual(local["masterKey"], .document(["provider": "local"]))
        XCTAssertEqual(kmip.seen.count, 1)
    }

    func testAGarbageKMSReplyIsRefusedByLibmongocrypt() throws {
        // A well-framed KMIP ResponseMessage (tag 0x42007B, structure, 16 bytes) whose
        // content is nonsense.
        let kmip = FakeKMIP(reply: [0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 16] + Array(repeating: 0xEE, count: 16))
        let engine = try MongoCryptEngine(kmsProviders: [kmip], keyVault: try InMemoryKeyVault())
        let e = expectFieldCryptoError { try engine.createDataKey() }
        print("garbage KMIP reply:", e.map(String.init(describing:)) ?? "-")
        // libmongocrypt rejects it while it is fed (mongocrypt_kms_ctx_feed), with its own message.
        guard case .kms("kmip", let message)? = e else { return XCTFail("expected libmongocrypt's KMS error") }
        XCTAssert(message.contains("KMIP Register response"), message)
        XCTAssertEqual(kmip.seen.count, 1)
    }

    func testUnknownProviderNameIsRefused() throws {
        let engine = try MongoCryptEngine(localMasterKey: randomMasterKey(), keyVault: try InMemoryKeyVault())
        guard case .kms("aws", _)? = expectFieldCryptoError({ try engine.createDataKey(kmsProvider: "aws") }) else { return XCTFail() }
        XCTAssertNotNil(expectFieldCryptoError {
            try MongoCryptEngine(kmsProviders: [], keyVault: try InMemoryKeyVault())
        })
    }
}
