import IMAPWire
import NIOCore
import NIOSSL
import SluiceFilters

/// Everything the proxy needs to run, validated and typed.
public struct ProxyConfiguration: Sendable {
    /// How a listener secures client connections.
    public enum ListenerSecurity: String, Sendable, CaseIterable {
        /// No TLS at all.
        case plain
        /// STARTTLS offered; plaintext login allowed.
        case starttls
        /// STARTTLS offered; LOGINDISABLED and no AUTH= until TLS is up.
        case starttlsRequired = "starttls-required"
        /// TLS from the first byte (port 993 style).
        case implicit

        var offersStartTLS: Bool { self == .starttls || self == .starttlsRequired }
        var requiresTLSForLogin: Bool { self == .starttlsRequired }
    }

    /// How the proxy secures its connection to the upstream server.
    public enum UpstreamSecurity: String, Sendable, CaseIterable {
        case plain, starttls, implicit
    }

    public struct Listener: Sendable {
        public var host: String
        public var port: Int
        public var security: ListenerSecurity
        /// Every connection starts with a PROXY protocol header (v1 or v2)
        /// from a load balancer, whose source address is the client's.
        public var proxyProtocol: Bool
        /// Balancers allowed to send it; any other connection is closed.
        public var proxyProtocolTrusted: [IPNetwork]
        /// One listening socket per event loop (`SO_REUSEPORT`), each
        /// accepting for its own loop, instead of one socket whose accepted
        /// connections are handed to the loops (nginx's `reuseport`).
        public var reusePort: Bool

        public init(host: String, port: Int, security: ListenerSecurity, proxyProtocol: Bool = false,
                    proxyProtocolTrusted: [IPNetwork] = [], reusePort: Bool = false) {
            self.host = host
            self.port = port
            self.security = security
            self.proxyProtocol = proxyProtocol
            self.proxyProtocolTrusted = proxyProtocolTrusted
            self.reusePort = reusePort
        }

