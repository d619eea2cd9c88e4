import Glibc
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Binds the configured listeners and runs a `ProxySession` per connection.
///
/// What a new session starts with (the configuration, its certificates and
/// its router) is one `Settings` value, replaced whole by a reload: a
/// session keeps the settings it started with to its end.
public final class ProxyServer: Sendable {
    /// Everything a new session is built from. A class, so that every
    /// session holds one reference to it instead of its own copy of the
    /// configuration (416 bytes inline; issue 14, idle memory).
    final class Settings: Sendable {
        let configuration: ProxyConfiguration
        let tls: ProxyTLS
        let router: any Router
        let tuning: ChannelTuning
        /// The greeting of each kind of listener, made once per configuration
        /// rather than by every session from its capability names.
        private let plainGreeting, startTLSGreeting, startTLSRequiredGreeting, implicitGreeting: ByteBuffer
        /// What every session removes from capability lists (per session,
        /// it was a set and an array allocated per connection).
        let capabilityRewriter: CapabilityRewriter

        init(configuration: ProxyConfiguration, tls: ProxyTLS, router: any Router, tuning: ChannelTuning) {
            self.configuration = configuration
            self.tls = tls
            self.router = router
            self.tuning = tuning
            let greeting = { (security: ProxyConfiguration.ListenerSecurity) in
                ByteBuffer(string: PreAuthStateMachine(security: security, configuration: configuration).greeting())
            }
            plainGreeting = greeting(.plain)
            startTLSGreeting = greeting(.starttls)
            startTLSRequiredGreeting = greeting(.starttlsRequired)
            implicitGreeting = greeting(.implicit)
            capabilityRewriter = CapabilityRewriter(mode: configuration.mode)
        }

        /// What a new connection on a `security` listener is greeted with.
        func greeting(for security: ProxyConfiguration.ListenerSecurity) -> ByteBuffer {
            switch security {
            case .plain: plainGreeting
            case .starttls: startTLSGreeting
            case .starttlsRequired: startTLSRequiredGreeting
            case .implicit: implicitGreeting
            }
        }
    }

