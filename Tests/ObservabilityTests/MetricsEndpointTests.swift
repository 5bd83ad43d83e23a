import Foundation
import Metrics
import Observability
import Prometheus
import TestSupport
import XCTest

/// A thread-safe box the health closure reads, the test writes.
final class HealthState: @unchecked Sendable {
    private let lock = NSLock()
    private var value = Health.ok("capturing")
    var health: Health {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

/// The endpoint over real TCP connections, with metrics emitted through the swift-metrics API.
final class MetricsEndpointTests: XCTestCase {
    var endpoint: MetricsEndpoint!
    var port = 0
    let state = HealthState()

    override func setUpWithError() throws {
        let registry = Telemetry.bootstrap()
        let state = self.state
        endpoint = MetricsEndpoint(host: "127.0.0.1", port: 0, registry: registry, health: { state.health })
        port = try endpoint.start()
        XCTAssertGreaterThan(port, 0)
    }

    override func tearDown() {
        endpoint.stop()
    }

    /// The lines of the exposition that start with `prefix` (a sample or a comment).
    func lines(_ text: String, _ prefix: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(prefix) }
    }

    func testBootstrapIsIdempotent() {
        XCTAssertTrue(Telemetry.bootstrap() === Telemetry.bootstrap())
    }

    func testMetricsExpositionHasValuesAndTypes() throws {
        Counter(label: "test_endpoint_events_total").increment(by: 3)
        Counter(label: "test_endpoint_events_total").increment(by: 4)
        Counter(label: MetricName.segmentsWritten, dimensions: [("kind", "change")]).increment(by: 2)
        Counter(label: MetricName.segmentsWritten, dimensions: [("kind", "snapshot")]).increment()
        Gauge(label: "test_endpoint_lag_seconds").record(2.5)
        Gauge(label: MetricName.capturePaused, dimensions: [("reason", "disk_full")]).record(1)
        let timer = Timer(label: "test_endpoint_duration_seconds", dimensions: [("operation", "get")])
        timer.recordMilliseconds(30)
        timer.recordMilliseconds(700)

        let reply = try RawHTTP.get(port: port, "/metrics")
        XCTAssertEqual(reply.status, 200)
        XCTAssertEqual(reply.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4"), true, "\(reply.headers)")
        let text = reply.body

        XCTAssertEqual(lines(text, "# TYPE test_endpoint_events_total "), ["# TYPE test_endpoint_events_total counter"])
        XCTAssertEqual(lines(text, "test_endpoint_events_total "), ["test_endpoint_events_total 7"])
        XCTAssertEqual(lines(text, "# TYPE \(MetricName.segmentsWritten) "), ["# TYPE \(MetricName.segmentsWritten) counter"])
        XCTAssertEqual(Set(lines(text, MetricName.segmentsWritten + "{")),
                       ["\(MetricName.segmentsWritten){kind=\"change\"} 2", "\(MetricName.segmentsWritten){kind=\"snapshot\"} 1"])
        XCTAssertEqual(lines(text, "# TYPE test_endpoint_lag_seconds "), ["# TYPE test_endpoint_lag_seconds gauge"])
        XCTAssertEqual(lines(text, "test_endpoint_lag_seconds "), ["test_endpoint_lag_seconds 2.5"])
        XCTAssertEqual(lines(text, MetricName.capturePaused + "{"), ["\(MetricName.capturePaused){reason=\"disk_full\"} 1.0"])

        XCTAssertEqual(lines(text, "# TYPE test_endpoint_duration_seconds "), ["# TYPE test_endpoint_duration_seconds histogram"])
        let h = "test_endpoint_duration_seconds"
        XCTAssertEqual(lines(text, "\(h)_count{"), ["\(h)_count{operation=\"get\"} 2"])
        XCTAssertEqual(lines(text, "\(h)_sum{"), ["\(h)_sum{operation=\"get\"} 0.73"])
        // Cumulative buckets: 30 ms falls in 0.05 and above, 700 ms in 1 and above.
        XCTAssertEqual(lines(text, "\(h)_bucket{operation=\"get\",le=\"0.025\"}"), ["\(h)_bucket{operation=\"get\",le=\"0.025\"} 0"])
        XCTAssertEqual(lines(text, "\(h)_bucket{operation=\"get\",le=\"0.05\"}"), ["\(h)_bucket{operation=\"get\",le=\"0.05\"} 1"])
        XCTAssertEqual(lines(text, "\(h)_bucket{operation=\"get\",le=\"1.0\"}"), ["\(h)_bucket{operation=\"get\",le=\"1.0\"} 2"])
        XCTAssertEqual(lines(text, "\(h)_bucket{operation=\"get\",le=\"+Inf\"}"), ["\(h)_bucket{operation=\"get\",le=\"+Inf\"} 2"])

        // A later scrape sees later values.
        Counter(label: "test_endpoint_events_total").increment()
        XCTAssertEqual(lines(try RawHTTP.get(port: port, "/metrics").body, "test_endpoint_events_total "), ["test_endpoint_events_total 8"])
    }

    func testHealthzFollowsTheClosure() throws {
        let ok = try RawHTTP.get(port: port, "/healthz")
        XCTAssertEqual(ok.status, 200)
        XCTAssertEqual(ok.body, "ok capturing\n")

        state.health = .unhealthy("capture has not committed for 185 s (metrics.stallSeconds 120)")
        let bad = try RawHTTP.get(port: port, "/healthz")
        XCTAssertEqual(bad.status, 503)
        XCTAssertEqual(bad.body, "capture has not committed for 185 s (metrics.stallSeconds 120)\n")

        state.health = .ok("standby")
        XCTAssertEqual(try RawHTTP.get(port: port, "/healthz").body, "ok standby\n")
        state.health = .ok()
        XCTAssertEqual(try RawHTTP.get(port: port, "/healthz").body, "ok\n")
    }

    func testOtherPathsAndMethods() throws {
        XCTAssertEqual(try RawHTTP.get(port: port, "/").status, 404)
        XCTAssertEqual(try RawHTTP.get(port: port, "/metrics/extra").status, 404)
        XCTAssertEqual(try RawHTTP.get(port: port, "/metrics", method: "POST").status, 405)
        // A query string does not change the path.
        XCTAssertEqual(try RawHTTP.get(port: port, "/healthz?verbose=1").status, 200)
    }

    /// Two requests on one kept-alive connection get two answers, in order.
    func testKeepAliveServesSeveralRequests() throws {
        let text = try RawHTTP.exchange(port: port, raw: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                        + "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let replies = try RawHTTP.parse(text)
        XCTAssertEqual(replies.map(\.status), [200, 404])
        XCTAssertEqual(replies[0].body, "ok capturing\n")
    }

    func testStopClosesTheListener() throws {
        endpoint.stop()
        XCTAssertThrowsError(try RawHTTP.connect(port: port))
        endpoint.stop()  // twice is fine
    }

    func testTwoEndpointsGetDifferentPorts() throws {
        let other = MetricsEndpoint(host: "127.0.0.1", port: 0, registry: Telemetry.bootstrap())
        let p = try other.start()
        defer { other.stop() }
        XCTAssertNotEqual(p, port)
        XCTAssertEqual(try RawHTTP.get(port: p, "/healthz").body, "ok\n")
        // Binding a port in use is an error, not a hang.
        XCTAssertThrowsError(try MetricsEndpoint(host: "127.0.0.1", port: p, registry: Telemetry.bootstrap()).start())
    }
}