        /// `HOST:PORT` as configured: the `listener` label of the session metrics.
        public var name: String { "\(HostPort(host: host, port: port))" }
    }

    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`); off when `nil`.
    public var admin: HostPort?

    /// PEM files for the listeners' TLS.
    public struct Certificate: Sendable {
        public var certificateFile: String
        public var keyFile: String
        /// Names (SNI) this certificate serves; `*.example.org` matches one
        /// label. The first certificate also serves clients that send no
        /// name or an unknown one.
        public var serverNames: [String]

        public init(certificateFile: String, keyFile: String, serverNames: [String] = []) {
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.serverNames = serverNames
        }
    }

    /// Whether the proxy answers greeting and login itself.
    public enum Mode: String, Sendable, CaseIterable {
        /// Pre-auth answered by the proxy, upstream chosen per user.
        case proxy
        /// Connects to the one upstream at once and relays greeting and
        /// login too (still framing every byte).
        case transparent
    }

    /// How users are sent to upstreams.
    public enum Routing: Sendable {
        /// Every user to one upstream.
        case `static`(Upstream)
        /// A router of its own: the routing map (SluiceConfig's `MapRouter`,
        /// re-read on SIGHUP), or one an embedding program brings.
        case router(any Router)
    }

    public enum LogFormat: String, Sendable, CaseIterable {
        case text, json
    }

    public enum LogLevel: String, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    /// The oldest TLS version accepted. TLS 1.0 and 1.1 are not offered
    /// (RFC 8996); Dovecot's and nginx's defaults are 1.2 as well.
    public enum TLSVersion: String, Sendable, CaseIterable {
        case tls12 = "1.2"
        case tls13 = "1.3"

        var nio: NIOSSL.TLSVersion { self == .tls13 ? .tlsv13 : .tlsv12 }
    }

    public struct Upstream: Sendable {
        public var host: String
        public var port: Int
        public var security: UpstreamSecurity
        /// PEM file of CA certificates to trust; the system store when `nil`.
        public var caFile: String?
        /// Verify the upstream's certificate and name (on by default).
        public var verifyCertificate: Bool
        /// The name to verify and send as SNI; `host` when `nil`.
        public var serverName: String?
        /// Tell the upstream the client's address and port (and the address
        /// the client connected to) with an `ID` command before login, as
        /// Dovecot's own proxy does: `x-originating-ip`, `x-originating-port`,
        /// `x-connected-ip`, `x-connected-port`. A server that trusts the
        /// proxy's address (Dovecot: `login_trusted_networks`) then logs and
        /// rate-limits by the real client; others ignore the fields.
        public var forwardClientAddress: Bool
        /// The oldest TLS version accepted from this upstream.
        public var minimumTLSVersion: TLSVersion = .tls12
        /// Send a PROXY protocol header with the client's address before
        /// anything else (Dovecot: a `haproxy = yes` listener); off when `nil`.
        public var proxyProtocol: ProxyProtocol.Version?

        public init(host: String, port: Int, security: UpstreamSecurity = .plain, caFile: String? = nil,
                    verifyCertificate: Bool = true, serverName: String? = nil, forwardClientAddress: Bool = true) {
            self.host = host
            self.port = port
            self.security = security
            self.caFile = caFile
            self.verifyCertificate = verifyCertificate
            self.serverName = serverName
            self.forwardClientAddress = forwardClientAddress
        }
    }

    public var mode: Mode = .proxy
    /// SASL mechanisms offered before login (`AUTH=…`), in order:
    /// `PLAIN`, `LOGIN`, `XOAUTH2`, `OAUTHBEARER`.
    public var authMechanisms: [String] = ProxyConfiguration.defaultAuthMechanisms
    public static let defaultAuthMechanisms = ["PLAIN", "LOGIN"]
    public static let supportedAuthMechanisms = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
    public var listeners: [Listener] = []
    /// The first is the default; others are chosen by SNI.
    public var certificates: [Certificate] = []
    public var routing: Routing?
    /// Text of the greeting after `* OK [CAPABILITY …]`.
    public var greeting: String = "Sluice ready."
    /// How long a failed login waits before its `NO` (slows password guessing).
    public var loginFailureDelay: TimeAmount = .seconds(2)
    /// Invalid pre-auth commands (and failed logins) before `* BYE`; nginx's default is 5.
    public var maxBadCommands: Int = 5
    /// Disconnect a client that sends nothing for this long before logging in.
    public var preAuthTimeout: TimeAmount = .seconds(60)
    /// Disconnect a logged-in session idle in both directions for this long
    /// (RFC 3501 §5.4 asks for at least 30 minutes).
    public var idleTimeout: TimeAmount = .minutes(30)
    public var connectTimeout: TimeAmount = .seconds(10)
    /// Absolute deadline from accepting a connection to a completed login;
    /// bytes do not extend it (a trickling client cannot stay forever).
    /// Dovecot's imap-login uses 3 minutes.
    public var loginTimeout: TimeAmount = .minutes(2)
    /// Routing plus the upstream's greeting, STARTTLS and login: past it the
    /// client gets `NO [UNAVAILABLE]`.
    public var upstreamLoginTimeout: TimeAmount = .seconds(30)
    /// Client commands relayed and not yet answered before the proxy stops
    /// reading from the client.
    public var maxCommandsInFlight: Int = 1000
    /// Client connections at once, over all listeners (`nil`: no limit).
    public var maxConnections: Int? = 10_000
    /// Client connections at once from one IP address (`nil`: no limit).
    public var maxConnectionsPerIP: Int?
    /// Failed logins from one address slow its next logins: each recent
    /// failure adds `loginFailureDelay`, up to this much in all.
    public var maxLoginPenalty: TimeAmount = .seconds(15)
    /// Outbound bytes queued towards one peer before the proxy stops reading
    /// from the other (back-pressure).
    public var writeBufferHighWaterMark: Int = 256 * 1024
    public var writeBufferLowWaterMark: Int = 64 * 1024
    public var clientLimits: IMAPLimits = .client
    public var serverLimits: IMAPLimits = .server
    /// On SIGTERM/SIGINT: how long commands in flight may take to finish
    /// before their sessions are closed anyway.
    public var shutdownGracePeriod: TimeAmount = .seconds(30)
    public var logFormat: LogFormat = .text
    public var logLevel: LogLevel = .info
    /// The oldest TLS version the listeners accept.
    public var minimumTLSVersion: TLSVersion = .tls12
    /// Event-loop threads; `nil` is one per core. Each session lives on one
    /// thread; fewer threads than cores leave CPU to a server on the same host.
    public var threads: Int?
    /// What `threads` may be (the file and `--threads` alike).
    public static let threadRange = 1...256
    /// The rules (`rules:`), as filters scoped to users, in order.
    public var filters = FilterSet()
    /// `rewrite_login` rules, tried in order before routing.
    public var loginRewrites: [LoginRewrite] = []

    public init() {}

    /// `500ms`, `30s`, `10m`, `1h`, or a bare number of seconds; the one
    /// duration syntax of the file and the command line.
    public static func duration(_ text: String) -> TimeAmount? {
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        for (suffix, nanoseconds) in units where text.hasSuffix(suffix) {
            if let number = Int64(text.dropLast(suffix.count)), number >= 0, number <= Int64.max / nanoseconds {
                return .nanoseconds(number * nanoseconds)
            }
        }
        if let seconds = Int64(text), seconds >= 0, seconds <= Int64.max / 1_000_000_000 { return .seconds(seconds) }
        return nil
    }

    public init(listeners: [Listener], certificate: Certificate? = nil, upstream: Upstream) {
        self.listeners = listeners
        self.certificates = certificate.map { [$0] } ?? []
        self.routing = .static(upstream)
    }

    /// The single upstream of static routing.
    public var staticUpstream: Upstream? {
        if case .static(let upstream) = routing { return upstream }
        return nil
    }

    /// Problems that make this configuration unable to run (after the file
    /// and the command-line flags are merged).
    public func completenessIssues(file: String?) -> [ConfigurationIssue] {
        var issues: [ConfigurationIssue] = []
        func report(_ path: String, _ message: String) {
            issues.append(ConfigurationIssue(file: file, line: nil, keyPath: path, message: message))
        }
        if listeners.isEmpty { report("listeners", "no listener (give listeners: in the file or --listen)") }
        if routing == nil { report("upstream", "no upstream (give upstream: or routing.map in the file, or --upstream)") }
        if certificates.isEmpty, let listener = listeners.first(where: { $0.security != .plain }) {
            report("tls.certificates", "listener \(listener.host):\(listener.port) uses \(listener.security.rawValue) TLS but no certificate is configured (tls.certificates or --cert/--key)")
        }
        if mode == .transparent {
            if staticUpstream == nil { report("mode", "transparent mode needs one static upstream, not a routing map") }
            if staticUpstream?.security == .starttls {
                report("upstream.tls", "transparent mode relays the greeting, so the upstream must be plain or implicit TLS, not starttls")
            }
            if let listener = listeners.first(where: { $0.security.offersStartTLS }) {
                report("listeners", "transparent mode cannot offer STARTTLS (listener \(listener.host):\(listener.port)); use plain or implicit")
            }
        }
        if writeBufferLowWaterMark > writeBufferHighWaterMark {
            report("limits.write_buffer_low_water_mark", "must not be above limits.write_buffer_high_water_mark")
        }
        return issues
    }
}
