import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The admin HTTP listener, never on an IMAP port: `GET /metrics` (the
/// Prometheus text exposition, rendered by the caller's registry),
/// `GET /health` (`200` while the process runs), `GET /ready` (`200` while
/// the listeners accept, `503` once shutdown began, so that a load balancer
/// stops sending before the drain ends); anything else `404`.
///
/// A `Service`: listed before `ProxyService` in the `ServiceGroup`, it is
/// shut down after it, so `/ready` answers `503` through the drain.
public struct AdminService: Service {
    public struct Routes: Sendable {
        /// The exposition text (`text/plain; version=0.0.4`).
        public var metrics: @Sendable () -> [UInt8]
        public var isReady: @Sendable () -> Bool

        public init(metrics: @escaping @Sendable () -> [UInt8], isReady: @escaping @Sendable () -> Bool) {
            self.metrics = metrics
            self.isReady = isReady
        }
    }

    public let address: HostPort
    public let routes: Routes
    public let logger: Logger
    let group: MultiThreadedEventLoopGroup

    public init(address: HostPort, routes: Routes, logger: Logger, group: MultiThreadedEventLoopGroup = .singleton) {
        self.address = address
        self.routes = routes
        self.logger = logger
        self.group = group
    }

    public func run() async throws {
        let channel = try await bind()
        try? await gracefulShutdown()
        try? await channel.close()
    }

    /// Binds the listener (also for tests, which close the channel themselves).
    public func bind() async throws -> Channel {
        let routes = self.routes
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(routes: routes))
                }
            }
            .bind(host: address.host, port: address.port).get()
        logger.info("admin listening", metadata: [
            "listen.address": "\(HostPort(host: address.host, port: channel.localAddress?.port ?? address.port))",
        ])
        return channel
    }
}

/// One admin request at a time per connection; request bodies are ignored
/// (never buffered).
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminService.Routes
    private var head: HTTPRequestHead?

    init(routes: AdminService.Routes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let get = head.method == .GET || head.method == .HEAD
        let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
        switch (get, path) {
        case (true, "/metrics"):
            (status, contentType, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", routes.metrics())
        case (true, "/health"):
            (status, contentType, body) = (.ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
        case (true, "/ready"):
            (status, contentType, body) = routes.isReady()
                ? (.ok, "text/plain; charset=utf-8", Array("ready\n".utf8))
                : (.serviceUnavailable, "text/plain; charset=utf-8", Array("shutting down\n".utf8))
        default:
            (status, contentType, body) = (.notFound, "text/plain; charset=utf-8", Array("not found\n".utf8))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
