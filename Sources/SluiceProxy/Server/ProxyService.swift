import NIOCore
import ServiceLifecycle

/// The proxy as a swift-service-lifecycle service: binds the listeners,
/// runs until a graceful shutdown is requested (SIGTERM/SIGINT in a
/// `ServiceGroup`), then drains the sessions (see `ProxyServer.shutdown`).
public struct ProxyService: Service {
    public let server: ProxyServer
    public let gracePeriod: TimeAmount

    public init(server: ProxyServer, gracePeriod: TimeAmount) {
        self.server = server
        self.gracePeriod = gracePeriod
    }

    public func run() async throws {
        _ = try await server.start()
        // Returns when the group starts a graceful shutdown (or is cancelled).
        try? await gracefulShutdown()
        await server.shutdown(gracePeriod: gracePeriod)
    }
}
