import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// One client connection and, after login, its upstream connection.
///
/// Owns all per-session state; the two channel handlers only pass events in.
/// Both channels live on the same event loop, so no state is shared across
/// threads. The phases follow ../docs/design-notes.md: pre-auth (answered
/// here), upstream login, then the authenticated relay, where every byte in
/// both directions goes through an IMAPWire framer and is forwarded as the
/// slices it arrived in.
final class ProxySession {
    enum Phase {
        /// Transparent mode: connecting to the upstream before anything is said.
        case connecting
        case preAuth
        case loggingIn
        /// The login failed; its answer waits out the failure delay.
        case loginFailed
        case relay
        case closed
    }

    let id: Int
    let configuration: ProxyConfiguration
    let tls: ProxyTLS
    let router: any Router
    let clientChannel: Channel
    var logger: Logger
    private(set) var phase: Phase = .preAuth

    private var preAuth: PreAuthStateMachine
    private var clientDecoder: IMAPFrameDecoder
    private var clientBuffer = ByteBuffer()

    private var upstreamChannel: Channel?
    private var currentUpstream: UpstreamEndpoint?
    private var upstreamLogin: UpstreamLoginStateMachine?
    private var upstreamDecoder = IMAPFrameDecoder(peer: .server, literalCaptureLimit: 64 * 1024)
    private var upstreamBuffer = ByteBuffer()

    /// The tag of a client command whose synchronizing literal waits for the
    /// upstream's `+`; if the upstream answers that tag instead, the client
    /// will not send the literal.
    private var pendingLiteralTag: String?
    /// Answers the proxy gives itself, held until the upstream's stream is
    /// between frames so they never land inside a response.
    private var localResponses: [ByteBuffer] = []

    private(set) var clientReadPending = false
    private(set) var upstreamReadPending = false


    private let capabilityRewriter: CapabilityRewriter
    /// The rules' filter chains for this user; `nil` when none apply (then
    /// the relay does no filtering work at all).
    private var engine: FilterEngine?
    /// A client command being collected for the filters (up to a streamed literal).
    private var commandHead: CollectedFrame?
    /// A server response being collected for the filters.
    private var responseHead: CollectedFrame?
    /// The rest of a command the filters refused: its literal and lines are read and dropped.
    private var droppingClientFrame = false
    /// A re-encoded command's parts still waiting for the upstream's `+`.
    private var pendingUpstreamParts: [ByteBuffer] = []
    private var pendingPartsTag: String?
    private var upstreamCapabilities: [String] = []
    /// The router's groups for this user (rules can be scoped to them).
    private var routeGroups: [String] = []
    /// Literals up to this size inside a filtered frame are collected; larger
    /// ones stream (a client command) or leave the frame unfiltered (a response).
    private static let filterLiteralLimit: UInt64 = 64 * 1024
    /// Tagged client commands relayed and not yet answered upstream.
    private var commandsInFlight = 0
    /// Shutting down: say BYE as soon as no command is in flight.
    private var draining = false
    /// Transparent mode: the tag of a relayed LOGIN/AUTHENTICATE.
    private var transparentLoginTag: String?

    private var user: String?
    private var bytesFromClient = 0
    private var bytesFromUpstream = 0
    private let started = NIODeadline.now()
    private var endReason = "client closed the connection"

