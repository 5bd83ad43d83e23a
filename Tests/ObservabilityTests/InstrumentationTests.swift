import BSON
@testable import Erasure
import FieldCrypto
import Foundation
import KMIP
@testable import KMIPClient
import Logging
import Observability
import Prometheus
import XCTest

/// The metric names, and the modules that emit metrics without importing Observability.
final class InstrumentationTests: XCTestCase {
    var registry: PrometheusCollectorRegistry!

    override func setUp() { registry = Telemetry.bootstrap() }

    /// The value of one sample line, `name{labels} value`, or nil when the series is absent.
    func sample(_ series: String) -> Double? {
        for line in registry.emitToString().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    func testMetricNamesAreValidAndUnique() {
        XCTAssertEqual(MetricName.all.count, 19)
        XCTAssertEqual(Set(MetricName.all).count, MetricName.all.count, "no name twice")
        for name in MetricName.all {
            XCTAssertNotNil(name.range(of: "^[a-zA-Z_:][a-zA-Z0-9_:]*$", options: .regularExpression), name)
            XCTAssertTrue(name.hasPrefix("ciphertail_"), name)
            XCTAssertFalse(name.hasPrefix("ciphertail__") || name.hasSuffix("_"), name)
        }
        let counters = [MetricName.captureEvents, MetricName.captureDocuments, MetricName.bytesIn, MetricName.bytesOut,
                        MetricName.replicationEvents, MetricName.segmentsWritten, MetricName.kmipErrors, MetricName.erasures,
                        MetricName.baseSnapshots, MetricName.prunedBackups, MetricName.gaps, MetricName.alerts]
        XCTAssertTrue(counters.allSatisfy { $0.hasSuffix("_total") })
        let others = Set(MetricName.all).subtracting(counters)
        XCTAssertTrue(others.allSatisfy { !$0.hasSuffix("_total") }, "only counters end in _total")
        for seconds in [MetricName.captureLag, MetricName.replicationLag, MetricName.resumeTokenAge, MetricName.kmipRequestDuration] {
            XCTAssertTrue(seconds.hasSuffix("_seconds"), seconds)
        }
    }

    /// KMIPClient and Erasure spell their names as literals; they must be Observability's.
    func testLiteralsMatchMetricName() {
        XCTAssertEqual(KMIPMetrics.requestDuration, MetricName.kmipRequestDuration)
        XCTAssertEqual(KMIPMetrics.errors, MetricName.kmipErrors)
        XCTAssertEqual(Eraser.erasuresMetric, MetricName.erasures)
    }

    func reply(_ operation: KMIPOperation, status: KMIPResultStatus) -> [UInt8] {
        let header = TTLV(.responseHeader, .structure([
            TTLV(.protocolVersion, .structure([TTLV(.protocolVersionMajor, .integer(1)), TTLV(.protocolVersionMinor, .integer(2))])),
            TTLV(.timeStamp, .dateTime(1_700_000_000)),
            TTLV(.batchCount, .integer(1)),
        ]))
        var item = [TTLV(.operation, .enumeration(operation.rawValue)), TTLV(.resultStatus, .enumeration(status.rawValue))]
        if status != .success { item.append(TTLV(.resultReason, .enumeration(KMIPResultReason.itemNotFound.rawValue))) }
        return TTLV(.responseMessage, .structure([header, TTLV(.batchItem, .structure(item))])).encode()
    }

    func testKMIPRoundTripsAreTimedAndFailuresCounted() throws {
        let get = KMIPMessage.request(version: .v1_2, .get(uniqueIdentifier: "42")).encode()
        let attrs = KMIPMessage.request(version: .v1_2, .getAttributes(uniqueIdentifier: "42", names: ["State"])).encode()
        XCTAssertEqual(KMIPMetrics.operationName(ofRequest: get), "get")
        XCTAssertEqual(KMIPMetrics.operationName(ofRequest: attrs), "get_attributes")
        XCTAssertEqual(KMIPMetrics.operationName(ofRequest: KMIPMessage.request(version: .v1_1, .discoverVersions()).encode()), "discover_versions")
        XCTAssertEqual(KMIPMetrics.operationName(ofRequest: [1, 2, 3]), "unknown")

        let d = MetricName.kmipRequestDuration
        let e = MetricName.kmipErrors
        let count0 = sample("\(d)_count{operation=\"get\"}") ?? 0
        let errors0 = sample("\(e){operation=\"get\"}") ?? 0

        // A success, a refusal in the reply, a lost connection.
        XCTAssertEqual(try KMIPMetrics.measure(request: get) { self.reply(.get, status: .success) }, reply(.get, status: .success))
        _ = try KMIPMetrics.measure(request: get) { self.reply(.get, status: .operationFailed) }
        XCTAssertThrowsError(try KMIPMetrics.measure(request: get) { throw KMIPTransportError.tlsSetup(reason: "test") })
        _ = try KMIPMetrics.measure(request: attrs) { self.reply(.getAttributes, status: .success) }

        XCTAssertEqual(sample("\(d)_count{operation=\"get\"}"), count0 + 3)
        XCTAssertEqual(sample("\(e){operation=\"get\"}"), errors0 + 2)
        XCTAssertGreaterThanOrEqual(sample("\(d)_count{operation=\"get_attributes\"}") ?? 0, 1)
        XCTAssertTrue(registry.emitToString().contains("# TYPE \(d) histogram"))
    }

    /// A real erasure (local master key, in-memory vault, ledger file) counts once; erasing again does not.
    func testErasureIsCountedOncePerSubject() throws {
        let dir = NSTemporaryDirectory() + "obs-erase-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var g = SystemRandomNumberGenerator()
        let master = try LocalMasterKey(bytes: (0..<96).map { _ in UInt8.random(in: 0...255, using: &g) })
        let engine = try MongoCryptEngine(localMasterKey: master, keyVault: try InMemoryKeyVault())
        let protector = DocumentProtector(rules: [], engine: engine)
        try protector.ensureKey(try protector.subjectKeyName(.string("u42")))
        let eraser = Eraser(protector: protector, ledger: try ErasureLedger.open(at: dir + "/ledger"), keyVaultBackups: nil,
                            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })

        let before = sample(MetricName.erasures) ?? 0
        let first = try eraser.erase(subject: .string("u42"), reason: "test")
        XCTAssertFalse(first.alreadyErased)
        XCTAssertEqual(first.keys.count, 1)
        XCTAssertEqual(sample(MetricName.erasures), before + 1)
        let again = try eraser.erase(subject: .string("u42"), reason: "test")
        XCTAssertTrue(again.alreadyErased)
        XCTAssertEqual(sample(MetricName.erasures), before + 1, "an erased subject is not counted twice")
    }
}
