import Foundation
import Metrics
import Prometheus

/// The process's metrics backend. swift-metrics allows one bootstrap per process, and a
/// metric object binds to the backend when it is created, so every caller goes through
/// here and gets the same registry.
public enum Telemetry {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var registry: PrometheusCollectorRegistry?

    /// Bootstraps swift-metrics with a Prometheus factory on first call; later calls return
    /// the same registry.
    @discardableResult
    public static func bootstrap() -> PrometheusCollectorRegistry {
        lock.lock()
        defer { lock.unlock() }
        if let registry { return registry }
        let r = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: r))
        registry = r
        return r
    }
}
