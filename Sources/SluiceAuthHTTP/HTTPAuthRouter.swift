import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceProxy

/// Routes each login by asking an HTTP auth service that speaks nginx's
/// `auth_http` protocol (nginx's ngx_mail_auth_http_module), so a service
/// written for nginx works unchanged (docs/configuration.md, `routing.http`).
///
/// Per login, a `GET` with nginx's request headers (`Auth-Method`,
/// `Auth-User`, `Auth-Pass`, `Auth-Protocol`, `Auth-Login-Attempt`,
/// `Client-IP`, `Auth-SSL`, `Auth-SSL-Protocol`, `Auth-SSL-Cipher`) and the configured extra
/// ones. `Auth-Status: OK` with `Auth-Server` (an IP address) and `Auth-Port`
/// routes there, optionally as `Auth-User` with `Auth-Pass`; any other
/// `Auth-Status` refuses the login with its text, after `Auth-Wait` seconds.
/// Sluice's own answer headers (`X-Sluice-…`) choose upstream TLS, the
/// server name, the PROXY protocol, groups and a master-user login.
///
/// A service that is down, slower than the timeout, or answers anything
/// else fails the route: the client gets `NO [UNAVAILABLE]`, never a login.
/// Requests to an `http://` service go out on the session's own event loop
/// over kept-alive connections (`AuthServiceClient`); an `https://` service
/// is asked through AsyncHTTPClient's shared client, on the same event-loop
/// group. Either way the answer is read on the session's event loop.
public final class HTTPAuthRouter: Router {
    public struct Settings: Sendable {
        public var url: String
        public var timeout: TimeAmount
        /// Extra request headers (nginx's `auth_http_header`).
        public var headers: [Header]
        /// What every upstream starts from (TLS mode and CA, verification,
        /// PROXY protocol, ID forwarding); the answer gives host and port.
        public var upstream: ProxyConfiguration.Upstream

        public struct Header: Sendable, Hashable {
            public var name: String
            public var value: String
            public init(name: String, value: String) {
                self.name = name
                self.value = value
            }
        }

        public init(url: String, timeout: TimeAmount = .seconds(5), headers: [Header] = [],
                    upstream: ProxyConfiguration.Upstream = ProxyConfiguration.Upstream(host: "", port: 0)) {
            self.url = url
            self.timeout = timeout
            self.headers = headers
            self.upstream = upstream
        }
    }

    public let settings: Settings
    /// The client an embedding program gave; otherwise `sharedClient`,
    /// touched only when an `https://` service is first asked: creating it
    /// starts NIO's singleton event-loop group, which must not happen before
    /// `sluice run` has set the group's thread count (`threads:`; with
    /// `routing.http` the process stopped at start-up).
    private let givenClient: HTTPClient?
    private var client: HTTPClient { givenClient ?? HTTPAuthRouter.sharedClient }
    /// For an `http://` service: requests on the sessions' own event loops
    /// (`AuthServiceClient`); `nil` for `https://`, which AsyncHTTPClient serves.
    private let loopClient: AuthServiceClient?
    /// Made when used: the router is built while the configuration loads,
    /// before the logging system is set up.
    private var logger: Logger { Logger(label: "sluice") }
    /// Endpoints (with their TLS contexts) by what makes them differ: built
    /// once per distinct upstream, not per login.
    private let endpoints = NIOLockedValueBox<[EndpointKey: UpstreamEndpoint]>([:])
    /// Distinct upstreams remembered at most (a service naming ever new ones cannot grow memory).
    static let maxEndpoints = 4096
    /// Most of the service's answer body read (and dropped: only headers matter).
    static let maxBodyBytes = 64 * 1024
    /// The longest `Auth-Wait` honoured (below the 30 s upstream-login timeout).
    static let maxWait: Int64 = 20

    struct EndpointKey: Hashable {
        var host: String
        var port: Int
        var security: ProxyConfiguration.UpstreamSecurity
        var serverName: String?
        var proxyProtocol: ProxyProtocol.Version?
    }

