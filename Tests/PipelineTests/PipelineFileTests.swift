import Pipeline
import XCTest

final class PipelineFileTests: XCTestCase {
    func testShippedExampleParsesAndFlagsOverrideIt() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let p = try PipelineFile.load(path: root.appendingPathComponent("pipelines/local-backup.yaml").path)
        let fromFile = p.resolve(uri: nil, namespaces: [], repo: nil, level: nil)
        XCTAssertEqual(fromFile.namespaces, ["shop.*"])
        XCTAssertEqual(fromFile.compressionLevel, 3)
        XCTAssertNotNil(fromFile.uri)
        let flags = p.resolve(uri: "mongodb://other/", namespaces: ["a.b"], repo: "/r", level: 9)
        XCTAssertEqual(flags.uri, "mongodb://other/")
        XCTAssertEqual(flags.namespaces, ["a.b"])
        XCTAssertEqual(flags.repo, "/r")
        XCTAssertEqual(flags.compressionLevel, 9)
    }

    func testUnknownFieldIsNamedWithItsLine() {
        let yaml = "source:\n  uri: mongodb://x/\n  namespaces: [a.*]\narchive:\n  repo: /r\n  compresion: {codec: zstd}\n"
        XCTAssertThrowsError(try PipelineFile.parse(yaml, file: "p.yaml")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.hasPrefix("p.yaml:6: archive.compresion: unknown field"), text)
        }
    }

    func testWrongTypeAndBadValuesAreNamed() {
        XCTAssertThrowsError(try PipelineFile.parse("archive:\n  compression:\n    level: 42\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("p.yaml:3: archive.compression.level"), "\(e)")
        }
        XCTAssertThrowsError(try PipelineFile.parse("source:\n  namespaces: 5\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("source.namespaces"), "\(e)")
        }
        XCTAssertThrowsError(try PipelineFile.parse("archive:\n  blockSize: lots\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("archive.blockSize"), "\(e)")
        }
    }

    func testSizes() {
        XCTAssertEqual(PipelineFile.parseSize("1MiB"), 1 << 20)
        XCTAssertEqual(PipelineFile.parseSize("256 KiB"), 256 << 10)
        XCTAssertEqual(PipelineFile.parseSize("4096"), 4096)
        XCTAssertNil(PipelineFile.parseSize("big"))
    }
}

final class EncryptionConfigTests: XCTestCase {
    let valid = """
    source:
      uri: mongodb://127.0.0.1:27017/?replicaSet=rs0
      namespaces: [shop.*]
    archive:
      repo: /var/lib/ciphertail/repo
      compression: {codec: zstd, level: 3}
    encryption:
      keyVault: /var/lib/ciphertail/keyvault
      masterKey:
        provider: local
        local: {keyFile: /etc/ciphertail/master.key}
      rules:
        - namespace: shop.users
          subject: userId
          fields:
            - {path: ssn, algorithm: deterministic}
            - {path: email, algorithm: deterministic}
            - {path: name, algorithm: random}
            - {path: address, algorithm: random}
            - {path: orders.card, algorithm: random}

    """

    func testTheDocumentedShapeParses() throws {
        let p = try PipelineFile.parse(valid, file: "p.yaml")
        let rule = try XCTUnwrap(p.encryption?.rules?.first)
        XCTAssertEqual(rule.subject, "userId")
        XCTAssertEqual(rule.fields.map(\.path), ["ssn", "email", "name", "address", "orders.card"])
        XCTAssertEqual(rule.fields[0].algorithm, .deterministic)
        XCTAssertEqual(p.encryption?.masterKey?.local?.keyFile, "/etc/ciphertail/master.key")
        XCTAssertEqual(p.encryption?.keyVault, "/var/lib/ciphertail/keyvault")
    }

    func testRulesThatCannotWorkAreNamed() {
        func error(_ yaml: String) -> String {
            do { _ = try PipelineFile.parse(yaml, file: "p.yaml"); return "" } catch { return "\(error)" }
        }
        let id = valid.replacingOccurrences(of: "{path: ssn, algorithm: deterministic}", with: "{path: _id, algorithm: random}")
        XCTAssertTrue(error(id).contains("shop.users") && error(id).contains("_id cannot be encrypted"), error(id))
        let dbl = valid.replacingOccurrences(of: "{path: ssn, algorithm: deterministic}", with: "{path: score, algorithm: deterministic, bsonType: double}")
        XCTAssertTrue(error(dbl).contains("deterministic encryption is not allowed for type double"), error(dbl))
        XCTAssertTrue(error(dbl).hasPrefix("p.yaml:"), error(dbl))
        let both = valid.replacingOccurrences(of: "subject: userId", with: "subject: userId\n      keyAltName: shared")
        XCTAssertTrue(error(both).contains("exactly one of subject"), error(both))
        let typo = valid.replacingOccurrences(of: "{path: name, algorithm: random}", with: "{path: name, algoritm: random}")
        XCTAssertTrue(error(typo).contains("encryption.rules.fields[2].algoritm: unknown field"), error(typo))
        let fallback = valid.replacingOccurrences(of: "subject: userId", with: "subject: userId\n      onMissingSubject: fallback")
        XCTAssertTrue(error(fallback).contains("fallbackKeyAltName"), error(fallback))
        let strayMarker = valid.replacingOccurrences(of: "{path: name, algorithm: random}", with: "{path: name, algorithm: random, erasedMarker: gone}")
        XCTAssertTrue(error(strayMarker).contains("erasedMarker needs onErased: marker"), error(strayMarker))
        let badChoice = valid.replacingOccurrences(of: "{path: name, algorithm: random}", with: "{path: name, algorithm: random, onErased: shred}")
        XCTAssertFalse(error(badChoice).isEmpty)
    }

    func testOnErasedReachesTheRules() throws {
        let yaml = valid.replacingOccurrences(of: "{path: name, algorithm: random}", with: "{path: name, algorithm: random, onErased: marker, erasedMarker: \"<gone>\"}")
            .replacingOccurrences(of: "{path: ssn, algorithm: deterministic}", with: "{path: ssn, algorithm: deterministic, onErased: remove}")
        let rules = try XCTUnwrap(PipelineFile.parse(yaml, file: "p.yaml").encryption).protectionRules()
        let fields = Dictionary(uniqueKeysWithValues: rules[0].fields.map { ($0.path, $0.onErased) })
        XCTAssertEqual(fields["name"], .marker("<gone>"))
        XCTAssertEqual(fields["ssn"], .remove)
        XCTAssertEqual(fields["email"], .keep)
        XCTAssertEqual(rules[0].field(at: "fullDocument.name")?.path, "name")
        XCTAssertEqual(rules[0].field(at: "orders.3.card")?.path, "orders.card")
        XCTAssertNil(rules[0].field(at: "plan"))
    }
}

final class ShippedPipelinesTests: XCTestCase {
    func testEveryShippedPipelineParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("pipelines")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 2)
        for f in files { XCTAssertNoThrow(try PipelineFile.load(path: dir.appendingPathComponent(f).path), f) }
        let enc = try PipelineFile.load(path: dir.appendingPathComponent("encrypted-backup.yaml").path)
        XCTAssertEqual(enc.encryption?.protectionRules().count, 2)
    }

    func testKmipSectionTakesPerconaNamesAndRefusesBadValues() throws {
        let good = """
        encryption:
          keyVault: /k
          masterKey:
            provider: kmip
            kmip:
              serverName: kmip1.example, kmip2.example
              port: 5696
              serverCAFile: /etc/ct/ca.pem
              clientCertificateFile: /etc/ct/client.pem
              clientCertificatePasswordFile: /etc/ct/client.pass
              keyIdentifier: ""
              rotateMasterKey: false
              connectRetries: 2
              connectTimeoutMS: 1000
              keyStatePollingSeconds: 60
        """
        let k = try XCTUnwrap(try PipelineFile.parse(good, file: "p.yaml").encryption?.masterKey?.kmip)
        XCTAssertEqual(k.serverName, "kmip1.example, kmip2.example")
        XCTAssertEqual(k.connectRetries, 2)
        let cases: [(String, String, String)] = [
            ("connectTimeoutMS: 1000", "connectTimeoutMS: 999", "below the minimum of 1000"),
            ("connectRetries: 2", "connectRetries: -1", "negative"),
            ("serverName: kmip1.example, kmip2.example", "serverName: a,,b", "host names"),
            ("port: 5696", "port: 70000", "not a TCP port"),
            ("clientCertificateFile: /etc/ct/client.pem", "clientCertificateFile: ''", "client certificate"),
            ("clientCertificatePasswordFile: /etc/ct/client.pass", "clientCertificatePasswordFile: /f\n      clientCertificatePasswordEnv: V", "not both"),
            ("clientCertificatePasswordFile: /etc/ct/client.pass", "clientCertificatePassword: hunter2", "unknown field"),
        ]
        for (from, to, message) in cases {
            XCTAssertThrowsError(try PipelineFile.parse(good.replacingOccurrences(of: from, with: to), file: "p.yaml"), to) { e in
                XCTAssertTrue("\(e)".contains(message), "\(to): \(e)")
                XCTAssertFalse("\(e)".contains("hunter2"), "a password never appears in an error")
            }
        }
        XCTAssertThrowsError(try PipelineFile.parse("encryption:\n  keyVault: /k\n  masterKey:\n    provider: kmip\n", file: "p.yaml")) { e in
            XCTAssertTrue("\(e)".contains("needs a kmip: section"), "\(e)")
        }
    }

    func testTailSectionParsesAndRefusesBadValues() throws {
        let p = try PipelineFile.parse("""
        tail: {segmentMaxSize: 16MiB, segmentMaxAgeSeconds: 0.5, idleCheckpointSeconds: 30, onLargeEvent: gap, baseSnapshot: false}
        restore: {batchSize: 500}
        """, file: "t.yaml")
        XCTAssertEqual(p.tail?.segmentMaxSize, "16MiB")
        XCTAssertEqual(p.tail?.segmentMaxAgeSeconds, 0.5)
        XCTAssertEqual(p.tail?.onLargeEvent, "gap")
        XCTAssertEqual(p.tail?.baseSnapshot, false)
        XCTAssertEqual(p.restore?.batchSize, 500)
        for (yaml, field) in [("tail: {onLargeEvent: skip}", "tail.onLargeEvent"), ("tail: {segmentMaxAgeSeconds: 0}", "tail.segmentMaxAgeSeconds"),
                              ("tail: {segmentMaxSize: lots}", "tail.segmentMaxSize"), ("tail: {segmentMaxAge: 1}", "tail.segmentMaxAge"),
                              ("restore: {batchSize: 0}", "restore.batchSize")] {
            XCTAssertThrowsError(try PipelineFile.parse(yaml, file: "t.yaml"), yaml) { e in
                XCTAssertTrue("\(e)".contains(field), "\(e)")
            }
        }
    }
}