    private let settings: NIOLockedValueBox<Settings>
    /// The listeners bound at start; a reload cannot change them.
    private let listeners: [ProxyConfiguration.Listener]
    /// A router the embedding program gave `init`: kept across reloads.
    private let givenRouter: (any Router)?
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
        givenRouter = router
        settings = NIOLockedValueBox(try ProxyServer.settings(for: configuration, router: router))
        listeners = configuration.listeners
        self.group = group
        self.logger = logger
        limiter = ConnectionLimiter(maxConnections: configuration.maxConnections, maxPerIP: configuration.maxConnectionsPerIP)
        penalty = LoginPenalty(baseDelay: configuration.loginFailureDelay, maximum: configuration.maxLoginPenalty)
        metrics = ProxyMetrics(listeners: configuration.listeners.map(\.name))
    }

    private static func settings(for configuration: ProxyConfiguration, router given: (any Router)?) throws -> Settings {
        let tls = try ProxyTLS(configuration: configuration)
        let router: any Router
        if let given {
            router = given
        } else {
            switch configuration.routing {
            case .static(let upstream):
                router = StaticRouter(upstream: try UpstreamEndpoint(upstream))
            case .router(let configured):
                router = configured
            case nil:
                throw ProxyConfigurationError("no upstream configured")
            }
        }
        return Settings(configuration: configuration, tls: tls, router: router, tuning: ChannelTuning(configuration))
    }

    /// The configuration new sessions start with.
    public var configuration: ProxyConfiguration { settings.withLockedValue { $0.configuration } }
    /// The router new sessions start with.
    public var router: any Router { settings.withLockedValue { $0.router } }

    /// Whether the listeners are up and not shutting down (the admin listener's `/ready`).
    public var isReady: Bool { accepting.withLockedValue { $0 } }

    /// Binds every listener; returns their bound addresses.
    public func start() async throws -> [SocketAddress] {
        var addresses: [SocketAddress] = []
        for listener in listeners {
            // reuse_port: a socket per event loop, bound to the same port (the
            // first one's, when the configured port is 0), each accepting for
            // its own loop: no hand-off of accepted connections between threads.
            let groups: [any EventLoopGroup] = listener.reusePort ? Array(group.makeIterator()) : [group]
            var port = listener.port
            for (index, loops) in groups.enumerated() {
                var bootstrap = bootstrap(for: listener, on: loops)
                if listener.reusePort { bootstrap = bootstrap.serverChannelOption(.socketOption(.init(rawValue: SO_REUSEPORT)), value: 1) }
                let channel = try await bootstrap.bind(host: listener.host, port: port).get()
                channels.withLockedValue { $0.append(channel) }
                port = channel.localAddress?.port ?? port
                guard index == 0 else { continue }
                if let address = channel.localAddress { addresses.append(address) }
                logger.info("listening", metadata: [
                    "listen.address": "\(HostPort(host: listener.host, port: port))",
                    "listen.security": "\(listener.security.rawValue)",
                    "listen.sockets": "\(groups.count)",
                ])
            }
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

    /// SIGHUP without a configuration file to re-read (an embedding
    /// program's): re-reads certificates and the router's sources, and
    /// reopens audit logs (logrotate). What fails to load is reported and
    /// the previous version stays in use.
    public func reload() {
        let current = settings.withLockedValue { $0 }
        var succeeded = true
        do {
            try current.tls.store?.reload()
            if current.tls.store != nil { logger.info("certificates reloaded") }
        } catch {
            succeeded = false
            logger.error("certificate reload failed; keeping the previous certificates", metadata: ["error": "\(error)"])
        }
        do {
            try current.router.reload()
            logger.info("routing reloaded")
        } catch {
            succeeded = false
            logger.error("routing reload failed; keeping the previous routing", metadata: ["error": "\(error)"])
        }
        succeeded = reopenAuditLogs(current.configuration) && succeeded
        metrics.configReloaded(succeeded: succeeded)
    }

    /// SIGHUP with the configuration file read again: new sessions start
    /// with `configuration` (rules and scripts, routing, certificates,
    /// limits, timeouts, greeting, mode); sessions already running keep the
    /// one they started with. Listeners, `threads` and `admin` need a new
    /// socket or thread: a change to them is logged as needing a restart.
    /// If the new certificates or routing do not load, nothing changes.
    public func reload(configuration new: ProxyConfiguration) {
        let previous = settings.withLockedValue { $0 }
        let fresh: Settings
        do {
            fresh = try ProxyServer.settings(for: new, router: givenRouter)
            if givenRouter != nil { try fresh.router.reload() }
        } catch {
            logger.error("configuration reload failed; keeping the running configuration", metadata: ["error": "\(error)"])
            metrics.configReloaded(succeeded: false)
            return
        }
        settings.withLockedValue { $0 = fresh }
        limiter.update(maxConnections: new.maxConnections, maxPerIP: new.maxConnectionsPerIP)
        penalty.update(baseDelay: new.loginFailureDelay, maximum: new.maxLoginPenalty)
        // Sessions on the previous rules still write their audit logs: after logrotate, to new files.
        let reopened = reopenAuditLogs(previous.configuration)
        for change in ProxyServer.restartOnlyChanges(from: listeners, previous: previous.configuration, to: new) {
            logger.notice("configuration change needs a restart; the running value stays", metadata: ["key": "\(change)"])
        }
        metrics.configReloaded(succeeded: reopened)
        logger.info("configuration reloaded", metadata: [
            "rules": "\(new.filters.entries.count)", "sessions.running": "\(sessions.count)",
        ])
    }

    private func reopenAuditLogs(_ configuration: ProxyConfiguration) -> Bool {
        let failed = configuration.filters.reopenAuditLogs()
        for path in failed {
            logger.error("audit log reopen failed; keeping the previous file", metadata: ["audit.file": "\(path)"])
        }
        return failed.isEmpty
    }

    /// Keys whose new value a reload cannot apply.
    static func restartOnlyChanges(from bound: [ProxyConfiguration.Listener], previous: ProxyConfiguration,
                                   to new: ProxyConfiguration) -> [String] {
        var changes: [String] = []
        let describe = { (listeners: [ProxyConfiguration.Listener]) in
            listeners.map { "\($0.name) \($0.security.rawValue) \($0.proxyProtocol) \($0.proxyProtocolTrusted) \($0.reusePort)" }
        }
        if describe(bound) != describe(new.listeners) { changes.append("listeners") }
        if previous.threads != new.threads { changes.append("threads") }
        if previous.admin?.description != new.admin?.description { changes.append("admin") }
        if previous.logFormat != new.logFormat { changes.append("log.format") }
        return changes
    }

    private func bootstrap(for listener: ProxyConfiguration.Listener, on group: any EventLoopGroup) -> ServerBootstrap {
        let logger = self.logger
        let metrics = self.metrics
        let setup = ConnectionSetup(settings: settings, logger: logger, sessions: sessions, limiter: limiter,
                                    penalty: penalty, metrics: metrics)
        let listenAddress = "\(HostPort(host: listener.host, port: listener.port))"
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // NIO's default, named here because accepted sockets inherit
            // TCP_NODELAY from the listening one: it is not set per connection.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ListenerBackoff(logger: logger, listener: listenAddress, metrics: metrics))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard listener.proxyProtocol else {
                        try setup.start(channel, listener: listener, client: channel.remoteAddress,
                                        connected: channel.localAddress)
                        return
                    }
                    // Only a trusted balancer may say who the client is.
                    let peer = channel.remoteAddress
                    guard let peer, listener.proxyProtocolTrusted.contains(where: { $0.contains(peer) }) else {
                        setup.refused(peer, reason: "PROXY protocol from an untrusted address")
                        throw ProxyProtocolRefused()
                    }
                    guard setup.admitBeforeHeader(channel) else { throw ProxyProtocolRefused() }
                    try channel.pipeline.syncOperations.addHandler(ProxyProtocolReader(
                        setUp: { channel, header in
                            try setup.start(channel, listener: listener, client: header.source ?? channel.remoteAddress,
                                            connected: header.destination ?? channel.localAddress, counted: true)
                        },
                        refused: { reason in setup.refused(peer, reason: reason) }))
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

