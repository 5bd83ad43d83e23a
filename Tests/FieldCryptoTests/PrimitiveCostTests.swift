import COpenSSL
import Foundation
import XCTest

/// The raw cost of FLE 1's primitives on this machine, through OpenSSL, to compare with
/// `encryptMarked`. Prints rates; asserts only that the primitives worked.
///
/// AEAD_AES_256_CBC_HMAC_SHA_512 of one value: AES-256-CBC of the padded plaintext, then
/// HMAC-SHA-512 (truncated to 32 bytes) over associated data || IV || ciphertext || AL.
/// Deterministic adds one more HMAC-SHA-512 (the IV); random draws a 16-byte IV instead.
final class PrimitiveCostTests: XCTestCase {
    let key = [UInt8](repeating: 0x42, count: 32)
    let macKey = [UInt8](repeating: 0x24, count: 32)
    let plaintext = [UInt8](repeating: 0x61, count: 32)
    let associated = [UInt8](repeating: 0x01, count: 18)  // subtype + key UUID + BSON type

    private func measure(_ label: String, seconds: Double = 1, _ body: () -> Bool) {
        var n = 0
        var ok = true
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed: UInt64 = 0
        repeat {
            for _ in 0..<1_000 { ok = body() && ok }
            n += 1_000
            elapsed = DispatchTime.now().uptimeNanoseconds - start
        } while Double(elapsed) < seconds * 1e9
        let rate = Double(n) / (Double(elapsed) / 1e9)
        print(String(format: "primitive: %@: %.0f/s (%.3f µs)", label, rate, 1e6 / rate))
        XCTAssert(ok, label)
    }

    /// AES-256-CBC of 32 bytes (no padding; two blocks) with a fresh EVP_CIPHER_CTX, as
    /// libmongocrypt 1.7.2 does per value.
    private func aesFreshContext(_ iv: [UInt8], _ out: inout [UInt8]) -> Bool {
        guard let ctx = EVP_CIPHER_CTX_new() else { return false }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var n: Int32 = 0, m: Int32 = 0
        guard EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), nil, key, iv) == 1 else { return false }
        EVP_CIPHER_CTX_set_padding(ctx, 0)
        guard EVP_EncryptUpdate(ctx, &out, &n, plaintext, Int32(plaintext.count)) == 1 else { return false }
        return out.withUnsafeMutableBufferPointer { EVP_EncryptFinal_ex(ctx, $0.baseAddress! + Int(n), &m) == 1 } && n + m == 32
    }

    /// HMAC-SHA-512 over AD || IV || C || AL with OpenSSL's one-shot HMAC() (what
    /// libmongocrypt 1.7.2 calls).
    private func hmacOneShot(_ iv: [UInt8], _ c: [UInt8], _ tag: inout [UInt8]) -> Bool {
        let input = associated + iv + c + [0, 0, 0, 0, 0, 0, 0, 144]
        var len: UInt32 = 0
        return HMAC(EVP_sha512(), macKey, Int32(macKey.count), input, input.count, &tag, &len) != nil && len == 64
    }

    func testMeasurePrimitives() throws {
        var iv = [UInt8](repeating: 7, count: 16)
        var c = [UInt8](repeating: 0, count: 48)
        var tag = [UInt8](repeating: 0, count: 64)

        measure("RAND_bytes(16)") { RAND_bytes(&iv, 16) == 1 }
        measure("AES-256-CBC of 32 bytes, fresh EVP_CIPHER_CTX") { aesFreshContext(iv, &c) }

        // Reused cipher context (key schedule redone by EncryptInit, context kept).
        let reused = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(reused) }
        _ = EVP_EncryptInit_ex(reused, EVP_aes_256_cbc(), nil, key, iv)
        EVP_CIPHER_CTX_set_padding(reused, 0)
        measure("AES-256-CBC of 32 bytes, reused EVP_CIPHER_CTX") {
            var n: Int32 = 0, m: Int32 = 0
            guard EVP_EncryptInit_ex(reused, nil, nil, key, iv) == 1,
                  EVP_EncryptUpdate(reused, &c, &n, plaintext, 32) == 1 else { return false }
            return c.withUnsafeMutableBufferPointer { EVP_EncryptFinal_ex(reused, $0.baseAddress! + Int(n), &m) == 1 }
        }

        measure("HMAC-SHA-512 of 74 bytes, one-shot HMAC()") { hmacOneShot(iv, Array(c[0..<32]), &tag) }

        // Pre-fetched EVP_MAC, context duplicated from a keyed template per value.
        let mac = EVP_MAC_fetch(nil, "HMAC", nil)!
        defer { EVP_MAC_free(mac) }
        let template = EVP_MAC_CTX_new(mac)!
        defer { EVP_MAC_CTX_free(template) }
        // The digest name must outlive the init call: keep it in a stable buffer.
        let digestName = strdup("SHA512")!
        defer { free(digestName) }
        var params: [OSSL_PARAM] = [OSSL_PARAM_construct_utf8_string("digest", digestName, 0), OSSL_PARAM_construct_end()]
        XCTAssertEqual(EVP_MAC_init(template, macKey, macKey.count, &params), 1)
        let input = associated + iv + Array(c[0..<32]) + [0, 0, 0, 0, 0, 0, 0, 144]
        measure("HMAC-SHA-512 of 74 bytes, EVP_MAC_CTX_dup of a keyed context") {
            guard let ctx = EVP_MAC_CTX_dup(template) else { return false }
            defer { EVP_MAC_CTX_free(ctx) }
            var len = 0
            return EVP_MAC_update(ctx, input, input.count) == 1 && EVP_MAC_final(ctx, &tag, &len, 64) == 1 && len == 64
        }
        var expected = [UInt8](repeating: 0, count: 64)
        XCTAssert(hmacOneShot(iv, Array(c[0..<32]), &expected))
        XCTAssertEqual(tag, expected, "both HMAC paths agree")

        // One FLE 1 value the way libmongocrypt computes it.
        measure("random value: RAND_bytes + AES (fresh ctx) + HMAC()") {
            RAND_bytes(&iv, 16) == 1 && aesFreshContext(iv, &c) && hmacOneShot(iv, Array(c[0..<32]), &tag)
        }
        measure("deterministic value: HMAC() for the IV + AES (fresh ctx) + HMAC()") {
            hmacOneShot(iv, plaintext, &tag) && aesFreshContext(Array(tag[0..<16]), &c) && hmacOneShot(iv, Array(c[0..<32]), &tag)
        }
    }
}
