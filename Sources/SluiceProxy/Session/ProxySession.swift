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
    let id: Int
    /// The configuration, certificates and router the session started with.
    let settings: ProxyServer.Settings
    /// Read in place from `settings`, never copied (`_read` yields a borrow).
    var configuration: ProxyConfiguration { _read { yield settings.configuration } }
    var tls: ProxyTLS { settings.tls }
    var router: any Router { settings.router }
    let penalty: LoginPenalty
    let clientChannel: Channel
    /// The client's address: the connection's peer, or the source a PROXY
    /// protocol header gave (a load balancer in front). Logs, routing, ID
    /// forwarding, the PROXY header upstream and the login penalty use it.
    let clientAddress: SocketAddress?
    /// The address the client connected to (the balancer's, after a PROXY header).
    let connectedAddress: SocketAddress?
    /// The process's logger, without the session's fields.
    private let baseLogger: Logger
    var logFields: SessionLogFields
    /// The logger with the session's fields (`SessionLogFields`), made per use.
    var logger: Logger { logFields.logger(from: baseLogger) }
    var phase: SessionPhase = .preAuth

    var preAuth: PreAuthStateMachine
    var clientDecoder: IMAPFrameDecoder
    var clientBuffer = ByteBuffer()

    var upstreamChannel: Channel?
    /// Which upstream connection is this session's: counted on by each
    /// connect and by each failed login. A connection from an earlier login
    /// that completes late (its login failed at `timeouts.upstream_login`
    /// while the connect was pending) has an older number: its handler
    /// closes it, and none of its events reach the session.
    var upstreamGeneration: UInt32 = 0
    /// The relay's writes and flushes, from the handlers' contexts (set while the relay runs).
    var relayOutputs: RelayOutputs?
    var upstreamDecoder = ProxySession.upstreamLoginDecoder()
    var upstreamBuffer = ByteBuffer()

    /// Literal gating, the proxy's own continuations, in-flight commands.
    var relay: RelayStateMachine
    /// Answers the proxy gives itself, held until the upstream's stream is
    /// between frames so they never land inside a response.
    var localResponses: [ByteBuffer] = []
    /// Bytes in `localResponses`: while over the write high-water mark, the
    /// client is not read (its refused commands cannot pile up answers while
    /// a long response streams, red team #8).
    var localResponseBytes = 0

    private(set) var clientReadPending = false
    private(set) var upstreamReadPending = false

    var capabilityRewriter: CapabilityRewriter { settings.capabilityRewriter }
    /// The rules' state for this user; `nil` when no rule applies.
    var filters: FilterStage?
    /// The rules' filter chains, when some rule applies.
    var engine: FilterEngine? { filters?.engine }
    /// A server response being collected whole: for the filters, or a long
    /// line the capability rewriter must read.
    var responseHead: CollectedFrame?
    /// The rest of a command the proxy refused: its literal and lines are read and dropped.
    var droppingClientFrame = false
    /// Reading the rest of an upstream answer that is swallowed.
    var swallowingUpstreamFrame = false
    /// The client's last command was IDLE: the next line must be DONE.
    var clientInIdle = false
    /// Literals up to this size inside a filtered frame are collected; larger
    /// ones stream (a client command) or leave the frame unfiltered (a response).
    static let filterLiteralLimit = IMAPLimits.maxCollectedLiteralSize
    /// Shutting down: say BYE as soon as no command is in flight.
    var draining = false
    /// Transparent mode: who logs in, read from the relayed login (`nil` in proxy mode).
    var transparentLogin: TransparentLoginObserver?

    /// Who, how much, how long, why it ended: the end-of-session line.
    var record = SessionRecord()
    let metrics: ProxyMetrics
    let listenerMetrics: ProxyMetrics.ListenerMetrics?
    /// When the client's login command arrived (until its answer is sent): `sluice_login_duration_seconds`.
    var loginStarted: NIODeadline?
    /// The client's TLS handshake completed (implicit or STARTTLS).
    var clientHandshakeDone = false
    /// The upstream's TLS handshake completed.
    var upstreamHandshakeDone = false
    /// The client sent LOGOUT after login: the session's end is a logout.
    var clientLoggedOut = false
    /// The user who logged in (or is logging in).
    var user: String? {
        get { record.user }
        set { record.user = newValue }
    }

    /// Opens the upstream connection (socket options, implicit TLS).
    let connector: UpstreamConnector

    /// Pre-auth limits: credentials are small; a client may not make the
    /// proxy buffer more. The line fits a maximal RFC 2971 ID (30 pairs of
    /// 30 and 1,024 octets, quoted).
    static let preAuthLimits: IMAPLimits = .preAuth

    /// Absolute deadline from accept to a completed login (`timeouts.login`):
    /// bytes do not reset it (review F3, slowloris).
    var loginDeadline: NIODeadline?
    /// Deadline for routing plus the upstream's greeting and login (`timeouts.upstream_login`).
    var upstreamLoginDeadline: NIODeadline?
    /// The client's connection is protected by TLS (implicit, or after a completed STARTTLS handshake).
    var clientUsesTLS: Bool
    /// The cipher suite of the client's TLS, by OpenSSL's name (`ServerHelloReader`).
    var clientTLSCipher: String?
    /// How long the client may go without bytes moving to or from it: the
    /// pre-auth timeout until login, then the idle timeout.
    var inactivity: InactivityClock
    /// The session's one timer (`ProxySession+Timers.swift`) and when it fires.
    var sessionTimer: (task: Scheduled<Void>, due: NIODeadline)?
    /// The proxy itself is closing the upstream (its closure is no news).
    var closingUpstream = false
    /// The upstream answered the literal the client's bytes waited behind.
    var clientGateOpened = false
    /// The session's end was logged (once).
    var ended = false

    init(id: Int, settings: ProxyServer.Settings, security: ProxyConfiguration.ListenerSecurity,
         penalty: LoginPenalty, clientChannel: Channel,
         clientAddress: SocketAddress?, connectedAddress: SocketAddress?, logger: Logger,
         metrics: ProxyMetrics, listener: String) {
        let configuration = settings.configuration
        self.id = id
        self.settings = settings
        self.metrics = metrics
        self.listenerMetrics = metrics.listener(listener)
        self.penalty = penalty
        self.relay = RelayStateMachine(maxCommandsInFlight: configuration.maxCommandsInFlight)
        self.connector = UpstreamConnector(configuration)
        self.clientUsesTLS = security == .implicit
        if configuration.mode == .transparent {
            transparentLogin = TransparentLoginObserver(rulesConfigured: !configuration.filters.isEmpty)
        }
        self.clientChannel = clientChannel
        self.clientAddress = clientAddress
        self.connectedAddress = connectedAddress
        self.inactivity = InactivityClock(limit: configuration.preAuthTimeout, now: .now())
        self.baseLogger = logger
        self.logFields = SessionLogFields(sessionID: id)
        preAuth = PreAuthStateMachine(security: security, configuration: configuration)
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits,
                                         literalCaptureLimit: IMAPLimits.preAuth.maxLiteralSize)
    }

    // MARK: - Client side

    func clientActive() {
        listenerMetrics?.active.increment()
        listenerMetrics?.total.increment()
        startSessionTimer()
        logFields.clientAddress = clientAddressText
        logger.info("session started")
        if configuration.mode == .transparent, let upstream = configuration.staticUpstream {
            phase = .connecting
            do {
                // The static router holds the endpoint with its TLS context built once.
                let endpoint = try (router as? StaticRouter)?.upstream ?? UpstreamEndpoint(upstream)
                connectUpstream(route: Route(upstream: endpoint, login: .asUser("")), clientPassword: [])
            } catch {
                record.endReason = .upstreamUnavailable("upstream TLS: \(ErrorText.describe(error))")
                writeToClient(UnavailableReply.bye, flush: true)
                clientChannel.close(promise: nil)
            }
            return
        }
        clientChannel.writeAndFlush(settings.greeting(for: preAuth.security), promise: nil)
    }

    func clientRead(_ data: ByteBuffer) {
        noteActivity()
        record.bytesFromClient += data.readableBytes
        metrics.bytesFromClient.increment(by: data.readableBytes)
        append(data, to: &clientBuffer)
        processClient()
    }

    func clientReadComplete() {
        if let relayOutputs { relayOutputs.upstream.flush() } else { upstreamChannel?.flush() }
    }

    func clientClosed() {
        end()
    }

    func clientError(_ error: Error) {
        if !clientHandshakeDone, error is NIOSSLError || error is BoringSSLError {
            metrics.tlsHandshake(.client, succeeded: false)
        }
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
            // Many clients close TLS without close_notify: an ordinary ending.
            record.endReason = .clientClosed
        } else {
            record.endReason = .clientError(ErrorText.describe(error))
        }
        clientChannel.close(promise: nil)
    }

    func clientTLSEstablished() {
        clientUsesTLS = true
        clientHandshakeDone = true
        metrics.tlsHandshake(.client, succeeded: true)
        preAuth.tlsEstablished()
        // Bytes that arrived after the handshake and before this event wait in the buffer.
        if phase.kind == .preAuth, clientBuffer.readableBytes > 0 { processClient() }
        resumeReads()
    }

    var clientAddressText: String? {
        HostPort(clientAddress).map(\.description)
    }

    /// Whether the client handler may ask its channel for more bytes.
    ///
    /// Every phase stops reading while the client does not read what it is
    /// sent (review S3: replies the proxy writes itself obey the same
    /// high-water mark as relayed data), and the relay while the upstream
    /// does not read, while the client's bytes wait for the upstream's `+`,
    /// and while too many commands are in flight.
    ///
    /// Nothing is read while a login is under way or its failure is being
    /// delayed. (Reading ahead a few KiB then would save two `epoll_ctl`
    /// calls per login, but NIO reads up to four times 64 KiB per wake-up
    /// once asked: red team 8 made each such session hold 256 KiB.)
    var mayReadFromClient: Bool {
        guard clientChannel.isWritable else { return false }
        switch phase.kind {
        case .preAuth: return preAuth.acceptsFrames || preAuth.isStartingTLS
        case .connecting, .loggingIn, .loginFailed, .closed: return false
        case .relay: return relayTakesClientBytes && (upstreamChannel?.isWritable ?? false)
        }
    }

    /// Whether the relay may consume more of the client's bytes now.
    var relayTakesClientBytes: Bool {
        relay.takesClientBytes && clientChannel.isWritable && !(transparentLogin?.holdsClient ?? false)
            && localResponseBytes < configuration.writeBufferHighWaterMark
    }

    var mayReadFromUpstream: Bool {
        switch phase.kind {
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

    func processClient() {
        do {
            switch phase.kind {
            case .preAuth:
                try processPreAuth()
            case .relay:
                try relayFromClient()
            case .connecting, .loggingIn, .loginFailed, .closed:
                break
            }
        } catch let error as IMAPFramingError {
            metrics.framingError(.client)
            record.endReason = .clientFramingError(hint: error.hint)
            let answer = error.tag.map { "\($0) BAD \(error.hint)\r\n" } ?? ""
            // A response still streaming to the client is cut where it is
            // (made visibly incomplete) so that the answer can follow.
            if phase.kind == .relay { endUpstreamFrameForBye() }
            queueLocalResponse(ByteBuffer(string: answer + "* BYE \(error.hint)\r\n"))
            closeWhenWritten()
        } catch {
            record.endReason = .clientError("\(error)")
            closeBoth()
        }
    }

    func upstreamActive(_ channel: Channel) {
        if upstreamChannel == nil && (phase.kind == .loggingIn || phase.kind == .connecting) { upstreamChannel = channel }
    }

    func upstreamRead(_ data: ByteBuffer) {
        record.bytesFromUpstream += data.readableBytes
        metrics.bytesFromUpstream.increment(by: data.readableBytes)
        append(data, to: &upstreamBuffer)
        do {
            switch phase.kind {
            case .loggingIn:
                try processUpstreamLogin()
            case .relay:
                noteActivity()
                try relayFromUpstream()
            case .connecting, .preAuth, .loginFailed, .closed:
                upstreamBuffer.clear()
            }
        } catch let error as IMAPFramingError {
            metrics.framingError(.upstream)
            let reason = EndReason.upstreamFramingError(hint: error.hint)
            if phase.kind == .loggingIn {
                loginFailed(response: ProxySession.unavailable, reason: reason.text)
            } else if phase.kind == .relay {
                // The client learns the session is over (review F7): the
                // response cut where the framer failed, then a BYE.
                logger.warning("upstream framing error", metadata: ["error": "\(error.hint)"])
                upstreamEnded(reason: reason)
            } else {
                record.endReason = reason
                closeBoth()
            }
        } catch {
            record.endReason = .upstreamError(ErrorText.describe(error))
            closeBoth()
        }
    }

    func upstreamReadComplete() {
        if let relayOutputs { relayOutputs.client.flush() } else { clientChannel.flush() }
    }

    func upstreamTLSEstablished() {
        upstreamHandshakeDone = true
        metrics.tlsHandshake(.upstream, succeeded: true)
        if phase.kind == .connecting {
            return
        }
        guard case .loggingIn(let attempt?) = phase else { return }
        performLogin(attempt.machine.tlsEstablished())
    }

    func upstreamClosed() {
        guard !closingUpstream else { return }
        switch phase.kind {
        case .connecting:
            upstreamUnavailable(reason: "upstream closed before the relay started")
        case .loggingIn:
            loginFailed(response: ProxySession.unavailable, reason: "upstream closed during login")
        case .relay:
            upstreamEnded(reason: relay.upstreamSaidBye ? .upstreamSaidBye : .upstreamClosed)
        case .preAuth, .loginFailed, .closed:
            break
        }
    }

    static let unavailable = UnavailableReply.tagged

    /// Pre-login answers written at once at most (`processPreAuth`).
    static let preAuthAnswerBatch = 16 * 1024

    func upstreamError(_ error: Error) {
        if !upstreamHandshakeDone, error is NIOSSLError || error is BoringSSLError {
            upstreamHandshakeDone = true  // counted once
            metrics.tlsHandshake(.upstream, succeeded: false)
        }
        switch phase.kind {
        case .loggingIn:
            loginFailed(response: ProxySession.unavailable, reason: "upstream error: \(ErrorText.describe(error))")
        case .relay:
            // A reset mid-response is the server going away, as a close is.
            upstreamEnded(reason: .upstreamError(ErrorText.describe(error)))
        case .connecting, .preAuth, .loginFailed, .closed:
            record.endReason = .upstreamError(ErrorText.describe(error))
            closeBoth()
        }
    }

    func writeToClient(_ text: String, flush: Bool) {
        if flush {
            clientChannel.writeAndFlush(ByteBuffer(string: text), promise: nil)
        } else {
            clientChannel.write(ByteBuffer(string: text), promise: nil)
        }
    }

    /// Appends a read to a side's buffer without copying when nothing is left
    /// over from the previous read (the common case for literal traffic).
    func append(_ data: ByteBuffer, to buffer: inout ByteBuffer) {
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
    /// buffer); a partial line left over stays for the next read. Bytes
    /// consumed in front of it are dropped once they are many: a long line
    /// streamed in pieces always leaves a tail behind, and its buffer would
    /// otherwise keep every piece (review B.4).
    func compact(_ buffer: inout ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = ProxySession.empty
        } else if buffer.readerIndex >= IMAPLimits.streamedLinePiece {
            buffer.discardReadBytes()
        }
    }

    static let empty = ByteBuffer()

}
