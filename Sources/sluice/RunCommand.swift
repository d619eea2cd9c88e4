import ArgumentParser
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals
import SluiceConfig
import SluiceProxy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The settings `run` and `check` share: a configuration file and the flags
/// that override it (or replace it, for the one-upstream case).
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .long, help: "YAML configuration file (see docs/configuration.md).")
    var config: String?

    @Option(name: .long, help: "Address to listen on, HOST:PORT ([::1]:PORT for IPv6); repeatable. Replaces the file's listeners.")
    var listen: [String] = []

    @Option(name: .customLong("listen-tls"), help: "Client-side TLS for --listen: plain, starttls, starttls-required or implicit.")
    var listenTLS: ProxyConfiguration.ListenerSecurity?

    @Option(name: .long, help: "Certificate chain (PEM) for TLS listeners. Replaces the file's certificates.")
    var cert: String?

    @Option(name: .long, help: "Private key (PEM) for --cert.")
    var key: String?

    @Option(name: .long, help: "The IMAP server, HOST:PORT. Replaces the file's upstream or routing.")
    var upstream: String?

    @Option(name: .customLong("upstream-tls"), help: "Upstream TLS: plain, starttls or implicit.")
    var upstreamTLS: ProxyConfiguration.UpstreamSecurity?

    @Option(name: .customLong("upstream-ca"), help: "CA certificates (PEM) to verify the upstream with, instead of the system's.")
    var upstreamCA: String?

    @Flag(name: .customLong("no-upstream-verify"), help: "Do not verify the upstream's certificate (labs only).")
    var noUpstreamVerify = false

    @Flag(name: .customLong("log-json"), help: "Log one JSON object per line instead of text.")
    var logJSON = false

    @Option(name: .long, help: "Event-loop threads (default: one per core).")
    var threads: Int?

    @Option(name: .customLong("login-failure-delay"), help: "Delay before a failed login is answered, e.g. 2s or 50ms (timeouts.login_failure_delay).")
    var loginFailureDelay: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (log.level).")
    var logLevel: ProxyConfiguration.LogLevel?

    @Option(name: .customLong("admin-listen"), help: "HTTP address for /metrics, /health and /ready, on loopback (admin.listen).")
    var adminListen: String?

    func validate() throws {
        for address in listen { _ = try hostPort(address, option: "--listen") }
        if let upstream { _ = try hostPort(upstream, option: "--upstream") }
        if let adminListen, !(try hostPort(adminListen, option: "--admin-listen")).isLoopback {
            throw ValidationError("--admin-listen: the admin listener serves metrics without authentication; "
                + "give a loopback address (or admin.listen with allow_remote: true in the file)")
        }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        for (option, path) in [("--cert", cert), ("--key", key), ("--upstream-ca", upstreamCA), ("--config", config)] {
            if let path, access(path, R_OK) != 0 { throw ValidationError("\(option): cannot read \(path)") }
        }
        if config == nil && listen.isEmpty { throw ValidationError("give --config FILE, or --listen HOST:PORT and --upstream HOST:PORT") }
        if config == nil && upstream == nil { throw ValidationError("--upstream HOST:PORT is required without --config") }
    }

    /// The file (if any) with the flags applied over it, checked for
    /// completeness. Throws every problem found.
    func configuration() throws(ConfigurationErrors) -> ProxyConfiguration {
        var configuration = ProxyConfiguration()
        if let config { configuration = try ProxyConfiguration.load(file: config) }
        var issues: [ConfigurationIssue] = []
        func flagIssue(_ flag: String, _ message: String) {
            issues.append(ConfigurationIssue(file: nil, line: nil, keyPath: flag, message: message))
        }
        if !listen.isEmpty {
            configuration.listeners = listen.compactMap { text in
                guard let address = try? HostPort(text) else { return nil }
                return ProxyConfiguration.Listener(host: address.host, port: address.port, security: listenTLS ?? .plain)
            }
        } else if let listenTLS {
            for index in configuration.listeners.indices { configuration.listeners[index].security = listenTLS }
        }
        if let cert, let key {
            configuration.certificates = [ProxyConfiguration.Certificate(certificateFile: cert, keyFile: key)]
        }
        if let upstream, let address = try? HostPort(upstream) {
            configuration.routing = .static(ProxyConfiguration.Upstream(host: address.host, port: address.port))
        }
        if upstreamTLS != nil || upstreamCA != nil || noUpstreamVerify {
            if var upstream = configuration.staticUpstream {
                if let upstreamTLS { upstream.security = upstreamTLS }
                if let upstreamCA { upstream.caFile = upstreamCA }
                if noUpstreamVerify { upstream.verifyCertificate = false }
                configuration.routing = .static(upstream)
            } else {
                flagIssue("--upstream-tls/--upstream-ca/--no-upstream-verify", "only apply to a single upstream (--upstream or upstream: in the file)")
            }
        }
        if logJSON { configuration.logFormat = .json }
        if let threads {
            let range = ProxyConfiguration.threadRange
            if range.contains(threads) {
                configuration.threads = threads
            } else {
                flagIssue("--threads", "must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
        }
        if let loginFailureDelay {
            if let amount = ProxyConfiguration.duration(loginFailureDelay) {
                configuration.loginFailureDelay = amount
            } else {
                flagIssue("--login-failure-delay", "expected a duration such as 2s or 50ms, got \(loginFailureDelay)")
            }
        }
        if let logLevel { configuration.logLevel = logLevel }
        if let adminListen, let address = try? HostPort(adminListen) { configuration.admin = address }
        issues += configuration.completenessIssues(file: config)
        if !issues.isEmpty { throw ConfigurationErrors(issues) }
        return configuration
    }
}

/// `sluice run`: the proxy.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy.",
        discussion: """
            With a configuration file:
              sluice run --config /etc/sluice/sluice.yaml
            For one upstream no file is needed:
              sluice run --listen 127.0.0.1:1143 --upstream 127.0.0.1:143
            Flags override the file. SIGHUP reloads the whole configuration
            for new sessions (listeners, threads and admin need a restart);
            SIGTERM or SIGINT shuts down gracefully.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let configuration: ProxyConfiguration
        do {
            configuration = try options.configuration()
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let json = configuration.logFormat == .json
        LogLevelSetting.level = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
        LoggingSystem.bootstrap { label in
            json ? JSONLogHandler(label: label) as any LogHandler : TextLogHandler(label: label)
        }
        let logger = Logger(label: "sluice")
        if let threads = configuration.threads { NIOSingletons.groupLoopCountSuggestion = threads }
        raiseOpenFileLimit(logger: logger)
        // Metrics are created by the server: the backend goes in first.
        let registry = configuration.admin.map { _ in PrometheusMetricsExport.bootstrap() }
        let server = try ProxyServer(configuration: configuration, logger: logger)
        let options = self.options
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: ReloadService(logger: logger) {
                // The file and the flags again, as at start; a file that does not load changes nothing.
                let fresh: ProxyConfiguration
                do throws(ConfigurationErrors) {
                    fresh = try options.configuration()
                } catch {
                    for issue in error.issues {
                        logger.error("configuration reload failed; keeping the running configuration",
                                     metadata: ["error": "\(issue)"])
                    }
                    server.metrics.configReloaded(succeeded: false)
                    return
                }
                LogLevelSetting.level = Logger.Level(rawValue: fresh.logLevel.rawValue) ?? .info
                server.reload(configuration: fresh)
            }),
        ]
        if let admin = configuration.admin, let registry {
            // Before the proxy in the group: shut down after it, so /ready says 503 through the drain.
            let routes = AdminService.Routes(metrics: { registry.render() }, isReady: { server.isReady })
            services.append(.init(service: AdminService(address: admin, routes: routes, logger: logger)))
        }
        services.append(.init(service: ProxyService(server: server, gracePeriod: configuration.shutdownGracePeriod)))
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        logger.info("stopped")
    }
}

/// Reloads on each SIGHUP (swift-service-lifecycle's signal sequence)
/// until the group shuts down.
struct ReloadService: Service {
    let logger: Logger
    let reload: @Sendable () -> Void

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            logger.info("SIGHUP: reloading the configuration")
            reload()
        }
    }
}

func hostPort(_ text: String, option: String) throws -> HostPort {
    do {
        return try HostPort(text)
    } catch {
        throw ValidationError("\(option): \(error.message)")
    }
}

extension ProxyConfiguration.ListenerSecurity: ExpressibleByArgument {}
extension ProxyConfiguration.UpstreamSecurity: ExpressibleByArgument {}

/// Each session holds two sockets, and the usual soft limit (1,024) would
/// stop a proxy at about 500 sessions; like Dovecot and nginx's
/// `worker_rlimit_nofile`, raise the soft limit to the hard one at start.
func raiseOpenFileLimit(logger: Logger) {
    var limit = rlimit()
    #if canImport(Glibc)
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    let resource = RLIMIT_NOFILE
    #endif
    guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let previous = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(resource, &limit) == 0 {
        logger.info("open-file limit raised", metadata: ["from": "\(previous)", "to": "\(limit.rlim_max)"])
    } else {
        logger.warning("could not raise the open-file limit", metadata: ["limit": "\(previous)", "sessions.max": "\(previous / 2)"])
    }
}

extension ProxyConfiguration.LogLevel: ExpressibleByArgument {}

