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
    let penalty: LoginPenalty
    let clientChannel: Channel
    var logger: Logger
    private(set) var phase: Phase = .preAuth

    private var preAuth: PreAuthStateMachine
    private var clientDecoder: IMAPFrameDecoder
    private var clientBuffer = ByteBuffer()

    private var upstreamChannel: Channel?
    private var currentUpstream: UpstreamEndpoint?
    private var upstreamLogin: UpstreamLoginStateMachine?
    private var upstreamDecoder = ProxySession.upstreamLoginDecoder()
    private var upstreamBuffer = ByteBuffer()

    /// Literal gating, the proxy's own continuations, in-flight commands.
    private var relay: RelayStateMachine
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
    private var upstreamCapabilities: [String] = []
    /// The router's groups for this user (rules can be scoped to them).
    private var routeGroups: [String] = []
    /// Literals up to this size inside a filtered frame are collected; larger
    /// ones stream (a client command) or leave the frame unfiltered (a response).
    private static let filterLiteralLimit: UInt64 = 64 * 1024
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

    /// Pre-auth limits: credentials are small; a client may not make the
    /// proxy buffer more. The line fits a maximal RFC 2971 ID (30 pairs of
    /// 30 and 1,024 octets, quoted).
    private static let preAuthLimits: IMAPLimits = .preAuth

    /// The upstream's side until its login completed: greeting, capability
    /// and login answers are a few hundred bytes (review F6: a 16 MiB relay
    /// limit let a broken upstream cost 27 MB per session here).
    private static func upstreamLoginDecoder() -> IMAPFrameDecoder {
        IMAPFrameDecoder(peer: .server, limits: .upstreamLogin, literalCaptureLimit: IMAPLimits.upstreamLogin.maxLiteralSize)
    }

    /// Absolute deadline from accept to a completed login (`timeouts.login`):
    /// bytes do not reset it (review F3, slowloris).
    private var loginDeadline: Scheduled<Void>?
    /// Deadline for routing plus the upstream's greeting and login (`timeouts.upstream_login`).
    private var upstreamLoginDeadline: Scheduled<Void>?

    init(id: Int, configuration: ProxyConfiguration, security: ProxyConfiguration.ListenerSecurity,
         tls: ProxyTLS, router: any Router, penalty: LoginPenalty, clientChannel: Channel, logger: Logger) {
        self.id = id
        self.penalty = penalty
        self.relay = RelayStateMachine(maxCommandsInFlight: configuration.maxCommandsInFlight)
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
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits,
                                         literalCaptureLimit: IMAPLimits.preAuth.maxLiteralSize)
    }

    // MARK: - Client side

    func clientActive() {
        startInactivityTimer(configuration.preAuthTimeout)
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        loginDeadline = clientChannel.eventLoop.scheduleTask(in: configuration.loginTimeout) {
            bound.value.loginDeadlinePassed()
        }
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
        // Bytes that arrived after the handshake and before this event wait in the buffer.
        if phase == .preAuth, clientBuffer.readableBytes > 0 { processClient() }
        resumeReads()
    }

    /// The login did not complete within `timeouts.login`.
    private func loginDeadlinePassed() {
        loginDeadline = nil
        let loggedIn = phase == .relay && (configuration.mode == .proxy || user != nil)
        guard !loggedIn, phase != .closed else { return }
        endReason = "login timeout"
        logger.notice("login time exceeded")
        phase = .closed
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        writeToClient("* BYE Login time exceeded.\r\n", flush: false)
        closeClientWhenWritten()
    }

    private func loginCompleted() {
        loginDeadline?.cancel()
        loginDeadline = nil
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
            endUpstreamFrameForBye()
            queueLocalResponse(ByteBuffer(string: "* BYE Disconnected for inactivity.\r\n"))
            closeWhenWritten()
        case .closed:
            break
        }
    }

    /// Whether the client handler may ask its channel for more bytes.
    ///
    /// Every phase stops reading while the client does not read what it is
    /// sent (review S3: replies the proxy writes itself obey the same
    /// high-water mark as relayed data), and the relay while the upstream
    /// does not read, while the client's bytes wait for the upstream's `+`,
    /// and while too many commands are in flight.
    var mayReadFromClient: Bool {
        guard clientChannel.isWritable else { return false }
        switch phase {
        case .preAuth: return preAuth.acceptsFrames || preAuth.isStartingTLS
        case .connecting, .loggingIn, .loginFailed, .closed: return false
        case .relay: return relayTakesClientBytes && (upstreamChannel?.isWritable ?? false)
        }
    }

    /// Whether the relay may consume more of the client's bytes now.
    private var relayTakesClientBytes: Bool {
        relay.takesClientBytes && clientChannel.isWritable
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

    /// Re-issues reads that back-pressure or a phase held back, after
    /// taking the client bytes already buffered (they may be all the client
    /// sends before it waits for answers).
    func resumeReads() {
        if clientBuffer.readableBytes > 0, mayReadFromClient {
            processClient()
            upstreamChannel?.flush()
        }
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

    /// The client broke the relay's rules in a way that leaves no safe way
    /// on (a literal the upstream's answer could not be matched to): `* BAD`
    /// and `* BYE`, after what is queued.
    private func endForClientProtocolError(hint: String) {
        endReason = "client protocol error: \(hint)"
        endUpstreamFrameForBye()
        queueLocalResponse(ByteBuffer(string: "* BAD \(hint).\r\n* BYE \(hint).\r\n"))
        closeWhenWritten()
    }

    private func processPreAuth() throws {
        while preAuth.acceptsFrames && phase == .preAuth && clientChannel.isWritable {
            guard let frame = try clientDecoder.next(&clientBuffer) else {
                if clientDecoder.takeContinuationRequest() != nil, let partial = clientDecoder.frameInProgress {
                    if let refusal = preAuth.literalAnnounced(in: partial) {
                        _ = clientDecoder.abandonLiteral()  // the client will not send it
                        perform(refusal)
                        continue
                    }
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
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits,
                                         literalCaptureLimit: IMAPLimits.preAuth.maxLiteralSize)
        // The OK is written and flushed to the channel below the pipeline
        // before the TLS handler goes in front of it, in the same event-loop
        // turn: it leaves in plaintext (now, or when the socket can take it),
        // and every byte read from here on passes through TLS. The session is
        // protected only once the handshake completes (`clientTLSEstablished`),
        // review S7. (A flush issued after adding the handler would be held
        // by it until the handshake, which waits for this OK.)
        clientChannel.writeAndFlush(ByteBuffer(string: ok), promise: nil)
        do {
            try clientChannel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), position: .first)
        } catch {
            endReason = "client TLS: \(error)"
            clientChannel.close(promise: nil)
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
        let deadlineBound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        upstreamLoginDeadline = clientChannel.eventLoop.scheduleTask(in: configuration.upstreamLoginTimeout) {
            deadlineBound.value.loginFailed(response: ProxySession.unavailable, reason: "upstream login timed out")
        }
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
                session.loginFailed(response: ProxySession.unavailable, reason: "router failed: \(error)")
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
            loginFailed(response: ProxySession.unavailable, reason: reason)
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
            let reason = "upstream framing error: \(error.hint)"
            if phase == .loggingIn {
                loginFailed(response: ProxySession.unavailable, reason: reason)
            } else if phase == .relay {
                // The client learns the session is over (review F7): the
                // response cut where the framer failed, then a BYE.
                logger.notice("upstream framing error", metadata: ["error": "\(error.hint)"])
                upstreamEnded(reason: reason)
            } else {
                endReason = reason
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
            loginFailed(response: ProxySession.unavailable, reason: "upstream closed during login")
        case .relay:
            upstreamEnded(reason: relay.upstreamSaidBye ? "upstream said BYE" : "upstream closed the connection")
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
        if !relay.upstreamSaidBye {
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

    static let unavailable = "NO [UNAVAILABLE] Server is unavailable."


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
        let quiet = relay.commandsInFlight == 0 || clientDecoder.framer.clientExpectation == .idleDone
        guard quiet, upstreamDecoder.framer.isAtFrameBoundary, clientDecoder.framer.isAtFrameBoundary else { return }
        endReason = "server shutting down"
        queueLocalResponse(ByteBuffer(string: "* BYE Server shutting down, please reconnect.\r\n"))
        closeWhenWritten()
    }


    /// The proxy itself is closing the upstream (its closure is no news).
    private var closingUpstream = false

    func upstreamError(_ error: Error) {
        switch phase {
        case .loggingIn:
            loginFailed(response: ProxySession.unavailable, reason: "upstream error: \(error)")
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
                loginFailed(response: ProxySession.unavailable, reason: "no TLS context for upstream")
                return
            }
            upstreamBuffer.clear()  // nothing the server said in plaintext after STARTTLS counts
            do {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: currentUpstream?.serverName)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                loginFailed(response: ProxySession.unavailable, reason: "upstream TLS: \(error)")
            }
        case .succeeded(let capabilities, let delimiter):
            loginSucceeded(capabilities: capabilities, delimiter: delimiter)
        case .failed(let response, let reason):
            loginFailed(response: response, reason: reason)
        }
    }

    private func loginSucceeded(capabilities: [String], delimiter: UInt8?) {
        upstreamLogin = nil
        upstreamLoginDeadline?.cancel()
        upstreamLoginDeadline = nil
        loginCompleted()
        penalty.succeeded(ip: clientChannel.remoteAddress?.ipAddress)
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
        upstreamLoginDeadline?.cancel()
        upstreamLoginDeadline = nil
        phase = .loginFailed
        upstreamLogin = nil
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        upstreamChannel = nil
        closingUpstream = false
        upstreamBuffer.clear()
        upstreamDecoder = ProxySession.upstreamLoginDecoder()
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let delay = penalty.failed(ip: clientChannel.remoteAddress?.ipAddress)
        clientChannel.eventLoop.scheduleTask(in: delay) {
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
        // Literal gating (DESIGN principle 4, review S2): after a line that
        // announces a synchronizing literal, no client byte is consumed until
        // the upstream's `+` (then they are the literal) or its tagged answer
        // (then the client will not send it, and what it sent anyway is
        // framed as commands, which the rules see). Reads pause meanwhile.
        while phase == .relay, relayTakesClientBytes, let event = try clientDecoder.framer.next(&clientBuffer) {
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
                        relay.clientFrameStarted(kind: .command, tag: tag)
                        collectCommand(segment)
                        continue
                    }
                    engine.commandPassed(tag: tag, name: name ?? "")
                }
                if segment.isFrameStart {
                    relay.clientFrameStarted(kind: segment.kind, tag: segment.tag)
                    if segment.kind == .command, configuration.mode == .transparent, user == nil {
                        noteTransparentLogin(segment)
                    }
                }
                if case .refuse(let hint) = relay.clientLineForwarded(literal: segment.literal) {
                    endForClientProtocolError(hint: hint)
                    return
                }
                upstream.write(segment.bytes, promise: nil)
            case .literalBytes(let chunk, _):
                if droppingClientFrame { continue }
                if commandHead != nil {
                    commandHead?.appendLiteralBytes(chunk)
                    continue
                }
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
        head.append(segment: segment.bytes)
        if head.collectedBytes > IMAPLimits.maxCollectedBytes {
            // Too large for the rules to read whole: refused, never forwarded (review S10).
            commandHead = nil
            logger.notice("selected command refused: over the collected-bytes budget",
                          metadata: ["limit.bytes": "\(IMAPLimits.maxCollectedBytes)"])
            relay.commandAnsweredByProxy()
            queueLocalResponse(ByteBuffer(string: "\(relay.currentClientTag ?? "*") BAD Command too large for this proxy's rules.\r\n"))
            if let literal = segment.literal {
                if literal.isSynchronizing { clientDecoder.framer.abandonLiteral() } else { droppingClientFrame = true }
            }
            return
        }
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
            relay.commandAnsweredByProxy()
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
        if case .refuse(let hint) = relay.clientLineForwarded(literal: streamed) { endForClientProtocolError(hint: hint) }
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
            relay.holdParts(parts, tag: command.tag)
            upstream.flush()
        }
    }

    /// Adds a line of the response being collected. A literal too large to
    /// collect (a message body) ends filtering for this response: what was
    /// collected goes out as it was, and the rest streams.
    private func collectResponse(_ segment: LineSegment) {
        guard var head = responseHead else { return }
        head.append(segment: segment.bytes)
        if head.collectedBytes > IMAPLimits.maxCollectedBytes {
            // A response the rules selected but cannot hold: the session ends
            // rather than passing it unread (review S10, DESIGN principle 5).
            responseHead = nil
            logger.notice("selected response over the collected-bytes budget",
                          metadata: ["limit.bytes": "\(IMAPLimits.maxCollectedBytes)"])
            upstreamBuffer.clear()  // nothing more of this stream is read
            endReason = "upstream response too large for the rules"
            localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] Server response too large for this proxy's rules.\r\n"))
            closeWhenWritten()
            return
        }
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

    /// The upstream answered the literal the client's bytes waited behind.
    private var clientGateOpened = false

    private func relayFromUpstream() throws {
        while let event = try upstreamDecoder.framer.next(&upstreamBuffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart {
                    if segment.kind == .taggedResponse, transparentLoginTag != nil, segment.tag == transparentLoginTag,
                       !transparentLoginAnswered(segment) {
                        return  // the session ended: the rules cannot be applied
                    }
                    let isBye = segment.kind == .untaggedResponse && segment.secondWordIs("BYE")
                    var consumed = false
                    for action in relay.upstreamFrameStarted(kind: segment.kind, tag: segment.tag, isBye: isBye) {
                        switch action {
                        case .sendToUpstream(let part): upstreamChannel?.writeAndFlush(part, promise: nil)
                        case .consumeLine: consumed = true
                        case .abandonClientLiteral: clientDecoder.framer.abandonLiteral()
                        case .resumeClient: clientGateOpened = true
                        }
                    }
                    if consumed { continue }
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
        let gateOpened = clientGateOpened
        clientGateOpened = false
        if clientBuffer.readableBytes > 0, gateOpened || clientDecoder.framer.isAtFrameBoundary {
            try relayFromClient()  // bytes held behind a literal's "+", or behind an abandoned literal
            upstreamChannel?.flush()
        }
        // Reads held for the "+", or for the in-flight limit, may go on now.
        if clientReadPending && mayReadFromClient { resumeReads() }
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

    /// Transparent mode: the upstream answered the login. From here the
    /// rules apply as in proxy mode (review S4: they were silently skipped).
    /// Returns `false` when the session was ended instead: with rules
    /// configured, a login whose user the proxy could not read (a mechanism
    /// other than PLAIN, a name sent as a literal) cannot have its rules
    /// chosen, so it is refused rather than relayed unfiltered.
    private func transparentLoginAnswered(_ segment: LineSegment) -> Bool {
        transparentLoginTag = nil
        let name = pendingTransparentUser
        pendingTransparentUser = nil
        guard segment.secondWordIs("OK") else { return true }
        if !configuration.filters.isEmpty && name == nil {
            endReason = "transparent login with rules: user unknown"
            logger.warning("login refused: the rules need the user name, which this login did not show")
            let tag = segment.tag ?? "*"
            queueLocalResponse(ByteBuffer(string: "\(tag) NO [UNAVAILABLE] Log in with LOGIN or AUTHENTICATE PLAIN.\r\n"
                + "* BYE Logging out.\r\n"))
            closeWhenWritten()
            return false
        }
        let known = name ?? "(unknown)"
        user = known
        logger[metadataKey: "imap.user"] = "\(known)"
        logger.info("upstream login succeeded")
        loginCompleted()
        engine = configuration.filters.engine(user: known, groups: [], clientAddress: clientAddressText,
                                              upstreamCapabilities: upstreamCapabilities, logger: logger)
        startInactivityTimer(configuration.idleTimeout)
        return true
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
            // Written into the held buffer: ByteBuffer grows its storage
            // geometrically, so a long partial line arriving in many reads
            // costs O(n) copying, not O(n²) (review S10).
            var data = data
            buffer.writeBuffer(&data)
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

    /// Bytes held: lines and collected literal bytes (see `IMAPLimits.maxCollectedBytes`).
    private(set) var collectedBytes = 0

    mutating func append(segment: ByteBuffer) {
        segments.append(segment)
        collectedBytes += segment.readableBytes
    }

    mutating func appendLiteralBytes(_ chunk: ByteBuffer) {
        guard !literals.isEmpty else { return }
        literals[literals.count - 1].chunks?.append(chunk)
        collectedBytes += chunk.readableBytes
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
