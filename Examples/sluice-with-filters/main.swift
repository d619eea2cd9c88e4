import ExampleFilters
import Logging
import ServiceLifecycle
import SluiceFilters
import SluiceProxy
import SluiceConfig

/// A `sluice run` of one's own: the configuration file's rules plus a
/// custom filter. See docs/filters.md.
///
///     swift run sluice-with-filters sluice.yaml
@main
struct SluiceWithFilters {
    static func main() async throws {
        let path = CommandLine.arguments.dropFirst().first ?? "sluice.yaml"
        var configuration: ProxyConfiguration
        do {
            configuration = try ProxyConfiguration.load(file: path)
        } catch {
            print(error.description)
            return
        }
        // Custom filters go after (closer to the server than) the file's rules.
        configuration.filters.entries.append(.init(filter: MaxAppendSizeFilter(mailbox: "Sent", maxBytes: 25 << 20)))

        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = Logger(label: "sluice")
        let server = try ProxyServer(configuration: configuration, logger: logger)
        let service = ProxyService(server: server, gracePeriod: configuration.shutdownGracePeriod)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
