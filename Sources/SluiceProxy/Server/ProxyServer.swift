import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Binds the configured listeners and runs a `ProxySession` per connection.
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    public let router: any Router
    private let tls: ProxyTLS
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let channels: NIOLockedValueBox<[Channel]> = NIOLockedValueBox([])
    private let sessions = SessionRegistry()
    private let limiter: ConnectionLimiter
    private let penalty: LoginPenalty
    /// Created once, after the metrics backend is bootstrapped (docs/operations.md).
    public let metrics: ProxyMetrics
    /// Listeners accept connections (`/ready`); false once shutdown began.
    private let accepting = NIOLockedValueBox(false)

    /// Builds TLS contexts and the router (a static upstream or the routing
    /// map) from `configuration`; `router` replaces the configured routing.
    public init(configuration: ProxyConfiguration, router: (any Router)? = nil, logger: Logger,
                group: MultiThreadedEventLoopGroup = .singleton) throws {
        self.configuration = configuration
        self.tls = try ProxyTLS(configuration: configuration)
        if let router {
            self.router = router
        } else {
            switch configuration.routing {
            case .static(let upstream):
                self.router = StaticRouter(upstream: try UpstreamEndpoint(upstream))
            case .router(let router):
                self.router = router
            case nil:
                throw ProxyConfigurationError("no upstream configured")
            }
        }
        self.group = group
        self.logger = logger
        limiter = ConnectionLimiter(maxConnections: configuration.maxConnections, maxPerIP: configuration.maxConnectionsPerIP)
        penalty = LoginPenalty(baseDelay: configuration.loginFailureDelay, maximum: configuration.maxLoginPenalty)
        metrics = ProxyMetrics(listeners: configuration.listeners.map(\.name))
    }

    /// Whether the listeners are up and not shutting down (the admin listener's `/ready`).
    public var isReady: Bool { accepting.withLockedValue { $0 } }

    /// Binds every listener; returns their bound addresses.
    public func start() async throws -> [SocketAddress] {
        var addresses: [SocketAddress] = []
        for listener in configuration.listeners {
            let channel = try await bootstrap(for: listener).bind(host: listener.host, port: listener.port).get()
            channels.withLockedValue { $0.append(channel) }
            if let address = channel.localAddress { addresses.append(address) }
            logger.info("listening", metadata: [
                "listen.address": "\(HostPort(host: listener.host, port: channel.localAddress?.port ?? listener.port))",
                "listen.security": "\(listener.security.rawValue)",
            ])
        }
        accepting.withLockedValue { $0 = true }
        return addresses
    }

    /// Stops accepting connections.
    public func stop() async {
        accepting.withLockedValue { $0 = false }
        let toClose = channels.withLockedValue { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in toClose { try? await channel.close() }
    }

    /// Graceful shutdown: stop accepting, say `* BYE` to sessions with no
    /// command in flight, let the others finish their commands for up to
    /// `gracePeriod`, then close what is left.
    public func shutdown(gracePeriod: TimeAmount) async {
        await stop()
        let open = sessions.count
        logger.info("shutting down", metadata: ["sessions": "\(open)", "grace.seconds": "\(gracePeriod.nanoseconds / 1_000_000_000)"])
        sessions.forEach { $0.beginShutdown() }
        let deadline = NIODeadline.now() + gracePeriod
        while sessions.count > 0 && NIODeadline.now() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        if sessions.count > 0 {
            logger.notice("grace period over, closing sessions", metadata: ["sessions": "\(sessions.count)"])
            sessions.forEach { $0.forceClose() }
            let hardDeadline = NIODeadline.now() + .seconds(2)
            while sessions.count > 0 && NIODeadline.now() < hardDeadline {
                try? await Task.sleep(nanoseconds: 20_000_000)
            }
        }
    }

    /// SIGHUP: re-reads certificates and the routing map, and reopens audit
    /// logs (logrotate). What fails to load is reported and the previous
    /// version stays in use.
    public func reload() {
        var succeeded = true
        do {
            try tls.store?.reload()
            if tls.store != nil { logger.info("certificates reloaded") }
        } catch {
            succeeded = false
            logger.error("certificate reload failed; keeping the previous certificates", metadata: ["error": "\(error)"])
        }
        do {
            try router.reload()
            logger.info("routing reloaded")
        } catch {
            succeeded = false
            logger.error("routing reload failed; keeping the previous routing", metadata: ["error": "\(error)"])
        }
        for path in configuration.filters.reopenAuditLogs() {
            succeeded = false
            logger.error("audit log reopen failed; keeping the previous file", metadata: ["audit.file": "\(path)"])
        }
        metrics.configReloaded(succeeded: succeeded)
        logger.notice("the main configuration file is not re-read on SIGHUP; restart to apply its changes")
    }

    private func bootstrap(for listener: ProxyConfiguration.Listener) -> ServerBootstrap {
        let configuration = self.configuration
        let tls = self.tls
        let router = self.router
        let logger = self.logger
        let sessions = self.sessions
        let limiter = self.limiter
        let penalty = self.penalty
        let metrics = self.metrics
        let tuning = ChannelTuning(configuration)
        let listenAddress = "\(HostPort(host: listener.host, port: listener.port))"
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ListenerBackoff(logger: logger, listener: listenAddress, metrics: metrics))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ip = channel.remoteAddress?.ipAddress
                    if let refusal = limiter.acquire(ip: ip) {
                        metrics.connectionRefused(refusal == .limit ? .limit : .perIPLimit)
                        logger.notice("connection refused", metadata: [
                            "client.address": "\(ip ?? "-")", "reason": "\(refusal.rawValue)",
                        ])
                        let pipeline = channel.pipeline.syncOperations
                        if listener.security == .implicit, let context = tls.server {
                            try pipeline.addHandler(NIOSSLServerHandler(context: context))
                        }
                        try pipeline.addHandler(ConnectionRefusalHandler())
                        return
                    }
                    channel.closeFuture.whenComplete { _ in limiter.release(ip: ip) }
                    // Options are set here rather than as child channel options so
                    // that a failure is logged: NIO would close the connection silently.
                    do {
                        if let options = channel.syncOptions { try tuning.apply(to: options) }
                        let id = sessions.nextID()
                        let session = ProxySession(id: id, configuration: configuration, security: listener.security,
                                                   tls: tls, router: router, penalty: penalty, clientChannel: channel,
                                                   logger: logger, metrics: metrics, listener: listener.name)
                        let pipeline = channel.pipeline.syncOperations
                        if listener.security == .implicit, let context = tls.server {
                            try pipeline.addHandler(NIOSSLServerHandler(context: context), position: .first)
                        }
                        try pipeline.addHandler(ClientHandler(session: session))
                        // Registered only once it is set up: a failure above leaves nothing behind.
                        let bound = NIOLoopBound(session, eventLoop: channel.eventLoop)
                        sessions.add(id, SessionRegistry.Handle(eventLoop: channel.eventLoop, session: bound))
                        // The session is open as long as its client connection, including one
                        // closed before it became active (no channelInactive then, so the session
                        // never ends by itself, and a graceful shutdown would wait for it).
                        channel.closeFuture.whenComplete { _ in sessions.remove(id) }
                    } catch {
                        let address = HostPort(channel.remoteAddress)?.description ?? "-"
                        logger.warning("could not set up a client connection",
                                       metadata: ["client.address": "\(address)", "error": "\(error)"])
                        throw error
                    }
                }
            }
    }
}

/// The open sessions, so shutdown can reach each on its own event loop.
final class SessionRegistry: Sendable {
    struct Handle: Sendable {
        var eventLoop: any EventLoop
        var session: NIOLoopBound<ProxySession>

        func beginShutdown() {
            let session = self.session
            eventLoop.execute { session.value.beginShutdown() }
        }

        func forceClose() {
            let session = self.session
            eventLoop.execute { session.value.forceClose() }
        }
    }

    private let state = NIOLockedValueBox<(counter: Int, open: [Int: Handle])>((0, [:]))

    func nextID() -> Int {
        state.withLockedValue { state in
            state.counter += 1
            return state.counter
        }
    }

    func add(_ id: Int, _ handle: Handle) { state.withLockedValue { $0.open[id] = handle } }
    func remove(_ id: Int) { _ = state.withLockedValue { $0.open.removeValue(forKey: id) } }
    var count: Int { state.withLockedValue { $0.open.count } }

    func forEach(_ body: (Handle) -> Void) {
        let handles = state.withLockedValue { Array($0.open.values) }
        handles.forEach(body)
    }
}

