import Dispatch
import KMIP
import Metrics

/// Metrics of KMIP round trips, through swift-metrics (no dependency on Observability, to
/// keep this module light). The names equal Observability's `MetricName`; a test checks it.
public enum KMIPMetrics {
    public static let requestDuration = "ciphertail_kmip_request_duration_seconds"
    public static let errors = "ciphertail_kmip_errors_total"

    /// Times one request/response round trip under the request's operation. A thrown error
    /// or a reply whose batch item failed also counts as an error of that operation.
    public static func measure(request: [UInt8], _ roundTrip: () throws -> [UInt8]) throws -> [UInt8] {
        let operation = operationName(ofRequest: request)
        let start = DispatchTime.now().uptimeNanoseconds
        let reply: [UInt8]
        do {
            reply = try roundTrip()
        } catch {
            record(operation, start: start, failed: true)
            throw error
        }
        record(operation, start: start, failed: !succeeded(reply))
        return reply
    }

    private static func record(_ operation: String, start: UInt64, failed: Bool) {
        let elapsed = DispatchTime.now().uptimeNanoseconds &- start
        // Made per request, not kept: one made before the metrics backend was bootstrapped
        // would stay a no-op for good. Requests are rare, and the registry lookup is cheap.
        Timer(label: requestDuration, dimensions: [("operation", operation)]).recordNanoseconds(Int64(clamping: elapsed))
        if failed { Counter(label: errors, dimensions: [("operation", operation)]).increment() }
    }

    /// The operation of a request message's first batch item in snake case (`get`,
    /// `get_attributes`, `discover_versions`), or `unknown`. Label values stay few: they
    /// come from the KMIP specification's names, never from the request's data.
    static func operationName(ofRequest bytes: [UInt8]) -> String {
        guard let root = try? TTLV.decode(bytes), root.tag == .requestMessage, case .structure(let fields) = root.value,
              let item = fields.first(where: { $0.tag == .batchItem }), case .structure(let itemFields) = item.value,
              let op = itemFields.first(where: { $0.tag == .operation }), case .enumeration(let raw) = op.value,
              let name = KMIPOperation(rawValue: raw).name
        else { return "unknown" }
        return String(name.lowercased().map { $0 == " " || $0 == "-" ? "_" : $0 })
    }

    /// Whether every batch item of the reply succeeded (an unreadable reply did not).
    static func succeeded(_ reply: [UInt8]) -> Bool {
        guard let message = try? KMIPMessage.parseResponse(reply) else { return false }
        return !message.items.isEmpty && message.items.allSatisfy { $0.status == .success }
    }
}
