import Foundation
import KMIP
import KMIPClient
import TestSupport
import XCTest

/// `ciphertail kmip` through the real CLI against the PyKMIP servers of ops/kmip.sh: PSMDB
/// master keys provisioned, inspected and converted between the raw and the legacy base64
/// format, and their material never printed.
final class KmipCommandTests: XCTestCase {
    /// The connection flags for server 0, the one `client()` reads back from.
    var connection: [String] { connection(server: KMIPTestServers.server(0)) }

    func connection(server: String) -> [String] {
        ["--kmip-server-name", server, "--kmip-server-ca-file", KMIPTestServers.file("ca.pem"),
         "--kmip-client-certificate-file", KMIPTestServers.file("client.pem"), "--kmip-connect-timeout-ms", "2000"]
    }

    func client() throws -> KMIPClient {
        let o = KMIPOptions(serverName: KMIPTestServers.server(0), serverCAFile: KMIPTestServers.file("ca.pem"),
                            clientCertificateFile: KMIPTestServers.file("client.pem"))
        return KMIPClient(transport: try KMIPTransport(options: o))
    }

    func kmip(_ args: [String]) -> CLIResult { TestEnv.ciphertail(["kmip"] + args + connection) }

    /// Plain output of provision and convert: the id alone, so `$(...)` captures it.
    func newId(_ r: CLIResult, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "stdout is the id alone: \(r.stdout)", file: file, line: line)
        return String(try XCTUnwrap(lines.first, file: file, line: line))
    }

    func inspect(_ id: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let r = kmip(["inspect", "--key-id", id, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], file: file, line: line)
    }

    /// The 32-byte key behind a KMIP object, in either format.
    func key(_ id: String) throws -> [UInt8] {
        try XCTUnwrap(KeyMaterialFormat.key(from: try client().get(id).keyMaterial), "key \(id) is in neither format")
    }

    /// Neither stdout nor stderr holds the key, in hex (either case) or base64.
    func assertNoMaterial(_ runs: [CLIResult], _ key: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let hex = key.map { String(format: "%02x", $0) }.joined()
        let forms = [hex, hex.uppercased(), Data(key).base64EncodedString()]
        for r in runs {
            for form in forms where r.stdout.contains(form) || r.stderr.contains(form) {
                XCTFail("key material (\(form.count) characters) printed:\n\(r.stdout)\n\(r.stderr)", file: file, line: line)
            }
        }
    }

    func testProvisionRawThenInspectSaysRaw() throws {
        let provision = kmip(["provision-master-key", "--format", "raw"])
        let id = try newId(provision)
        let info = try inspect(id)
        XCTAssertEqual(info["format"] as? String, "raw")
        XCTAssertEqual(info["materialBytes"] as? Int, 32)
        XCTAssertEqual(info["state"] as? String, "Active")
        XCTAssertEqual(info["cryptographicAlgorithm"] as? String, "AES")
        XCTAssertEqual(info["cryptographicLength"] as? Int, 256)
        XCTAssertEqual(info["objectType"] as? String, "Symmetric Key")

        let plain = kmip(["inspect", "--key-id", id])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stdout.contains("format:                raw"), plain.stdout)
        XCTAssertEqual(try client().get(id).keyMaterial.count, 32)
        assertNoMaterial([provision, plain], try key(id))
    }

    func testProvisionLegacyWithANameThenInspectSaysLegacyAndTheNameIsUnique() throws {
        let name = TestEnv.uniqueName("psmdb-legacy")
        let provision = kmip(["provision-master-key", "--format", "legacy-base64", "--name", name])
        let id = try newId(provision)
        let info = try inspect(id)
        XCTAssertEqual(info["format"] as? String, "legacy-base64")
        XCTAssertEqual(info["materialBytes"] as? Int, 44)
        XCTAssertEqual(info["cryptographicLength"] as? Int, 352, "the length of the 44-byte text, as PSMDB's legacy client registered it")
        XCTAssertEqual(info["state"] as? String, "Active")
        XCTAssertEqual(info["names"] as? [String], [name])
        let material = try client().get(id).keyMaterial
        XCTAssertEqual(KeyMaterialFormat.classify(material), .legacyBase64)
        XCTAssertEqual(try client().locate(name: name), [id], "found by Name, as the oldest KMIP versions of PSMDB look")

        // A second key under the same Name would make a lookup by name ambiguous.
        let again = kmip(["provision-master-key", "--format", "legacy-base64", "--name", name])
        XCTAssertEqual(again.status, 64, again.stderr)
        XCTAssertTrue(again.stderr.contains(name) && again.stderr.contains(id), again.stderr)
        XCTAssertEqual(try client().locate(name: name), [id])

        // Without --name a legacy key still gets one.
        let unnamed = try newId(kmip(["provision-master-key", "--format", "legacy-base64"]))
        let names = try inspect(unnamed)["names"] as? [String]
        XCTAssertTrue(names?.first?.hasPrefix("ciphertail-psmdb-master-") ?? false, "\(names ?? [])")
        assertNoMaterial([provision, again], try key(id))
    }

    func testConvertBothWaysKeepsTheSameKeyAndPrintsNoMaterial() throws {
        let raw = try newId(kmip(["provision-master-key", "--format", "raw"]))
        let original = try key(raw)
        XCTAssertEqual(original.count, 32)

        let toLegacy = kmip(["convert", "--key-id", raw, "--to", "legacy-base64"])
        let legacy = try newId(toLegacy)
        XCTAssertNotEqual(legacy, raw)
        let legacyMaterial = try client().get(legacy).keyMaterial
        XCTAssertEqual(KeyMaterialFormat.classify(legacyMaterial), .legacyBase64)
        XCTAssertEqual(KeyMaterialFormat.key(from: legacyMaterial), original, "the base64 text decodes to the original 32 bytes")
        XCTAssertEqual(legacyMaterial, Array(Data(original).base64EncodedString().utf8))
        XCTAssertEqual(try client().state(legacy), .active)
        XCTAssertEqual(try client().state(raw), .active, "the source is left as it was")

        let toRaw = kmip(["convert", "--key-id", legacy, "--to", "raw", "--name", TestEnv.uniqueName("psmdb-raw"), "--json"])
        XCTAssertEqual(toRaw.status, 0, toRaw.stderr)
        let out = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(toRaw.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(out["sourceId"] as? String, legacy)
        XCTAssertEqual(out["sourceFormat"] as? String, "legacy-base64")
        XCTAssertEqual(out["format"] as? String, "raw")
        let back = try XCTUnwrap(out["id"] as? String)
        XCTAssertEqual(try client().get(back).keyMaterial, original, "raw again: the same 32 bytes")
        XCTAssertEqual(try client().state(back), .active)
        let info = try inspect(back)
        XCTAssertEqual(info["format"] as? String, "raw")
        XCTAssertEqual(info["cryptographicLength"] as? Int, 256)

        let inspections = [raw, legacy, back].map { kmip(["inspect", "--key-id", $0]) }
        assertNoMaterial([toLegacy, toRaw] + inspections, original)
    }

    func testConvertRefusesTheSameFormatAndKeysInNeitherFormat() throws {
        let raw = try newId(kmip(["provision-master-key", "--format", "raw"]))
        let same = kmip(["convert", "--key-id", raw, "--to", "raw"])
        XCTAssertEqual(same.status, 64, same.stderr)
        XCTAssertTrue(same.stderr.contains("KMIP key \(raw) is already raw"), same.stderr)

        let legacy = try newId(kmip(["provision-master-key", "--format", "legacy-base64"]))
        let sameLegacy = kmip(["convert", "--key-id", legacy, "--to", "legacy-base64"])
        XCTAssertEqual(sameLegacy.status, 64, sameLegacy.stderr)
        XCTAssertTrue(sameLegacy.stderr.contains("KMIP key \(legacy) is already legacy-base64"), sameLegacy.stderr)

        let kmipClient = try client()
        // ciphertail's own CSFLE master key: Secret Data, not a PSMDB key.
        let secret = try kmipClient.registerSecretData(material: (0..<96).map { UInt8($0) })
        let notSymmetric = kmip(["convert", "--key-id", secret, "--to", "raw"])
        XCTAssertEqual(notSymmetric.status, 8, notSymmetric.stderr)
        XCTAssertTrue(notSymmetric.stderr.contains("KMIP key \(secret) is Secret Data"), notSymmetric.stderr)

        let short = try kmipClient.registerSymmetricKey(material: [UInt8](repeating: 9, count: 16))
        XCTAssertEqual(try inspect(short)["format"] as? String, "other")
        let neither = kmip(["convert", "--key-id", short, "--to", "legacy-base64"])
        XCTAssertEqual(neither.status, 8, neither.stderr)
        XCTAssertTrue(neither.stderr.contains("KMIP key \(short) is in neither PSMDB format (16 bytes"), neither.stderr)

        let compromised = try kmipClient.registerSymmetricKey(material: [UInt8](repeating: 5, count: 32))
        try kmipClient.activate(compromised)
        try kmipClient.revoke(compromised, reason: .keyCompromise)
        let refused = kmip(["convert", "--key-id", compromised, "--to", "legacy-base64"])
        XCTAssertEqual(refused.status, 8, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("KMIP key \(compromised) is Compromised"), refused.stderr)
        XCTAssertEqual(refused.stdout, "", "nothing registered")
    }

    func testInspectOfAMissingKeyExits8NamingIt() throws {
        let missing = "ciphertail-missing-\(UInt32.random(in: 0...UInt32.max))"
        let r = kmip(["inspect", "--key-id", missing])
        XCTAssertEqual(r.status, 8, r.stderr)
        XCTAssertTrue(r.stderr.contains("KMIP key \(missing) does not exist"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }

    func testADeadServerFirstFailsOverAndFlagsOverrideThePipeline() throws {
        let dead = "127.0.0.1:\(KMIPTestServers.freePort())"
        let failover = connection(server: "\(dead),\(KMIPTestServers.server(0))")
        let provision = TestEnv.ciphertail(["kmip", "provision-master-key", "--format", "legacy-base64"] + failover)
        let id = try newId(provision)
        XCTAssertTrue(provision.stderr.contains(dead), "the dead server is reported on stderr: \(provision.stderr)")
        let shown = TestEnv.ciphertail(["kmip", "inspect", "--key-id", id, "--json"] + failover)
        XCTAssertEqual(shown.status, 0, shown.stderr)
        XCTAssertTrue(shown.stdout.contains("\"legacy-base64\""), shown.stdout)
        assertNoMaterial([provision, shown], try key(id))

        // The pipeline's kmip section gives the connection; a flag wins over it.
        let dir = TestEnv.temporaryDirectory("kmipcmd")
        let pipe = dir + "/kmip.yaml"
        try """
        encryption:
          masterKey:
            provider: kmip
            kmip:
              serverName: "\(dead)"
              serverCAFile: \(KMIPTestServers.file("ca.pem"))
              clientCertificateFile: \(KMIPTestServers.file("client.pem"))
              connectTimeoutMS: 2000
        """.write(toFile: pipe, atomically: true, encoding: .utf8)
        let fromFile = TestEnv.ciphertail(["kmip", "inspect", "--pipeline", pipe, "--key-id", id])
        XCTAssertEqual(fromFile.status, 8, "only the dead server: \(fromFile.stderr)")
        XCTAssertTrue(fromFile.stderr.contains(dead), fromFile.stderr)
        let overridden = TestEnv.ciphertail(["kmip", "inspect", "--pipeline", pipe, "--key-id", id,
                                             "--kmip-server-name", KMIPTestServers.server(0)])
        XCTAssertEqual(overridden.status, 0, overridden.stderr)
        XCTAssertTrue(overridden.stdout.contains("legacy-base64"), overridden.stdout)

        let noServer = TestEnv.ciphertail(["kmip", "inspect", "--key-id", id])
        XCTAssertEqual(noServer.status, 64, noServer.stderr)
        XCTAssertTrue(noServer.stderr.contains("no KMIP server"), noServer.stderr)
        let ownKey = kmip(["inspect", "--key-id", id, "--kmip-key-identifier", id])
        XCTAssertEqual(ownKey.status, 64, ownKey.stderr)
    }
}
