import IMAPWire
import NIOCore

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

        public init(host: String, port: Int, security: ListenerSecurity) {
            self.host = host
            self.port = port
            self.security = security
        }
    }

    /// PEM files for the listeners' TLS.
    public struct Certificate: Sendable {
        public var certificateFile: String
        public var keyFile: String

        public init(certificateFile: String, keyFile: String) {
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
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

        public init(host: String, port: Int, security: UpstreamSecurity = .plain, caFile: String? = nil,
                    verifyCertificate: Bool = true, serverName: String? = nil) {
            self.host = host
            self.port = port
            self.security = security
            self.caFile = caFile
            self.verifyCertificate = verifyCertificate
            self.serverName = serverName
        }
    }

    public var listeners: [Listener]
    public var certificate: Certificate?
    public var upstream: Upstream
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
    /// Outbound bytes queued towards one peer before the proxy stops reading
    /// from the other (back-pressure).
    public var writeBufferHighWaterMark: Int = 256 * 1024
    public var writeBufferLowWaterMark: Int = 64 * 1024
    public var clientLimits: IMAPLimits = .client
    public var serverLimits: IMAPLimits = .server

    public init(listeners: [Listener], certificate: Certificate? = nil, upstream: Upstream) {
        self.listeners = listeners
        self.certificate = certificate
        self.upstream = upstream
    }
}