    /// Receive buffers for both channels. NIO keeps each channel's last
    /// receive buffer for reuse, so its size is memory every idle session
    /// holds twice: starting at 512 bytes instead of NIO's 2,048 takes an idle
    /// session from ~16.3 to ~11.8 KB. The size still adapts: a full read
    /// grows it (to 64 KiB within a few reads of a large FETCH).
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 64 * 1024)

    /// Pre-auth: credentials are small; a client may not make the proxy buffer more.
    private static let preAuthLimits: IMAPLimits = {
        var limits = IMAPLimits.client
        limits.maxLineLength = 8 * 1024
        limits.maxLiteralSize = 8 * 1024
        limits.maxFrameTextLength = 16 * 1024
        limits.maxLiteralsPerFrame = 4
        return limits
    }()

    init(id: Int, configuration: ProxyConfiguration, security: ProxyConfiguration.ListenerSecurity,
         tls: ProxyTLS, router: any Router, clientChannel: Channel, logger: Logger) {
        self.id = id
        self.configuration = configuration
        self.tls = tls
        self.router = router
        self.clientUsesTLS = security == .implicit
        var rewriter = CapabilityRewriter()
        if configuration.mode == .transparent { rewriter.removedNames = ["STARTTLS", "LOGINDISABLED"] }
        self.capabilityRewriter = rewriter
        self.clientChannel = clientChannel
        self.inactivityLimit = configuration.preAuthTimeout
        self.logger = logger
        self.logger[metadataKey: "imap.session.id"] = "\(id)"
        preAuth = PreAuthStateMachine(security: security, greeting: configuration.greeting,
                                      maxBadCommands: configuration.maxBadCommands)
        if !configuration.filters.isEmpty {
            let filters = configuration.filters
            preAuth.rewriteCapabilities = { filters.preAuthCapabilities($0) }
        }
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits, literalCaptureLimit: 8 * 1024)
    }

    // MARK: - Client side

    func clientActive() {
        startInactivityTimer(configuration.preAuthTimeout)
        if let address = clientChannel.remoteAddress, let ip = address.ipAddress, let port = address.port {
            logger[metadataKey: "client.address"] = "\(HostPort(host: ip, port: port))"
        }
        logger.info("session started")
        if configuration.mode == .transparent, let upstream = configuration.staticUpstream {
            phase = .connecting
            do {
                // The static router holds the endpoint with its TLS context built once.
                let endpoint = try (router as? StaticRouter)?.upstream ?? UpstreamEndpoint(upstream)
                connectUpstream(route: Route(upstream: endpoint, login: .asUser("")), clientPassword: [])
            } catch {
                endReason = "upstream TLS: \(error)"
                writeToClient("* BYE [UNAVAILABLE] Server is unavailable.\r\n", flush: true)
                clientChannel.close(promise: nil)
            }
            return
        }
        writeToClient(preAuth.greeting(), flush: true)
    }

    func clientRead(_ data: ByteBuffer) {
        noteActivity()
        bytesFromClient += data.readableBytes
        append(data, to: &clientBuffer)
        processClient()
    }

    func clientReadComplete() {
        upstreamChannel?.flush()
    }

    func clientClosed() {
        end(reason: endReason)
    }

    func clientError(_ error: Error) {
        endReason = "client error: \(error)"
        clientChannel.close(promise: nil)
    }

    func clientTLSEstablished() {
        clientUsesTLS = true
        preAuth.tlsEstablished()
    }

    private var clientUsesTLS: Bool

    private var clientAddressText: String? {
        guard let address = clientChannel.remoteAddress, let ip = address.ipAddress, let port = address.port else { return nil }
        return "\(HostPort(host: ip, port: port))"
    }

    // MARK: - Inactivity

    /// How long the client may go without bytes moving to or from it: the
    /// pre-auth timeout until login, then the idle timeout.
    private var inactivityLimit: TimeAmount
    private var lastActivity = NIODeadline.now()
    private var inactivityTimer: Scheduled<Void>?

    /// One scheduled check per session, re-armed only when it fires: marking
    /// activity costs a clock read per read event (NIO's IdleStateHandler
    /// allocated a promise for every write and sat in the pipeline).
    private func startInactivityTimer(_ limit: TimeAmount) {
        inactivityLimit = limit
        lastActivity = .now()
        scheduleInactivityCheck(at: lastActivity + limit)
    }

    private func scheduleInactivityCheck(at deadline: NIODeadline) {
        inactivityTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        inactivityTimer = clientChannel.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.inactivityCheck()
        }
    }

    private func noteActivity() {
        lastActivity = .now()
    }

    private func inactivityCheck() {
        inactivityTimer = nil
        guard phase != .closed else { return }
        let due = lastActivity + inactivityLimit
        if NIODeadline.now() < due {
            scheduleInactivityCheck(at: due)
            return
        }
        switch phase {
        case .connecting, .preAuth, .loggingIn, .loginFailed:
            endReason = "pre-auth timeout"
            writeToClient("* BYE Disconnected for inactivity.\r\n", flush: true)
            clientChannel.close(promise: nil)
        case .relay:
            // RFC 2177: a client in IDLE is not idle; it re-issues IDLE on its own schedule.
            if clientDecoder.framer.clientExpectation == .idleDone {
                scheduleInactivityCheck(at: .now() + inactivityLimit)
                return
            }
            endReason = "idle timeout"
            queueLocalResponse(ByteBuffer(string: "* BYE Disconnected for inactivity.\r\n"))
            clientChannel.close(promise: nil)
        case .closed:
            break
        }
    }

    /// Whether the client handler may ask its channel for more bytes.
    var mayReadFromClient: Bool {
        switch phase {
        case .preAuth: return preAuth.acceptsFrames
        case .connecting, .loggingIn, .loginFailed, .closed: return false
        case .relay: return pendingUpstreamParts.isEmpty && (upstreamChannel?.isWritable ?? false)
        }
    }

    var mayReadFromUpstream: Bool {
        switch phase {
        case .loggingIn: return true
        case .relay: return clientChannel.isWritable
        case .connecting, .preAuth, .loginFailed, .closed: return false
        }
    }

    func deferClientRead() { clientReadPending = true }
    func deferUpstreamRead() { upstreamReadPending = true }

    /// Re-issues reads that back-pressure or a phase held back.
    func resumeReads() {
        if clientReadPending && mayReadFromClient {
            clientReadPending = false
            clientChannel.read()
        }
        if upstreamReadPending && mayReadFromUpstream, let upstreamChannel {
            upstreamReadPending = false
            upstreamChannel.read()
        }
    }

    private func processClient() {
        do {
            switch phase {
            case .preAuth:
                try processPreAuth()
            case .relay:
                try relayFromClient()
            case .connecting, .loggingIn, .loginFailed, .closed:
                break
            }
        } catch let error as IMAPFramingError {
            endReason = "client framing error: \(error.hint)"
            let answer = error.tag.map { "\($0) BAD \(error.hint)\r\n" } ?? ""
            // A response still streaming to the client is cut where it is
            // (made visibly incomplete) so that the answer can follow.
            if phase == .relay { endUpstreamFrameForBye() }
            queueLocalResponse(ByteBuffer(string: answer + "* BYE \(error.hint)\r\n"))
            closeWhenWritten()
        } catch {
            endReason = "client error: \(error)"
            closeBoth()
        }
    }

    private func processPreAuth() throws {
        while preAuth.acceptsFrames && phase == .preAuth {
            guard let frame = try clientDecoder.next(&clientBuffer) else {
                if clientDecoder.takeContinuationRequest() != nil {
                    writeToClient("+ Ready for literal data\r\n", flush: true)
                }
                break
            }
            let action = preAuth.receive(frame)
            if !preAuth.isAwaitingSASL { clientDecoder.framer.authenticationEnded() }
            perform(action)
        }
        compact(&clientBuffer)
    }

    private func perform(_ action: PreAuthStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let lines):
            writeToClient(lines, flush: true)
        case .sendAndClose(let lines):
            endReason = "closed in pre-auth"
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: lines)).whenComplete { [clientChannel] _ in
                clientChannel.close(promise: nil)
            }
        case .startTLS(let ok):
            startClientTLS(ok: ok)
        case .login(_, let credentials):
            phase = .loggingIn
            user = credentials.userName
            logger[metadataKey: "imap.user"] = "\(credentials.userName)"
            route(credentials)
        }
    }

    private func startClientTLS(ok: String) {
        guard let context = tls.server else {
            writeToClient("* BAD TLS is not configured.\r\n", flush: true)
            return
        }
        // Plaintext pipelined behind STARTTLS is discarded (the STARTTLS
        // command-injection class of bugs, CVE-2011-0411 and kin).
        clientBuffer.clear()
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits, literalCaptureLimit: 8 * 1024)
        preAuth.tlsEstablished()
        let channel = clientChannel
        channel.writeAndFlush(ByteBuffer(string: ok)).whenSuccess {
            do {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), position: .first)
            } catch {
                channel.close(promise: nil)
            }
        }
    }

    // MARK: - Upstream login

    /// Asks the router where this user goes, then connects there.
    private func route(_ clientCredentials: Credentials) {
        var rewritten = clientCredentials
        for rewrite in configuration.loginRewrites {
            guard let name = rewrite.apply(clientCredentials.userName) else { continue }
            logger[metadataKey: "imap.upstream_user"] = "\(name)"
            rewritten.user = Array(name.utf8)
            break
        }
        let credentials = rewritten
        let request = RouteRequest(credentials: credentials, clientAddress: clientChannel.remoteAddress,
                                   clientID: preAuth.clientID, clientUsesTLS: clientUsesTLS)
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        router.route(request, on: clientChannel.eventLoop).hop(to: clientChannel.eventLoop).whenComplete { result in
            let session = bound.value
            guard session.phase == .loggingIn else { return }
            switch result {
            case .success(.route(let route)):
                session.connectUpstream(route: route, clientPassword: credentials.password)
            case .success(.reject(let response)):
                session.loginFailed(response: response, reason: "refused by the router")
            case .failure(let error):
                session.loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "router failed: \(error)")
            }
        }
    }

    private func connectUpstream(route: Route, clientPassword: [UInt8]) {
        let upstream = route.upstream
        logger[metadataKey: "upstream.host"] = "\(HostPort(host: upstream.host, port: upstream.port))"
        if route.upstreamName != "\(upstream.host):\(upstream.port)" {
            logger[metadataKey: "upstream.name"] = "\(route.upstreamName)"
        }
        if case .asUser(let name) = route.login, !name.isEmpty, name != user {
            logger[metadataKey: "imap.upstream_user"] = "\(name)"
        }
        // With filters, the proxy asks the delimiter itself before the relay starts.
        routeGroups = route.groups
        let learn = phase == .loggingIn && configuration.filters.applies(to: user ?? "", groups: route.groups)
        let forward = upstream.forwardClientAddress
            ? ForwardedAddresses(client: clientChannel.remoteAddress, local: clientChannel.localAddress,
                                 clientID: preAuth.clientID) : nil
        upstreamLogin = UpstreamLoginStateMachine(credentials: UpstreamCredentials(route.login, clientPassword: clientPassword),
                                                  useStartTLS: upstream.security == .starttls, learnDelimiter: learn,
                                                  forward: forward)
        currentUpstream = upstream
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let tlsContext = upstream.tlsContext
        let serverName = upstream.serverName
        let bootstrap = ClientBootstrap(group: clientChannel.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ProxySession.receiveAllocator)
            .channelOption(.writeBufferWaterMark, value: .init(
                low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if upstream.security == .implicit, let tlsContext {
                        let handler = try NIOSSLClientHandler(context: tlsContext, serverHostname: serverName)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler(session: bound.value))
                }
            }
        upstream.connect(bootstrap, on: clientChannel.eventLoop).whenComplete { result in
            let session = bound.value
            switch result {
            case .success(let channel):
                session.upstreamChannel = channel
                if session.phase == .connecting {
                    session.startTransparentRelay()
                } else if session.phase != .loggingIn {
                    channel.close(promise: nil)
                }
            case .failure(let error):
                session.upstreamUnavailable(reason: "connect failed: \(error)")
            }
        }
    }

    func upstreamActive(_ channel: Channel) {
        if upstreamChannel == nil && (phase == .loggingIn || phase == .connecting) { upstreamChannel = channel }
    }

    /// The upstream cannot be reached (or fails TLS) before the relay started.
    private func upstreamUnavailable(reason: String) {
        if phase == .connecting {
            endReason = reason
            logger.notice("upstream unavailable", metadata: ["reason": "\(reason)"])
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: "* BYE [UNAVAILABLE] Server is unavailable.\r\n")).whenComplete {
                [clientChannel] _ in clientChannel.close(promise: nil)
            }
        } else {
            loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: reason)
        }
    }

    /// Transparent mode: the upstream is connected; from here every byte in
    /// both directions relays, greeting and login included.
    private func startTransparentRelay() {
        phase = .relay
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: configuration.clientLimits, literalCaptureLimit: 8 * 1024)
        upstreamDecoder.framer.limits = configuration.serverLimits
        resumeReads()
        upstreamChannel?.read()
    }

    func upstreamRead(_ data: ByteBuffer) {
        bytesFromUpstream += data.readableBytes
        append(data, to: &upstreamBuffer)
        do {
            switch phase {
            case .loggingIn:
                try processUpstreamLogin()
            case .relay:
                noteActivity()
                try relayFromUpstream()
            case .connecting, .preAuth, .loginFailed, .closed:
                upstreamBuffer.clear()
            }
        } catch let error as IMAPFramingError {
            endReason = "upstream framing error: \(error.hint)"
            if phase == .loggingIn {
                loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: endReason)
            } else {
                closeBoth()
            }
        } catch {
            endReason = "upstream error: \(error)"
            closeBoth()
        }
    }

    func upstreamReadComplete() {
        clientChannel.flush()
    }

    func upstreamTLSEstablished() {
        if phase == .connecting {
            return
        }
        guard phase == .loggingIn, var login = upstreamLogin else { return }
        let action = login.tlsEstablished()
        upstreamLogin = login
        performLogin(action)
    }

    func upstreamClosed() {
        guard !closingUpstream else { return }
        switch phase {
        case .connecting:
            upstreamUnavailable(reason: "upstream closed before the relay started")
        case .loggingIn:
            loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream closed during login")
        case .relay:
            upstreamEnded(reason: upstreamSaidBye ? "upstream said BYE" : "upstream closed the connection")
        case .preAuth, .loginFailed, .closed:
            break
        }
    }

    /// The upstream's stream is over (closed, or failed) during the relay:
    /// what was relayed reaches the client, a response cut inside a literal
    /// is made unmistakably incomplete, and the client gets a BYE unless the
    /// upstream said one.
    private func upstreamEnded(reason: String) {
        endReason = reason
        if !upstreamSaidBye {
            endUpstreamFrameForBye()
            localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] Server closed the connection.\r\n"))
        }
        // The session ends (and leaves the registry) when the client's
        // connection closes, after what is queued for it has gone out.
        closeWhenWritten()
    }

    /// The upstream died inside a response: bring the client's parser to a
    /// point where it can read a BYE. The rest of an open literal is filled
    /// with spaces (a BYE there would be read as message bytes), then the
    /// line is ended without its closing parenthesis, so the truncated
    /// response is malformed and no client can take it for complete data.
    private func endUpstreamFrameForBye() {
        guard !upstreamDecoder.framer.isAtFrameBoundary else { return }
        var remaining = upstreamDecoder.framer.literalBytesRemaining
        if remaining > 0 {
            logger.notice("upstream closed inside a literal; padding it for the client",
                          metadata: ["literal.missing_bytes": "\(remaining)"])
            let chunk = ProxySession.padding
            while remaining >= UInt64(chunk.readableBytes) {
                clientChannel.write(chunk, promise: nil)
                remaining -= UInt64(chunk.readableBytes)
            }
            if remaining > 0 {
                clientChannel.write(ByteBuffer(repeating: UInt8(ascii: " "), count: Int(remaining)), promise: nil)
            }
        }
        clientChannel.write(ByteBuffer(string: "\r\n"), promise: nil)
        upstreamDecoder = IMAPFrameDecoder(peer: .server, literalCaptureLimit: 64 * 1024)
    }

    private static let padding = ByteBuffer(repeating: UInt8(ascii: " "), count: 64 * 1024)

    // MARK: - Shutdown

    /// SIGTERM: BYE now if nothing is in flight, else once it finishes.
    func beginShutdown() {
        switch phase {
        case .connecting, .preAuth, .loginFailed:
            endReason = "server shutting down"
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: "* BYE Server shutting down, please reconnect.\r\n")).whenComplete {
                [clientChannel] _ in clientChannel.close(promise: nil)
            }
        case .loggingIn, .relay:
            draining = true
            byeIfQuiet()
        case .closed:
            break
        }
    }

    /// The grace period is over: BYE where the stream allows it, and close.
    func forceClose() {
        guard phase != .closed else { return }
        endReason = "server shut down (grace period over)"
        if phase == .relay {
            endUpstreamFrameForBye()
            queueLocalResponse(ByteBuffer(string: "* BYE Server shutting down.\r\n"))
        } else {
            writeToClient("* BYE Server shutting down.\r\n", flush: true)
        }
        closeBoth()
    }

    /// While draining: BYE and close once no command is in flight (a client
    /// in IDLE counts as quiet) and both streams are between frames.
    private func byeIfQuiet() {
        guard draining, phase == .relay else { return }
        let quiet = commandsInFlight == 0 || clientDecoder.framer.clientExpectation == .idleDone
        guard quiet, upstreamDecoder.framer.isAtFrameBoundary, clientDecoder.framer.isAtFrameBoundary else { return }
        endReason = "server shutting down"
        queueLocalResponse(ByteBuffer(string: "* BYE Server shutting down, please reconnect.\r\n"))
        closeWhenWritten()
    }

    /// The upstream sent `* BYE` (after LOGOUT, or shutting down): its
    /// closing needs no BYE from the proxy.
    private var upstreamSaidBye = false

    /// The proxy itself is closing the upstream (its closure is no news).
    private var closingUpstream = false

    func upstreamError(_ error: Error) {
        switch phase {
        case .loggingIn:
            loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream error: \(error)")
        case .relay:
            // A reset mid-response is the server going away, as a close is.
            upstreamEnded(reason: "upstream error: \(error)")
        case .connecting, .preAuth, .loginFailed, .closed:
            endReason = "upstream error: \(error)"
            closeBoth()
        }
    }

    private func processUpstreamLogin() throws {
        while phase == .loggingIn, let frame = try upstreamDecoder.next(&upstreamBuffer) {
            guard var login = upstreamLogin else { return }
            let action = login.receive(frame)
            upstreamLogin = login
            performLogin(action)
        }
        if phase == .relay { try relayFromUpstream() }
    }

    private func performLogin(_ action: UpstreamLoginStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let bytes):
            upstreamChannel?.writeAndFlush(bytes, promise: nil)
        case .sendThenStartTLS:
            guard let channel = upstreamChannel, let context = currentUpstream?.tlsContext else {
                loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "no TLS context for upstream")
                return
            }
            upstreamBuffer.clear()  // nothing the server said in plaintext after STARTTLS counts
            do {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: currentUpstream?.serverName)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream TLS: \(error)")
            }
        case .succeeded(let capabilities, let delimiter):
            loginSucceeded(capabilities: capabilities, delimiter: delimiter)
        case .failed(let response, let reason):
            loginFailed(response: response, reason: reason)
        }
    }

    private func loginSucceeded(capabilities: [String], delimiter: UInt8?) {
        upstreamLogin = nil
        phase = .relay
        logger.info("upstream login succeeded")
        // COMPRESS would make the stream unparseable for the relay; it is not offered.
        var offered = capabilities.filter { !capabilityRewriter.isRemoved($0) }
        upstreamCapabilities = capabilities
        engine = configuration.filters.engine(user: user ?? "", groups: routeGroups, clientAddress: clientAddressText,
                                              upstreamCapabilities: capabilities, logger: logger)
        if let engine {
            offered = engine.capabilities(offered)
            if let delimiter { engine.learned(hierarchyDelimiter: delimiter) }
        }
        let action = preAuth.loginSucceeded(capabilities: offered)
        if case .send(let ok) = action { writeToClient(ok, flush: true) }
        clientDecoder.framer.limits = configuration.clientLimits
        upstreamDecoder.framer.limits = configuration.serverLimits
        startInactivityTimer(configuration.idleTimeout)
        // Bytes that arrived behind the login on either side now relay.
        do {
            try relayFromUpstream()
            try relayFromClient()
        } catch {
            endReason = "framing error after login: \(error)"
            closeBoth()
            return
        }
        clientChannel.flush()
        upstreamChannel?.flush()
        resumeReads()
        byeIfQuiet()
    }

    private func loginFailed(response: String, reason: String) {
        guard phase == .loggingIn else { return }
        logger.notice("login failed", metadata: ["reason": "\(reason)"])
        phase = .loginFailed
        upstreamLogin = nil
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        upstreamChannel = nil
        closingUpstream = false
        upstreamBuffer.clear()
        upstreamDecoder = IMAPFrameDecoder(peer: .server, literalCaptureLimit: 64 * 1024)
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        clientChannel.eventLoop.scheduleTask(in: configuration.loginFailureDelay) {
            let session = bound.value
            guard session.phase == .loginFailed else { return }
            session.phase = .preAuth
            session.perform(session.preAuth.loginFailed(response: response))
            session.processClient()
            session.resumeReads()
        }
    }

    // MARK: - Relay

    private func relayFromClient() throws {
        guard let upstream = upstreamChannel else { return }
        while pendingUpstreamParts.isEmpty, let event = try clientDecoder.framer.next(&clientBuffer) {
            switch event {
            case .line(let segment):
                if droppingClientFrame {
                    if segment.endsFrame {
                        droppingClientFrame = false
                    } else if segment.literal?.isSynchronizing == true {
                        // The client saw the refusal; it will not send this literal.
                        clientDecoder.framer.abandonLiteral()
                        droppingClientFrame = false
                    }
                    continue
                }
                if commandHead != nil {
                    collectCommand(segment)
                    continue
                }
                if segment.isFrameStart, segment.kind == .command, segment.endsFrame, let tag = segment.tag {
                    if segment.secondWordIs("COMPRESS") {
                        queueLocalResponse(ByteBuffer(string: "\(tag) NO [CANNOT] COMPRESS is not available through this proxy.\r\n"))
                        continue
                    }
                    if configuration.mode == .transparent, segment.secondWordIs("STARTTLS") {
                        queueLocalResponse(ByteBuffer(string: "\(tag) BAD STARTTLS is not available through this proxy.\r\n"))
                        continue
                    }
                }
                if let engine, segment.isFrameStart, segment.kind == .command, let tag = segment.tag {
                    let name = ProxySession.name(of: segment)
                    if let name, engine.wantsCommand(named: name) {
                        commandHead = CollectedFrame(kind: .command)
                        currentClientTag = tag
                        commandsInFlight += 1
                        collectCommand(segment)
                        continue
                    }
                    engine.commandPassed(tag: tag, name: name ?? "")
                }
                if segment.isFrameStart {
                    currentClientTag = segment.kind == .command ? segment.tag : nil
                    if segment.kind == .command {
                        commandsInFlight += 1
                        if configuration.mode == .transparent && user == nil { noteTransparentLogin(segment) }
                    }
                }
                if let literal = segment.literal, literal.isSynchronizing { pendingLiteralTag = currentClientTag }
                upstream.write(segment.bytes, promise: nil)
            case .literalBytes(let chunk, _):
                if droppingClientFrame { continue }
                if commandHead != nil {
                    commandHead?.appendLiteralBytes(chunk)
                    continue
                }
                pendingLiteralTag = nil
                upstream.write(chunk, promise: nil)
            }
        }
        compact(&clientBuffer)
    }

    // MARK: - Filters

    /// The name of a command or response from its first line (`UID FETCH`, `LIST`, `FETCH` for `* 3 FETCH`).
    private static func name(of segment: LineSegment) -> String? {
        Frame(kind: segment.kind, segments: [segment.bytes], literals: [], offset: 0, length: 0).name
    }

    /// Adds a line of the command being collected. Small LITERAL+ literals
    /// are collected too; a synchronizing literal ends the collected part
    /// (the filters decide before the client sends it, so a refusal comes
    /// before the client's literal), and so does a large one: either
    /// streams from the client as it arrives.
    private func collectCommand(_ segment: LineSegment) {
        guard var head = commandHead else { return }
        head.segments.append(segment.bytes)
        if let literal = segment.literal {
            if !literal.isSynchronizing, literal.size <= ProxySession.filterLiteralLimit {
                head.literals.append(FrameLiteral(header: literal, chunks: []))
                commandHead = head
                return
            }
            head.literals.append(FrameLiteral(header: literal, chunks: nil))
            commandHead = nil
            finishCommand(head, streamed: literal)
        } else {
            commandHead = nil
            finishCommand(head, streamed: nil)
        }
    }

    private func finishCommand(_ head: CollectedFrame, streamed: LiteralHeader?) {
        guard let engine, let upstream = upstreamChannel else { return }
        let frame = head.frame
        let decision = engine.process(command: frame, streamedLiteral: streamed)
        switch decision {
        case .forwardOriginal:
            head.write(to: upstream)
        case .forwardRewritten(let command):
            sendUpstream(command, original: frame, streamed: streamed)
        case .respond(let bytes):
            commandsInFlight = max(0, commandsInFlight - 1)
            queueLocalResponse(bytes)
            if let streamed {
                if streamed.isSynchronizing {
                    clientDecoder.framer.abandonLiteral()  // the client will not send it
                } else {
                    droppingClientFrame = true  // read and drop the {n+} literal and the rest
                }
            }
            return
        }
        if let streamed, streamed.isSynchronizing { pendingLiteralTag = currentClientTag }
    }

    /// Encodes a (rewritten) command for the upstream: literals as
    /// LITERAL+/LITERAL- allow, original literals by reference, and a
    /// streamed literal announced in the client's own form (so the
    /// upstream's `+`, if any, is what the client waits for).
    private func sendUpstream(_ command: ParsedCommand, original: Frame, streamed: LiteralHeader?) {
        guard let upstream = upstreamChannel else { return }
        let upper = Set(upstreamCapabilities.map { $0.uppercased() })
        let receiver: EncodingOptions.Receiver = upper.contains("LITERAL+") ? .serverWithLiteralPlus
            : (upper.contains("LITERAL-") ? .serverWithLiteralMinus : .server)
        var encoder = IMAPEncoder(options: EncodingOptions(receiver: receiver, utf8Accepted: engine?.context.utf8Enabled ?? false))
        encoder.writeRaw(command.tag + " " + command.name)
        var arguments = command.arguments
        if streamed != nil, case .literal(_, _, nil)? = arguments.last { arguments.removeLast() }
        if !arguments.isEmpty {
            encoder.writeSpace()
            encoder.writeTokens(arguments)
        }
        if let streamed {
            encoder.writeSpace()
            encoder.writeRaw((streamed.isBinary ? "~" : "") + "{\(streamed.size)" + (streamed.isSynchronizing ? "}" : "+}"))
        }
        let encoded = encoder.finish()
        // Split where a synchronizing literal must wait for the upstream's "+".
        var parts: [ByteBuffer] = []
        var current = ByteBuffer()
        for (index, segment) in encoded.segments.enumerated() {
            var segment = segment
            current.writeBuffer(&segment)
            guard index < encoded.literals.count else { continue }
            let literal = encoded.literals[index]
            if literal.header.isSynchronizing {
                parts.append(current)
                current = ByteBuffer()
            }
            switch literal.payload {
            case .bytes(var bytes):
                current.writeBuffer(&bytes)
            case .original(let literalIndex):
                for var chunk in original.literals[literalIndex].chunks ?? [] { current.writeBuffer(&chunk) }
            }
        }
        // The line announcing a streamed literal ends with CRLF from finish(); it is the literal's own.
        parts.append(current)
        upstream.write(parts.removeFirst(), promise: nil)
        if !parts.isEmpty {
            pendingUpstreamParts = parts
            pendingPartsTag = command.tag
            upstream.flush()
        }
    }

    /// The upstream's `+` for a part the proxy holds: send the next part.
    private func sendNextUpstreamPart() {
        guard !pendingUpstreamParts.isEmpty, let upstream = upstreamChannel else { return }
        upstream.writeAndFlush(pendingUpstreamParts.removeFirst(), promise: nil)
        if pendingUpstreamParts.isEmpty {
            pendingPartsTag = nil
            resumeClientAfterParts()
        }
    }

    private func resumeClientAfterParts() {
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        clientChannel.eventLoop.execute {
            let session = bound.value
            guard session.phase == .relay else { return }
            do { try session.relayFromClient() } catch { session.closeBoth() }
            session.upstreamChannel?.flush()
            session.resumeReads()
        }
    }

    /// Adds a line of the response being collected. A literal too large to
    /// collect (a message body) ends filtering for this response: what was
    /// collected goes out as it was, and the rest streams.
    private func collectResponse(_ segment: LineSegment) {
        guard var head = responseHead else { return }
        head.segments.append(segment.bytes)
        if let literal = segment.literal {
            if literal.size <= ProxySession.filterLiteralLimit {
                head.literals.append(FrameLiteral(header: literal, chunks: []))
                responseHead = head
            } else {
                responseHead = nil
                head.write(to: clientChannel)
                if let tag = head.frame.tag, head.kind == .taggedResponse { engine?.taggedResponsePassed(tag: tag) }
            }
            return
        }
        responseHead = nil
        guard let engine else { return }
        switch engine.process(response: head.frame) {
        case .forwardOriginal:
            if head.segments.count == 1, let rewritten = capabilityRewriter.rewrite(segment) {
                clientChannel.write(rewritten, promise: nil)
            } else {
                head.write(to: clientChannel)
            }
        case .forwardRewritten(let bytes):
            clientChannel.write(bytes, promise: nil)
        case .drop:
            break
        }
    }

    private var currentClientTag: String?

    private func relayFromUpstream() throws {
        while let event = try upstreamDecoder.framer.next(&upstreamBuffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart {
                    if segment.kind == .untaggedResponse, segment.secondWordIs("BYE") {
                        upstreamSaidBye = true
                    } else if segment.kind == .taggedResponse {
                        commandsInFlight = max(0, commandsInFlight - 1)
                        if transparentLoginTag != nil, segment.tag == transparentLoginTag { transparentLoginAnswered(segment) }
                    }
                }
                if segment.isFrameStart, !pendingUpstreamParts.isEmpty {
                    if segment.kind == .continuationRequest {
                        sendNextUpstreamPart()  // the "+" was for the proxy, not the client
                        continue
                    } else if segment.kind == .taggedResponse, segment.tag == pendingPartsTag {
                        pendingUpstreamParts = []  // refused before the rest was sent
                        pendingPartsTag = nil
                        resumeClientAfterParts()
                    }
                }
                if segment.isFrameStart, pendingLiteralTag != nil {
                    if segment.kind == .continuationRequest {
                        pendingLiteralTag = nil
                    } else if segment.kind == .taggedResponse, segment.tag == pendingLiteralTag {
                        // Refused before its "+": the client will not send the literal.
                        pendingLiteralTag = nil
                        clientDecoder.framer.abandonLiteral()
                    }
                }
                if responseHead != nil {
                    collectResponse(segment)
                    continue
                }
                if let engine, segment.isFrameStart,
                   segment.kind == .untaggedResponse || segment.kind == .taggedResponse {
                    if engine.wantsResponse(kind: segment.kind, name: ProxySession.name(of: segment), tag: segment.tag) {
                        responseHead = CollectedFrame(kind: segment.kind)
                        collectResponse(segment)
                        continue
                    }
                    if segment.kind == .taggedResponse, let tag = segment.tag { engine.taggedResponsePassed(tag: tag) }
                }
                if segment.isFrameStart, segment.endsFrame, let rewritten = capabilityRewriter.rewrite(segment) {
                    clientChannel.write(rewritten, promise: nil)
                } else {
                    clientChannel.write(segment.bytes, promise: nil)
                }
            case .literalBytes(let chunk, _):
                if responseHead != nil {
                    responseHead?.appendLiteralBytes(chunk)
                    continue
                }
                clientChannel.write(chunk, promise: nil)
            }
        }
        compact(&upstreamBuffer)
        flushLocalResponses()
        if clientDecoder.framer.isAtFrameBoundary, clientBuffer.readableBytes > 0 {
            try relayFromClient()  // bytes held behind an abandoned literal
        }
        if draining { byeIfQuiet() }
    }

    /// Transparent mode: remember who logs in (for the session log) from a
    /// LOGIN line or AUTHENTICATE PLAIN with an initial response.
    private func noteTransparentLogin(_ segment: LineSegment) {
        guard segment.secondWordIs("LOGIN") || segment.secondWordIs("AUTHENTICATE") else { return }
        transparentLoginTag = segment.tag
        guard segment.endsFrame else { return }
        let frame = Frame(kind: .command, segments: [segment.bytes], literals: [], offset: 0,
                          length: segment.bytes.readableBytes)
        guard let command = try? frame.command() else { return }
        if let login = LoginCommand(command) {
            pendingTransparentUser = String(decoding: login.user, as: UTF8.self)
        } else if let authenticate = AuthenticateCommand(command), authenticate.mechanism.uppercased() == "PLAIN",
                  let initial = authenticate.initialResponse, let decoded = Base64.decode(initial) {
            let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
            if parts.count == 3 {
                let authz = String(decoding: parts[0], as: UTF8.self)
                pendingTransparentUser = authz.isEmpty ? String(decoding: parts[1], as: UTF8.self) : authz
            }
        }
    }

    private var pendingTransparentUser: String?

    /// Transparent mode: the upstream answered the login.
    private func transparentLoginAnswered(_ segment: LineSegment) {
        transparentLoginTag = nil
        let name = pendingTransparentUser
        pendingTransparentUser = nil
        guard segment.secondWordIs("OK") else { return }
        let known = name ?? "(unknown)"
        user = known
        logger[metadataKey: "imap.user"] = "\(known)"
        logger.info("upstream login succeeded")
        startInactivityTimer(configuration.idleTimeout)
    }

    private func queueLocalResponse(_ bytes: ByteBuffer) {
        localResponses.append(bytes)
        flushLocalResponses()
        clientChannel.flush()
    }

    private func flushLocalResponses() {
        guard !localResponses.isEmpty, upstreamDecoder.framer.isAtFrameBoundary || phase != .relay else { return }
        for response in localResponses { clientChannel.write(response, promise: nil) }
        localResponses.removeAll()
    }

    // MARK: - Helpers

    private func writeToClient(_ text: String, flush: Bool) {
        if flush {
            clientChannel.writeAndFlush(ByteBuffer(string: text), promise: nil)
        } else {
            clientChannel.write(ByteBuffer(string: text), promise: nil)
        }
    }

    /// Appends a read to a side's buffer without copying when nothing is left
    /// over from the previous read (the common case for literal traffic).
    private func append(_ data: ByteBuffer, to buffer: inout ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = data
        } else {
            var data = data
            var merged = clientChannel.allocator.buffer(capacity: buffer.readableBytes + data.readableBytes)
            merged.writeBuffer(&buffer)
            merged.writeBuffer(&data)
            buffer = merged
        }
    }

    /// Lets go of a fully consumed read (an idle session holds no read
    /// buffer); a partial line left over stays for the next read.
    private func compact(_ buffer: inout ByteBuffer) {
        if buffer.readableBytes == 0 { buffer = ProxySession.empty }
    }

    private static let empty = ByteBuffer()

    /// How long a closing session waits for its client to take what is
    /// already queued for it before the connection is cut.
    static let closeDrainLimit: TimeAmount = .seconds(30)

    /// Closes the client connection once everything queued for it has been
    /// written: NIO's `close` drops unwritten data, so a slow reader would
    /// lose the end of a FETCH the upstream had already finished, and its
    /// BYE and tagged OK (the upstream answers a pipelined LOGOUT and closes
    /// while the client is still reading). A client that stops reading is cut
    /// after `closeDrainLimit`.
    private func closeClientWhenWritten() {
        let channel = clientChannel
        let limit = channel.eventLoop.scheduleTask(in: ProxySession.closeDrainLimit) { channel.close(promise: nil) }
        channel.writeAndFlush(ProxySession.empty).whenComplete { _ in
            limit.cancel()
            channel.close(promise: nil)
        }
    }

    /// Ends the session after the proxy's last answer: the upstream closes
    /// now, the client once that answer and all before it are written.
    private func closeWhenWritten() {
        phase = .closed
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        flushLocalResponses()
        closeClientWhenWritten()
    }

    private func closeBoth() {
        closingUpstream = true
        flushLocalResponses()
        clientChannel.flush()
        clientChannel.close(promise: nil)
        upstreamChannel?.close(promise: nil)
    }

    private func end(reason: String) {
        guard !ended else { return }
        ended = true
        phase = .closed
        inactivityTimer?.cancel()
        inactivityTimer = nil
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        let duration = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        logger.info("session ended", metadata: [
            "imap.user": "\(user ?? "-")",
            "bytes.from_client": "\(bytesFromClient)",
            "bytes.from_upstream": "\(bytesFromUpstream)",
            "duration.seconds": "\((duration * 1000).rounded() / 1000)",
            "reason": "\(reason)",
        ])
    }

    private var ended = false
}

/// A command or response collected for the filters: its lines and the
/// literals between them, as the slices they arrived in (no copies).
struct CollectedFrame {
    var kind: FrameKind
    var segments: [ByteBuffer] = []
    var literals: [FrameLiteral] = []

    init(kind: FrameKind) { self.kind = kind }

    mutating func appendLiteralBytes(_ chunk: ByteBuffer) {
        guard !literals.isEmpty else { return }
        literals[literals.count - 1].chunks?.append(chunk)
    }

    var frame: Frame {
        let length = segments.reduce(0) { $0 + $1.readableBytes }
            + literals.reduce(0) { $0 + ($1.chunks?.reduce(0) { $0 + $1.readableBytes } ?? 0) }
        return Frame(kind: kind, segments: segments, literals: literals, offset: 0, length: length)
    }

    /// Writes the bytes as they arrived.
    func write(to channel: Channel) {
        for (index, segment) in segments.enumerated() {
            channel.write(segment, promise: nil)
            guard index < literals.count else { continue }
            for chunk in literals[index].chunks ?? [] { channel.write(chunk, promise: nil) }
        }
    }
}
