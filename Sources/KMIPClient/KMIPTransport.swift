import Foundation
import Logging

/// Sends whole KMIP request messages and returns whole response messages, as TTLV bytes.
/// The operations layer (encoding with the `KMIP` codec module) works against this, so it
/// can be tested without a network.
public protocol KMIPMessageTransport: AnyObject {
    /// One request, one response. `idempotent` says whether the request may be sent again
    /// to another server when the connection fails mid-request (Get, Query, Locate and
    /// GetAttributes are; Create and Register are not: the first server may have done it).
    func roundTrip(_ request: [UInt8], idempotent: Bool) throws -> [UInt8]
}

/// Mutual-TLS connections to the KMIP servers of `KMIPOptions`, with failover.
///
/// - The TLS context (CA, client certificate, key and its password) is loaded in `init`,
///   so file and password problems are reported before any network traffic.
/// - Connecting tries the servers in the listed order, `connectRetries + 1` rounds, and
///   keeps the first that completes the handshake. It logs each failing server once per
///   connect, and a notice when the server used is not the first.
/// - One connection is kept and reused. When it fails during a request it is dropped,
///   and, for an idempotent request, the request is sent once more after connecting from
///   the next server in the list. A connection the server closed while idle is replaced
///   before the request is sent.
/// - Thread-safe: requests from several threads are serialised on the one connection
///   (KMIP requests are small; key unwraps are rare next to the data they protect).
public final class KMIPTransport: KMIPMessageTransport, @unchecked Sendable {
    public let options: KMIPOptions
    /// The servers of `options.serverName`, in the order they are tried.
    public let servers: [KMIPServer]
    private let context: TLSContext
    private let logger: Logger
    private let lock = NSLock()
    private var connection: TLSConnection?

    public init(options: KMIPOptions, logger: Logger = Logger(label: "ciphertail.kmip")) throws {
        try options.validate()
        self.options = options
        servers = try options.servers()
        context = try TLSContext(options: options)
        self.logger = logger
    }

    /// The server of the current connection, if there is one.
    public var connectedServer: KMIPServer? {
        lock.lock()
        defer { lock.unlock() }
        return connection?.server
    }

    /// Connects now if not connected; returns the server. With TLS 1.3 a server may refuse
    /// the client certificate only after the handshake, so a start-up probe should send a
    /// request (Query or DiscoverVersions) rather than rely on this alone.
    @discardableResult
    public func connect() throws -> KMIPServer {
        lock.lock()
        defer { lock.unlock() }
        return try usableConnection().server
    }

    /// Closes the connection; the next request connects again from the first server.
    public func disconnect() {
        lock.lock()
        defer { lock.unlock() }
        connection = nil
    }

    public func roundTrip(_ request: [UInt8], idempotent: Bool) throws -> [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        // Timed under the lock: the duration is the server's and the network's, not the queue's.
        return try KMIPMetrics.measure(request: request) { try send(request, idempotent: idempotent) }
    }

    /// One round trip, with the reconnect and the resend of an idempotent request. Call with the lock held.
    private func send(_ request: [UInt8], idempotent: Bool) throws -> [UInt8] {
        let conn = try usableConnection()
        do {
            return try conn.roundTrip(request, maxResponseBytes: options.maxResponseBytes)
        } catch let error as KMIPTransportError {
            connection = nil
            guard error.isConnectionFailure else { throw error }
            logger.warning("KMIP request failed", metadata: ["server": "\(conn.server)", "error": "\(error)"])
            // A request that changes state may have been carried out: the caller decides.
            guard idempotent else { throw error }
            let next = ((servers.firstIndex(of: conn.server) ?? 0) + 1) % servers.count
            let retry = try connect(startingAt: next)
            connection = retry
            do {
                return try retry.roundTrip(request, maxResponseBytes: options.maxResponseBytes)
            } catch {
                connection = nil
                throw error
            }
        }
    }

    /// The kept connection, or a new one from the first server. Call with the lock held.
    private func usableConnection() throws -> TLSConnection {
        var start = 0
        if let c = connection {
            connection = nil
            do {
                if try c.checkIdle() {
                    connection = c
                    return c
                }
                logger.debug("KMIP connection closed by the server while idle; reconnecting", metadata: ["server": "\(c.server)"])
            } catch {
                // The server refused us after the handshake. Nothing of the request was
                // sent, so it may go to the next server whatever it is.
                logger.warning("KMIP server refused the connection", metadata: ["server": "\(c.server)", "error": "\(error)"])
                start = ((servers.firstIndex(of: c.server) ?? 0) + 1) % servers.count
            }
        }
        let c = try connect(startingAt: start)
        connection = c
        return c
    }

    /// `connectRetries + 1` rounds over all servers, from `start`. Call with the lock held.
    private func connect(startingAt start: Int) throws -> TLSConnection {
        var failures: [KMIPServerFailure] = []
        var logged = Set<KMIPServer>()
        for _ in 0...options.connectRetries {
            for k in 0..<servers.count {
                let server = servers[(start + k) % servers.count]
                do {
                    let c = try TLSConnection(to: server, context: context, timeoutMS: options.connectTimeoutMS)
                    if server != servers[0] {
                        logger.notice("using KMIP server \(server), not the first listed (\(servers[0]))",
                                      metadata: ["server": "\(server)"])
                    }
                    return c
                } catch let error as KMIPTransportError {
                    failures.append(KMIPServerFailure(server: server, error: error))
                    if logged.insert(server).inserted {
                        logger.warning("KMIP server unavailable", metadata: ["server": "\(server)", "error": "\(error)"])
                    }
                }
            }
        }
        throw KMIPTransportError.allServersFailed(attempts: failures.count, failures: failures)
    }
}
