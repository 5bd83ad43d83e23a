/// Where a connection or request was when it timed out or failed.
public enum KMIPPhase: String, Sendable, Equatable {
    case connect = "TCP connect"
    case tlsHandshake = "TLS handshake"
    case write = "request write"
    case read = "response read"
}

/// One failed attempt to reach a server.
public struct KMIPServerFailure: Sendable, Equatable, CustomStringConvertible {
    public var server: KMIPServer
    public var error: KMIPTransportError

    public var description: String { "\(server): \(error.reason)" }
}

/// Every way the KMIP transport fails. Descriptions name the server (`host:port`) and the
/// files involved, and OpenSSL's reason where it gave one; never a password or key.
public enum KMIPTransportError: Error, Sendable, Equatable, CustomStringConvertible {
    // Local files, checked before any network traffic.
    case fileNotFound(role: String, path: String)
    case fileUnusable(role: String, path: String, reason: String)
    case keyPasswordRequired(path: String)
    case wrongKeyPassword(path: String)
    case keyDoesNotMatchCertificate(path: String)
    case tlsSetup(reason: String)

    // Reaching a server.
    case unresolvable(server: KMIPServer, reason: String)
    case connectionRefused(server: KMIPServer)
    case unreachable(server: KMIPServer, reason: String)
    case timeout(server: KMIPServer, phase: KMIPPhase, milliseconds: Int)
    /// The server's certificate failed verification (unknown CA, expired, wrong host name).
    case serverCertificateRejected(server: KMIPServer, reason: String)
    /// The server refused our certificate (a TLS alert such as "certificate expired").
    case clientCertificateRejected(server: KMIPServer, alert: String)
    case tlsFailed(server: KMIPServer, phase: KMIPPhase, reason: String)
    case connectionLost(server: KMIPServer, phase: KMIPPhase, reason: String)

    // The response.
    case responseTooLarge(server: KMIPServer, declared: UInt32, limit: Int)
    case notAStructure(server: KMIPServer, type: UInt8)
    case truncatedResponse(server: KMIPServer, expected: Int, received: Int)

    /// No server could be reached: every attempt, in order.
    case allServersFailed(attempts: Int, failures: [KMIPServerFailure])

    public var description: String {
        switch self {
        case .fileNotFound, .fileUnusable, .keyPasswordRequired, .wrongKeyPassword, .keyDoesNotMatchCertificate,
             .tlsSetup, .allServersFailed:
            return reason
        default:
            return "KMIP server \(server.map { "\($0)" } ?? "?"): \(reason)"
        }
    }

    /// The description without the server prefix.
    public var reason: String {
        switch self {
        case let .fileNotFound(role, path): return "KMIP \(role) \(path) does not exist"
        case let .fileUnusable(role, path, reason): return "KMIP \(role) \(path) cannot be used: \(reason)"
        case let .keyPasswordRequired(path):
            return "the private key in KMIP client certificate file \(path) is encrypted and no password was given"
        case let .wrongKeyPassword(path):
            return "wrong password for the private key in KMIP client certificate file \(path)"
        case let .keyDoesNotMatchCertificate(path):
            return "the private key in KMIP client certificate file \(path) does not match its certificate"
        case let .tlsSetup(reason): return "KMIP TLS set-up failed: \(reason)"
        case let .unresolvable(_, reason): return "cannot resolve the host name: \(reason)"
        case .connectionRefused: return "connection refused (nothing listens on that port)"
        case let .unreachable(_, reason): return "unreachable: \(reason)"
        case let .timeout(_, phase, ms): return "timed out after \(ms) ms during the \(phase.rawValue)"
        case let .serverCertificateRejected(_, reason): return "server certificate verification failed: \(reason)"
        case let .clientCertificateRejected(_, alert): return "the server rejected the client certificate: \(alert)"
        case let .tlsFailed(_, phase, reason): return "TLS failure during the \(phase.rawValue): \(reason)"
        case let .connectionLost(_, phase, reason): return "connection lost during the \(phase.rawValue): \(reason)"
        case let .responseTooLarge(_, declared, limit):
            return "response declares \(declared) bytes, more than the \(limit) allowed; refused without reading it"
        case let .notAStructure(_, type):
            return String(format: "response is not a KMIP message: its header has item type 0x%02x, not 0x01 (Structure)", type)
        case let .truncatedResponse(_, expected, received):
            return received == 0 && expected == 8
                ? "the server closed the connection without replying"
                : "truncated response: the server closed the connection after \(received) of \(expected) bytes"
        case let .allServersFailed(attempts, failures):
            let servers = Set(failures.map(\.server)).count
            // The last failure of each server, in the order the servers were tried.
            var last: [KMIPServer: KMIPServerFailure] = [:]
            var order: [KMIPServer] = []
            for f in failures {
                if last[f.server] == nil { order.append(f.server) }
                last[f.server] = f
            }
            let each = order.compactMap { last[$0]?.description }.joined(separator: "; ")
            return "could not reach any KMIP server after \(attempts) attempt\(attempts == 1 ? "" : "s") "
                + "(\(servers) server\(servers == 1 ? "" : "s")): \(each)"
        }
    }

    /// The server the error is about, if it is about one.
    public var server: KMIPServer? {
        switch self {
        case let .unresolvable(s, _), let .connectionRefused(s), let .unreachable(s, _), let .timeout(s, _, _),
             let .serverCertificateRejected(s, _), let .clientCertificateRejected(s, _), let .tlsFailed(s, _, _),
             let .connectionLost(s, _, _), let .responseTooLarge(s, _, _), let .notAStructure(s, _),
             let .truncatedResponse(s, _, _):
            return s
        default:
            return nil
        }
    }

    /// A failure of the connection (not of what the server said): worth another server.
    var isConnectionFailure: Bool {
        switch self {
        case .unresolvable, .connectionRefused, .unreachable, .timeout, .serverCertificateRejected,
             .clientCertificateRejected, .tlsFailed, .connectionLost, .truncatedResponse:
            return true
        default:
            return false
        }
    }
}
