import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// What `/healthz` reports. `detail` is the response body (after `ok ` when healthy).
public struct Health: Sendable, Equatable {
    public var healthy: Bool
    public var detail: String

    public init(healthy: Bool, detail: String) {
        self.healthy = healthy
        self.detail = detail
    }

    public static func ok(_ detail: String = "") -> Health { Health(healthy: true, detail: detail) }
    public static func unhealthy(_ reason: String) -> Health { Health(healthy: false, detail: reason) }
}

/// A small HTTP/1.1 server for scrapes and probes: `GET /metrics` (Prometheus text
/// format), `GET /healthz` (200 or 503), anything else 404. It runs on its own event loop
/// thread, so a slow scraper never holds up capture, and capture never blocks a scrape.
public final class MetricsEndpoint: @unchecked Sendable {
    public let host: String
    public let port: Int
    private let registry: PrometheusCollectorRegistry
    private let health: @Sendable () -> Health
    private let lock = NSLock()
    private var group: MultiThreadedEventLoopGroup?
    private var channel: Channel?

    public init(host: String, port: Int, registry: PrometheusCollectorRegistry,
                health: @escaping @Sendable () -> Health = { .ok() }) {
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
    }

    /// Binds and starts serving; returns the bound port (port 0 picks a free one).
    @discardableResult
    public func start() throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        if let channel, let p = channel.localAddress?.port { return p }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let registry = self.registry
        let health = self.health
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(HTTPHandler(registry: registry, health: health))
                }
            }
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        do {
            let ch = try bootstrap.bind(host: host, port: port).wait()
            self.group = group
            self.channel = ch
            return ch.localAddress?.port ?? port
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Stops accepting, closes the connections and waits for the event loop thread to end.
    public func stop() {
        lock.lock()
        let (channel, group) = (self.channel, self.group)
        self.channel = nil
        self.group = nil
        lock.unlock()
        try? channel?.close().wait()
        try? group?.syncShutdownGracefully()
    }

    deinit { stop() }
}

/// One connection's requests, answered in order once each request has been read whole.
private final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private let health: @Sendable () -> Health
    private var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, health: @escaping @Sendable () -> Health) {
        self.registry = registry
        self.health = health
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break  // no request here has a body worth reading
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        let contentType: String
        var body: [UInt8]
        switch (head.method, path) {
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            status = .ok
            contentType = "text/plain; version=0.0.4; charset=utf-8"
            body = registry.emitToBuffer()
        case (.GET, "/healthz"), (.HEAD, "/healthz"):
            let h = health()
            status = h.healthy ? .ok : .serviceUnavailable
            contentType = "text/plain; charset=utf-8"
            body = Array(((h.healthy ? (h.detail.isEmpty ? "ok" : "ok " + h.detail) : h.detail) + "\n").utf8)
        case (_, "/metrics"), (_, "/healthz"):
            status = .methodNotAllowed
            contentType = "text/plain; charset=utf-8"
            body = Array("method not allowed\n".utf8)
        default:
            status = .notFound
            contentType = "text/plain; charset=utf-8"
            body = Array("not found\n".utf8)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        if head.method == .HEAD { body = [] }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in ctx.value.close(promise: nil) }
        }
    }
}
