import NIOCore
import NIOPosix
import NIOSSL

/// Opens a session's connection to its upstream: TCP with the session's
/// `ChannelTuning` and connect timeout, TLS first for an implicit-TLS
/// upstream, then the session's handler. STARTTLS upstreams get their TLS
/// handler later, once the server agreed (`startTLS`).
struct UpstreamConnector: Sendable {
    let tuning: ChannelTuning
    let connectTimeout: TimeAmount

    init(_ configuration: ProxyConfiguration) {
        tuning = ChannelTuning(configuration)
        connectTimeout = configuration.connectTimeout
    }

    /// Connects to `upstream` on the session's event loop; `makeHandler`
    /// runs on that loop when the channel is set up.
    /// `proxyHeader` (the PROXY protocol header for the client) goes first.
    func connect(to upstream: UpstreamEndpoint, on eventLoop: any EventLoop, proxyHeader: ByteBuffer? = nil,
                 makeHandler: @escaping @Sendable () -> any ChannelHandler) -> EventLoopFuture<Channel> {
        let tlsContext = upstream.security == .implicit ? upstream.tlsContext : nil
        let serverName = upstream.serverName
        let tuning = self.tuning
        let bootstrap = ClientBootstrap(group: eventLoop).connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)  // NIO's default too: no extra step
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let options = channel.syncOptions { try tuning.apply(to: options) }
                    if let proxyHeader {
                        try channel.pipeline.syncOperations.addHandler(ProxyHeaderWriter(header: proxyHeader))
                    }
                    if let tlsContext {
                        let handler = try NIOSSLClientHandler(context: tlsContext, serverHostname: serverName)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
        return upstream.connect(bootstrap, on: eventLoop)
    }

    /// STARTTLS agreed: TLS goes in front of everything on `channel`.
    static func startTLS(on channel: Channel, upstream: UpstreamEndpoint) throws {
        guard let context = upstream.tlsContext else { throw UpstreamTLSUnavailable() }
        let handler = try NIOSSLClientHandler(context: context, serverHostname: upstream.serverName)
        try channel.pipeline.syncOperations.addHandler(handler, position: .first)
    }
}

/// An upstream asked for STARTTLS has no TLS context.
struct UpstreamTLSUnavailable: Error, CustomStringConvertible {
    var description: String { "no TLS context for upstream" }
}
