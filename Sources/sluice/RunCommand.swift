import ArgumentParser
import Dispatch
import Logging
import NIOCore
import SluiceProxy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `sluice run`: the proxy.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy.",
        discussion: """
            For one upstream no configuration file is needed:
              sluice run --listen 127.0.0.1:1143 --upstream 127.0.0.1:143
            """
    )

    @Option(name: .long, help: "Address to listen on, HOST:PORT ([::1]:PORT for IPv6); repeatable.")
    var listen: [String] = []

    @Option(name: .customLong("listen-tls"), help: "Client-side TLS: plain, starttls, starttls-required or implicit.")
    var listenTLS: ProxyConfiguration.ListenerSecurity = .plain

    @Option(name: .long, help: "Certificate chain (PEM) for TLS listeners.")
    var cert: String?

    @Option(name: .long, help: "Private key (PEM) for TLS listeners.")
    var key: String?

    @Option(name: .long, help: "The IMAP server, HOST:PORT.")
    var upstream: String

    @Option(name: .customLong("upstream-tls"), help: "Upstream TLS: plain, starttls or implicit.")
    var upstreamTLS: ProxyConfiguration.UpstreamSecurity = .plain

    @Option(name: .customLong("upstream-ca"), help: "CA certificates (PEM) to verify the upstream with, instead of the system's.")
    var upstreamCA: String?

    @Flag(name: .customLong("no-upstream-verify"), help: "Do not verify the upstream's certificate (labs only).")
    var noUpstreamVerify = false

    @Flag(name: .customLong("log-json"), help: "Log one JSON object per line instead of text.")
    var logJSON = false

    func validate() throws {
        if listen.isEmpty { throw ValidationError("--listen HOST:PORT is required") }
        for address in listen { _ = try HostPort(address, option: "--listen") }
        _ = try HostPort(upstream, option: "--upstream")
        if listenTLS != .plain && (cert == nil || key == nil) {
            throw ValidationError("--listen-tls \(listenTLS.rawValue) needs --cert FILE and --key FILE")
        }
        for (option, path) in [("--cert", cert), ("--key", key), ("--upstream-ca", upstreamCA)] {
            if let path, access(path, R_OK) != 0 { throw ValidationError("\(option): cannot read \(path)") }
        }
    }

    func run() async throws {
        let json = logJSON
        LoggingSystem.bootstrap { label in
            json ? JSONLogHandler(label: label) as any LogHandler : StreamLogHandler.standardError(label: label)
        }
        let logger = Logger(label: "sluice")
        let upstreamAddress = try HostPort(upstream, option: "--upstream")
        var configuration = ProxyConfiguration(
            listeners: try listen.map {
                let address = try HostPort($0, option: "--listen")
                return ProxyConfiguration.Listener(host: address.host, port: address.port, security: listenTLS)
            },
            certificate: cert.flatMap { cert in key.map { ProxyConfiguration.Certificate(certificateFile: cert, keyFile: $0) } },
            upstream: ProxyConfiguration.Upstream(
                host: upstreamAddress.host, port: upstreamAddress.port, security: upstreamTLS,
                caFile: upstreamCA, verifyCertificate: !noUpstreamVerify))
        if let delay = getenv("SLUICE_LOGIN_FAILURE_DELAY_MS").flatMap({ Int64(String(cString: $0)) }) {
            configuration.loginFailureDelay = .milliseconds(delay)
        }
        let server = try ProxyServer(configuration: configuration, logger: logger)
        _ = try await server.start()
        await waitForTerminationSignal()
        logger.info("stopping")
        await server.stop()
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`.
struct HostPort {
    var host: String
    var port: Int

    init(_ text: String, option: String) throws {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ValidationError("\(option): expected [HOST]:PORT, got \(text)") }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ValidationError("\(option): expected HOST:PORT, got \(text)") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
            throw ValidationError("\(option): expected HOST:PORT with a port from 0 to 65535, got \(text)")
        }
        self.host = String(host)
        self.port = port
    }
}

extension ProxyConfiguration.ListenerSecurity: ExpressibleByArgument {}
extension ProxyConfiguration.UpstreamSecurity: ExpressibleByArgument {}

/// Returns when SIGINT or SIGTERM arrives.
func waitForTerminationSignal() async {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let queue = DispatchQueue(label: "sluice.signals")
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = SignalOnce(continuation)
        for number in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { once.resume() }
            source.resume()
            once.keep(source)
        }
    }
}

/// Resumes a continuation once, whichever signal comes first.
private final class SignalOnce: @unchecked Sendable {
    // Only touched on the signal queue (and once during setup, before any signal).
    private var continuation: CheckedContinuation<Void, Never>?
    private var sources: [DispatchSourceSignal] = []

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }

    func keep(_ source: DispatchSourceSignal) { sources.append(source) }

    func resume() {
        continuation?.resume()
        continuation = nil
    }
}
