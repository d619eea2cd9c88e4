import Logging
import NIOConcurrencyHelpers
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

    /// Admin connections open at once; more are closed at accept.
    public static let maxConnections = 64
    /// An admin connection that sends nothing for this long is closed.
    public static let idleTimeout: TimeAmount = .seconds(30)
    /// Request body bytes read (and dropped) before the connection is closed.
    public static let maxBodyBytes = 64 * 1024

    public init(address: HostPort, routes: Routes, logger: Logger) {
        self.address = address
        self.routes = routes
        self.logger = logger
    }

    public func run() async throws {
        // Its own thread: a scrape (or an abusive admin client) never runs on
        // the event loops that serve IMAP sessions.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await bind(on: group)
        try? await gracefulShutdown()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Binds the listener on `group` (tests close the channel themselves).
    public func bind(on group: any EventLoopGroup) async throws -> Channel {
        let routes = self.routes
        let logger = self.logger
        let listen = "\(address)"
        let open = NIOLockedValueBox(0)
        let channel: Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // At the open-file limit, accepting pauses instead of spinning (as on the IMAP listeners).
                        try channel.pipeline.syncOperations.addHandler(ListenerBackoff(logger: logger, listener: listen))
                    }
                }
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let admitted = open.withLockedValue { count -> Bool in
                            guard count < AdminService.maxConnections else { return false }
                            count += 1
                            return true
                        }
                        guard admitted else {
                            channel.close(promise: nil)
                            return
                        }
                        channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(IdleStateHandler(allTimeout: AdminService.idleTimeout))
                        try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                        try pipeline.addHandler(AdminHandler(routes: routes))
                    }
                }
                .bind(host: address.host, port: address.port).get()
        } catch {
            throw AdminListenError(address: address, underlying: error)
        }
        logger.info("admin listening", metadata: [
            "listen.address": "\(HostPort(host: address.host, port: channel.localAddress?.port ?? address.port))",
        ])
        return channel
    }
}

/// The admin listener could not be opened: names the setting.
public struct AdminListenError: Error, CustomStringConvertible {
    public let address: HostPort
    public let underlying: any Error
    public var description: String { "admin.listen \(address): \(underlying)" }
}

/// One admin request at a time per connection; request bodies are read and
/// dropped (never buffered, at most `AdminService.maxBodyBytes`). Reads stop
/// while the client does not take what it was sent, so pipelined requests
/// from a client that never reads cannot pile answers up in memory.
final class AdminHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: AdminService.Routes
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    private var readPending = false

    init(routes: AdminService.Routes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            bodyBytes = 0
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
            if bodyBytes > AdminService.maxBodyBytes { context.close(promise: nil) }
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readPending {
            readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request NIO's parser refused was answered 400 by the error handler; the connection ends.
        context.close(promise: nil)
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