    /// One client for every router: on NIO's singleton group (the sessions'
    /// own), never following redirects (nginx does not, and a redirect would
    /// send the password to wherever it points), never shut down.
    public static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(idleTimeout: .seconds(60))
        return HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
    }()

    /// Checks the URL now, so that a configuration with a bad one does not load.
    public init(settings: Settings, client: HTTPClient? = nil) throws {
        let parsed = try HTTPClient.Request(url: settings.url, method: .GET)
        self.settings = settings
        self.givenClient = client
        if parsed.scheme.lowercased() == "http" {
            loopClient = AuthServiceClient(target: .init(
                host: parsed.host, port: parsed.port, requestTarget: HTTPAuthRouter.requestTarget(of: settings.url),
                hostHeader: parsed.port == 80 ? parsed.host : "\(parsed.host):\(parsed.port)"))
        } else {
            loopClient = nil
        }
    }

    public func route(_ request: RouteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RouteDecision> {
        let answer: EventLoopFuture<HTTPResponseHead>
        if let loopClient {
            answer = loopClient.get(headers: requestHeaders(request), on: eventLoop, deadline: .now() + settings.timeout)
        } else {
            let httpRequest: HTTPClient.Request
            do {
                httpRequest = try HTTPClient.Request(url: settings.url, method: .GET, headers: requestHeaders(request))
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
            answer = client.execute(request: httpRequest, delegate: HeadOnly(), eventLoop: .delegateAndChannel(on: eventLoop),
                                    deadline: .now() + settings.timeout).futureResult
                .hop(to: eventLoop)
        }
        let logger = self.logger
        return answer
            .flatMapThrowing { head in try self.decision(head, request: request) }
            .flatMap { decision, wait in
                guard let wait, wait > .zero else { return eventLoop.makeSucceededFuture(decision) }
                return eventLoop.scheduleTask(in: wait) { decision }.futureResult
            }
            .flatMapErrorThrowing { error in
                logger.warning("auth service failed", metadata: ["auth.url": "\(self.settings.url)", "error": "\(error)"])
                throw error
            }
    }

    // MARK: - The request

    /// The path and query of `url` as written (percent-escapes kept), `/`
    /// when it has none; the fragment is not sent.
    static func requestTarget(of url: String) -> String {
        let bytes = Array(url.utf8)
        guard let colon = bytes.indices.first(where: { bytes[$0...].starts(with: Array("://".utf8)) }) else { return "/" }
        var start = colon + 3
        while start < bytes.count, !"/?#".utf8.contains(bytes[start]) { start += 1 }  // the authority
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "#") { end += 1 }
        let target = String(decoding: bytes[start..<end], as: UTF8.self)
        if target.isEmpty { return "/" }
        return target.hasPrefix("?") ? "/" + target : target
    }

    /// nginx's headers, in nginx's order.
    func requestHeaders(_ request: RouteRequest) -> HTTPHeaders {
        var headers = HTTPHeaders()
        let method: String
        switch request.mechanism {
        case .plain: method = "plain"
        case .login: method = request.loginCommand ? "plain" : "login"
        case .xoauth2: method = "xoauth2"
        case .oauthbearer: method = "oauthbearer"
        case .other: method = "none"
        }
        headers.add(name: "Auth-Method", value: method)
        headers.add(name: "Auth-User", value: HTTPAuthRouter.escape(request.credentials.user))
        headers.add(name: "Auth-Pass", value: HTTPAuthRouter.escape(request.credentials.password))
        headers.add(name: "Auth-Protocol", value: "imap")
        headers.add(name: "Auth-Login-Attempt", value: "\(request.loginAttempt)")
        if let ip = request.clientAddress?.ipAddress { headers.add(name: "Client-IP", value: ip) }
        if request.clientUsesTLS {
            headers.add(name: "Auth-SSL", value: "on")
            if let version = request.clientTLSProtocol { headers.add(name: "Auth-SSL-Protocol", value: version) }
            if let cipher = request.clientTLSCipher { headers.add(name: "Auth-SSL-Cipher", value: cipher) }
        }
        for header in settings.headers { headers.add(name: header.name, value: header.value) }
        return headers
    }

    /// As nginx escapes login and password (NGX_ESCAPE_MAIL_AUTH): `%XX` for
    /// space, `%`, control characters and bytes over 0x7E.
    static func escape(_ bytes: [UInt8]) -> String {
        var text = ""
        for byte in bytes {
            if byte <= 0x20 || byte == UInt8(ascii: "%") || byte >= 0x7F {
                let hex = String(byte, radix: 16, uppercase: true)
                text += "%" + (hex.count < 2 ? "0" : "") + hex
            } else {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return text
    }

    // MARK: - The answer

    func decision(_ head: HTTPResponseHead, request: RouteRequest) throws -> (RouteDecision, TimeAmount?) {
        let headers = head.headers
        // Any 2xx, as nginx takes it (a service may answer 204 with the headers only).
        guard (200..<300).contains(head.status.code) else {
            throw AuthServiceError("the auth service answered HTTP \(head.status.code)")
        }
        guard let status = headers.first(name: "Auth-Status")?.trimmingSpaces, !status.isEmpty else {
            throw AuthServiceError("the auth service's answer has no Auth-Status")
        }
        guard status == "OK" else {
            if let code = headers.first(name: "Auth-Error-Code") {
                logger.notice("auth service refused the login", metadata: ["auth.error_code": "\(HTTPAuthRouter.printable(code, limit: 100))"])
            }
            var wait: TimeAmount?
            if let text = headers.first(name: "Auth-Wait")?.trimmingSpaces, let seconds = Int64(text), seconds > 0 {
                wait = .seconds(min(seconds, HTTPAuthRouter.maxWait))
            }
            let text = HTTPAuthRouter.printable(status, limit: 200)
            return (.reject(response: "NO [AUTHENTICATIONFAILED] \(text.isEmpty ? "Authentication failed." : text)"), wait)
        }
        guard let server = headers.first(name: "Auth-Server")?.trimmingSpaces,
              (try? SocketAddress(ipAddress: server, port: 0)) != nil else {
            throw AuthServiceError("Auth-Server is missing or not an IP address")
        }
        guard let portText = headers.first(name: "Auth-Port")?.trimmingSpaces, let port = Int(portText),
              (1...65535).contains(port) else {
            throw AuthServiceError("Auth-Port is missing or not a port")
        }
        var upstream = settings.upstream
        upstream.host = server
        upstream.port = port
        if let tls = headers.first(name: "X-Sluice-Upstream-TLS")?.trimmingSpaces {
            guard let security = ProxyConfiguration.UpstreamSecurity(rawValue: tls) else {
                throw AuthServiceError("X-Sluice-Upstream-TLS is not plain, starttls or implicit")
            }
            upstream.security = security
        }
        if let name = headers.first(name: "X-Sluice-Server-Name")?.trimmingSpaces, !name.isEmpty {
            upstream.serverName = name
        }
        if let version = headers.first(name: "X-Sluice-Proxy-Protocol")?.trimmingSpaces {
            switch version {
            case "off": upstream.proxyProtocol = nil
            default:
                guard let parsed = ProxyProtocol.Version(rawValue: version) else {
                    throw AuthServiceError("X-Sluice-Proxy-Protocol is not v1, v2 or off")
                }
                upstream.proxyProtocol = parsed
            }
        }
        let endpoint = try self.endpoint(upstream)
        // Taken as written, as nginx takes them.
        let user = headers.first(name: "Auth-User") ?? request.credentials.userName
        guard !user.isEmpty, !HTTPAuthRouter.hasControlCharacters(user) else {
            throw AuthServiceError("Auth-User is empty or has control characters")
        }
        let groups = headers[canonicalForm: "X-Sluice-Groups"].map(String.init).map(\.trimmingSpaces)
            .filter { !$0.isEmpty && !HTTPAuthRouter.hasControlCharacters($0) }
        let login: UpstreamLogin
        if let master = headers.first(name: "X-Sluice-Master-User")?.trimmingSpaces, !master.isEmpty {
            guard let password = headers.first(name: "X-Sluice-Master-Pass") else {
                throw AuthServiceError("X-Sluice-Master-User without X-Sluice-Master-Pass")
            }
            let separator = headers.first(name: "X-Sluice-Master-Separator") ?? "*"
            // Names reach logs and the upstream's login (red team 3).
            guard !HTTPAuthRouter.hasControlCharacters(master + separator) else {
                throw AuthServiceError("X-Sluice-Master-User or -Separator has control characters")
            }
            login = .masterUser(user: user, masterUser: master, masterPassword: Array(password.utf8), separator: separator)
        } else {
            login = .asUser(user)
        }
        var route = Route(upstream: endpoint, login: login, upstreamName: "\(server):\(port)", groups: groups)
        if let password = headers.first(name: "Auth-Pass") { route.password = Array(password.utf8) }
        return (.route(route), nil)
    }

    /// The endpoint for `upstream`, built once (its TLS context is the costly part).
    func endpoint(_ upstream: ProxyConfiguration.Upstream) throws -> UpstreamEndpoint {
        let key = EndpointKey(host: upstream.host, port: upstream.port, security: upstream.security,
                              serverName: upstream.serverName, proxyProtocol: upstream.proxyProtocol)
        if let known = endpoints.withLockedValue({ $0[key] }) { return known }
        let endpoint = try UpstreamEndpoint(upstream)
        endpoints.withLockedValue { endpoints in
            if endpoints.count >= HTTPAuthRouter.maxEndpoints { endpoints.removeAll(keepingCapacity: true) }
            endpoints[key] = endpoint
        }
        return endpoint
    }

    static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    /// One line of printable ASCII, at most `limit` bytes, announcing no literal.
    static func printable(_ text: String, limit: Int) -> String {
        var result = String(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }.prefix(limit).map(Character.init))
        if result.hasSuffix("}"), let brace = result.lastIndex(of: "{") { result = String(result[..<brace]) }
        return result.trimmingSpaces
    }
}

extension String {
    var trimmingSpaces: String {
        var slice = Substring(self)
        while slice.first == " " || slice.first == "\t" { slice = slice.dropFirst() }
        while slice.last == " " || slice.last == "\t" { slice = slice.dropLast() }
        return String(slice)
    }
}
