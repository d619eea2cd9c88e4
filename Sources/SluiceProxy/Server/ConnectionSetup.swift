import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// A connection on a `proxy_protocol` listener that may not send a header.
struct ProxyProtocolRefused: Error {}

/// Builds a client connection's session: what every accepted connection
/// gets, once its client's address is known (at once, or from a PROXY header).
struct ConnectionSetup: Sendable {
    let settings: NIOLockedValueBox<ProxyServer.Settings>
    let logger: Logger
    let sessions: SessionRegistry
    let limiter: ConnectionLimiter
    let penalty: LoginPenalty
    let metrics: ProxyMetrics

    func refused(_ peer: SocketAddress?, reason: String) {
        metrics.connectionRefused(.proxyProtocol)
        logger.notice("connection refused", metadata: [
            "client.address": "\(HostPort(peer)?.description ?? "-")", "reason": "\(reason)",
        ])
    }

    /// A connection on a `proxy_protocol` listener, before its header: it
    /// counts toward `max_connections` from now on. `false` (and the
    /// connection closed) when the proxy is full.
    func admitBeforeHeader(_ channel: Channel) -> Bool {
        if limiter.acquire(ip: nil) != nil {
            metrics.connectionRefused(.limit)
            logger.notice("connection refused", metadata: [
                "client.address": "\(HostPort(channel.remoteAddress)?.description ?? "-")", "reason": "limit",
            ])
            return false
        }
        let limiter = self.limiter
        channel.closeFuture.whenComplete { _ in limiter.release(ip: nil) }
        return true
    }

    /// Sets the session up. `counted`: the connection already holds its
    /// place in the total (`admitBeforeHeader`).
    func start(_ channel: Channel, listener: ProxyConfiguration.Listener, client: SocketAddress?,
               connected: SocketAddress?, counted: Bool = false) throws {
        let ip = client?.ipAddress
        let current = settings.withLockedValue { $0 }
        let pipeline = channel.pipeline.syncOperations
        if let refusal = limiter.acquire(ip: ip, countingTotal: !counted) {
            metrics.connectionRefused(refusal == .limit ? .limit : .perIPLimit)
            logger.notice("connection refused", metadata: [
                "client.address": "\(ip ?? "-")", "reason": "\(refusal.rawValue)",
            ])
            if listener.security == .implicit, let context = current.tls.server {
                try pipeline.addHandler(NIOSSLServerHandler(context: context))
            }
            try pipeline.addHandler(ConnectionRefusalHandler())
            return
        }
        let limiter = self.limiter, sessions = self.sessions
        channel.closeFuture.whenComplete { _ in limiter.release(ip: ip, countingTotal: !counted) }
        // Options are set here rather than as child channel options so
        // that a failure is logged: NIO would close the connection silently.
        do {
            if let options = channel.syncOptions { try current.tuning.apply(to: options) }
            let id = sessions.nextID()
            let session = ProxySession(id: id, settings: current, security: listener.security, penalty: penalty,
                                       clientChannel: channel, clientAddress: client, connectedAddress: connected,
                                       logger: logger, metrics: metrics, listener: listener.name)
            // TLS (implicit) reads the bytes first, then the session; after a PROXY reader, if any.
            if listener.security == .implicit, let context = current.tls.server {
                try pipeline.addHandler(ServerHelloReader())
                try pipeline.addHandler(NIOSSLServerHandler(context: context))
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
            let address = HostPort(client)?.description ?? "-"
            logger.warning("could not set up a client connection",
                           metadata: ["client.address": "\(address)", "error": "\(error)"])
            throw error
        }
    }
}
