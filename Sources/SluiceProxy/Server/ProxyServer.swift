import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Binds the configured listeners and runs a `ProxySession` per connection.
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    private let tls: ProxyTLS
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let channels: NIOLockedValueBox<[Channel]> = NIOLockedValueBox([])
    private let sessionCounter = NIOLockedValueBox(0)

    public init(configuration: ProxyConfiguration, logger: Logger,
                group: MultiThreadedEventLoopGroup = .singleton) throws {
        self.configuration = configuration
        self.tls = try ProxyTLS(configuration: configuration)
        self.group = group
        self.logger = logger
    }

    /// Binds every listener; returns their bound addresses.
    public func start() async throws -> [SocketAddress] {
        var addresses: [SocketAddress] = []
        for listener in configuration.listeners {
            let channel = try await bootstrap(for: listener).bind(host: listener.host, port: listener.port).get()
            channels.withLockedValue { $0.append(channel) }
            if let address = channel.localAddress { addresses.append(address) }
            logger.info("listening", metadata: [
                "listen.address": "\(listener.host):\(channel.localAddress?.port ?? listener.port)",
                "listen.security": "\(listener.security.rawValue)",
            ])
        }
        return addresses
    }

    /// Stops accepting connections.
    public func stop() async {
        let toClose = channels.withLockedValue { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in toClose { try? await channel.close() }
    }

    private func bootstrap(for listener: ProxyConfiguration.Listener) -> ServerBootstrap {
        let configuration = self.configuration
        let tls = self.tls
        let logger = self.logger
        let counter = self.sessionCounter
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(
                low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = counter.withLockedValue { value -> Int in
                        value += 1
                        return value
                    }
                    let session = ProxySession(id: id, configuration: configuration, security: listener.security,
                                               tls: tls, clientChannel: channel, logger: logger)
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(IdleStateHandler(allTimeout: configuration.preAuthTimeout),
                                            name: ProxySession.idleHandlerName)
                    if listener.security == .implicit, let context = tls.server {
                        try pipeline.addHandler(NIOSSLServerHandler(context: context), position: .first)
                    }
                    try pipeline.addHandler(ClientHandler(session: session))
                }
            }
    }
}
