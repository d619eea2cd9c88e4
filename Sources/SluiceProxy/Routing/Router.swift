import IMAPWire
import NIOCore
import NIOPosix
import NIOSSL

/// Decides, for a client that logged in to the proxy, which upstream server
/// serves it and how the proxy logs in there.
///
/// The proxy asks once per login. A router answers on the session's event
/// loop: a table lookup completes the future at once (no thread hop); a
/// router that asks a remote service (the HTTP auth service) returns a
/// future completed later, e.g. with `eventLoop.makeFutureWithTask`. The
/// proxy never logs what a router receives, since it includes the password.
public protocol Router: Sendable {
    func route(_ request: RouteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RouteDecision>

    /// Re-reads the router's sources (SIGHUP). On failure the router keeps
    /// serving what it had and throws the reason.
    func reload() throws
}

extension Router {
    public func reload() throws {}
}

/// What the proxy knows about a client when it asks for a route.
public struct RouteRequest: Sendable {
    /// The name and password the client logged in with.
    public var credentials: Credentials
    public var clientAddress: SocketAddress?
    /// The client's ID parameters (RFC 2971), if it sent ID before logging in.
    public var clientID: IDParameters?
    /// Whether the client connection is protected by TLS.
    public var clientUsesTLS: Bool
    /// The client's TLS version (`TLSv1.3`), when it uses TLS.
    public var clientTLSProtocol: String?
    /// The client's TLS cipher suite by OpenSSL's name (`TLS_AES_256_GCM_SHA384`), when it uses TLS.
    public var clientTLSCipher: String?
    /// How the client logged in (AUTHENTICATE PLAIN, XOAUTH2 …).
    public var mechanism: LoginMechanism
    /// The client used the LOGIN command (not AUTHENTICATE LOGIN).
    public var loginCommand: Bool
    /// This connection's login attempts so far, this one included (from 1).
    public var loginAttempt: Int

    public init(credentials: Credentials, clientAddress: SocketAddress? = nil,
                clientID: IDParameters? = nil, clientUsesTLS: Bool = false, clientTLSProtocol: String? = nil,
                clientTLSCipher: String? = nil,
                mechanism: LoginMechanism = .login, loginCommand: Bool = true, loginAttempt: Int = 1) {
        self.credentials = credentials
        self.clientAddress = clientAddress
        self.clientID = clientID
        self.clientUsesTLS = clientUsesTLS
        self.clientTLSProtocol = clientTLSProtocol
        self.clientTLSCipher = clientTLSCipher
        self.mechanism = mechanism
        self.loginCommand = loginCommand
        self.loginAttempt = loginAttempt
    }
}

public enum RouteDecision: Sendable {
    case route(Route)
    /// Refuse the login; `response` is the tagged reply without the tag,
    /// e.g. `NO [AUTHENTICATIONFAILED] Authentication failed.`
    case reject(response: String)

    public static let unknownUser = RouteDecision.reject(response: "NO [AUTHENTICATIONFAILED] Authentication failed.")
}

/// Where a session goes and how it logs in there.
public struct Route: Sendable {
    public var upstream: UpstreamEndpoint
    public var login: UpstreamLogin
    /// A name for logs and metrics (the map's upstream name); `host:port` otherwise.
    public var upstreamName: String
    /// Groups the user belongs to, for rules scoped with `users: ["group:NAME"]`.
    public var groups: [String]
    /// Log in upstream with this password (or token) instead of the client's
    /// (an auth service's `Auth-Pass`).
    public var password: [UInt8]?

    public init(upstream: UpstreamEndpoint, login: UpstreamLogin, upstreamName: String? = nil, groups: [String] = []) {
        self.upstream = upstream
        self.login = login
        self.groups = groups
        self.upstreamName = upstreamName ?? "\(upstream.host):\(upstream.port)"
    }
}

/// How the proxy logs in to the upstream.
public enum UpstreamLogin: Sendable, Equatable {
    /// With the client's password, as `user` (the client's own login name,
    /// or a rewritten one).
    case asUser(String)
    /// As a master user on behalf of `user` (Dovecot's `user*master`, or
    /// AUTHENTICATE PLAIN with `user` as the authorization identity). The
    /// client's password is never checked upstream, so only a router that
    /// verified it itself may answer with this.
    case masterUser(user: String, masterUser: String, masterPassword: [UInt8], separator: String)
}

/// An upstream server with its TLS context built (once, when loaded).
public struct UpstreamEndpoint: Sendable {
    public var host: String
    public var port: Int
    public var security: ProxyConfiguration.UpstreamSecurity
    /// For `starttls` and `implicit`.
    public var tlsContext: NIOSSLContext?
    /// SNI and the name to verify; `nil` for an IP address (the certificate
    /// must then name the IP itself).
    public var serverName: String?
    /// The socket address when `host` is an IP address: connecting to it
    /// skips name resolution (host names go through `ResolverCache`).
    public var address: SocketAddress?
    /// See `ProxyConfiguration.Upstream.forwardClientAddress`.
    public var forwardClientAddress: Bool
    /// See `ProxyConfiguration.Upstream.proxyProtocol`.
    public var proxyProtocol: ProxyProtocol.Version?

    public init(_ upstream: ProxyConfiguration.Upstream) throws {
        host = upstream.host
        port = upstream.port
        forwardClientAddress = upstream.forwardClientAddress
        proxyProtocol = upstream.proxyProtocol
        address = try? SocketAddress(ipAddress: upstream.host, port: upstream.port)
        security = upstream.security
        if upstream.security != .plain {
            var client = TLSConfiguration.makeClientConfiguration()
            client.minimumTLSVersion = upstream.minimumTLSVersion.nio
            if let caFile = upstream.caFile { client.trustRoots = .file(caFile) }
            client.certificateVerification = upstream.verifyCertificate ? .fullVerification : .none
            tlsContext = try NIOSSLContext(configuration: client)
            let name = upstream.serverName ?? upstream.host
            serverName = UpstreamEndpoint.isIPAddress(name) ? nil : name
        }
    }

    /// Connects `bootstrap` (on `eventLoop`) to this endpoint; a host name
    /// is resolved through the shared `ResolverCache`.
    func connect(_ bootstrap: ClientBootstrap, on eventLoop: any EventLoop) -> EventLoopFuture<Channel> {
        if let address { return bootstrap.connect(to: address) }
        return bootstrap.resolver(CachingResolver(cache: .shared, eventLoop: eventLoop)).connect(host: host, port: port)
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Every user to one upstream, logging in with their own name and password.
public struct StaticRouter: Router {
    public let upstream: UpstreamEndpoint

    public init(upstream: UpstreamEndpoint) { self.upstream = upstream }

    public func route(_ request: RouteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RouteDecision> {
        eventLoop.makeSucceededFuture(.route(Route(upstream: upstream, login: .asUser(request.credentials.userName))))
    }
}
