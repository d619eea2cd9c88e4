import IMAPWire
import Logging
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
    let clientChannel: Channel
    var logger: Logger
    private(set) var phase: Phase = .preAuth

    private var preAuth: PreAuthStateMachine
    private var clientDecoder: IMAPFrameDecoder
    private var clientBuffer = ByteBuffer()

    private var upstreamChannel: Channel?
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

    private var user: String?
    private var bytesFromClient = 0
    private var bytesFromUpstream = 0
    private let started = NIODeadline.now()
    private var endReason = "client closed the connection"

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
         tls: ProxyTLS, clientChannel: Channel, logger: Logger) {
        self.id = id
        self.configuration = configuration
        self.tls = tls
        self.clientChannel = clientChannel
        self.logger = logger
        self.logger[metadataKey: "imap.session.id"] = "\(id)"
        preAuth = PreAuthStateMachine(security: security, greeting: configuration.greeting,
                                      maxBadCommands: configuration.maxBadCommands)
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits, literalCaptureLimit: 8 * 1024)
    }

    // MARK: - Client side

    func clientActive() {
        if let address = clientChannel.remoteAddress { logger[metadataKey: "client.address"] = "\(address)" }
        logger.info("session started")
        writeToClient(preAuth.greeting(), flush: true)
    }

    func clientRead(_ data: ByteBuffer) {
        bytesFromClient += data.readableBytes
        append(data, to: &clientBuffer)
        processClient()
    }

    func clientReadComplete() {
        upstreamChannel?.flush()
    }

    func clientClosed() {
        if phase != .closed { end(reason: endReason) }
    }

    func clientError(_ error: Error) {
        endReason = "client error: \(error)"
        clientChannel.close(promise: nil)
    }

    func clientTLSEstablished() {
        preAuth.tlsEstablished()
    }

    func clientTimedOut() {
        switch phase {
        case .preAuth, .loggingIn, .loginFailed:
            endReason = "pre-auth timeout"
            writeToClient("* BYE Disconnected for inactivity.\r\n", flush: true)
            clientChannel.close(promise: nil)
        case .relay:
            // RFC 2177: a client in IDLE is not idle; it re-issues IDLE on its own schedule.
            guard clientDecoder.framer.clientExpectation != .idleDone else { return }
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
        case .loggingIn, .loginFailed, .closed: return false
        case .relay: return upstreamChannel?.isWritable ?? false
        }
    }

    var mayReadFromUpstream: Bool {
        switch phase {
        case .loggingIn: return true
        case .relay: return clientChannel.isWritable
        case .preAuth, .loginFailed, .closed: return false
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
            case .loggingIn, .loginFailed, .closed:
                break
            }
        } catch let error as IMAPFramingError {
            endReason = "client framing error: \(error.hint)"
            let answer = error.tag.map { "\($0) BAD \(error.hint)\r\n" } ?? ""
            queueLocalResponse(ByteBuffer(string: answer + "* BYE \(error.hint)\r\n"))
            closeBoth()
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
            connectUpstream(credentials: credentials)
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

    private func connectUpstream(credentials: Credentials) {
        let upstream = configuration.upstream
        logger[metadataKey: "upstream.host"] = "\(upstream.host):\(upstream.port)"
        upstreamLogin = UpstreamLoginStateMachine(credentials: credentials, useStartTLS: upstream.security == .starttls)
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let tlsContext = tls.upstream
        let serverName = tls.upstreamServerName
        let connect = ClientBootstrap(group: clientChannel.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
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
            .connect(host: upstream.host, port: upstream.port)
        connect.whenComplete { result in
            let session = bound.value
            switch result {
            case .success(let channel):
                session.upstreamChannel = channel
                if session.phase != .loggingIn { channel.close(promise: nil) }
            case .failure(let error):
                session.loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "connect failed: \(error)")
            }
        }
    }

    func upstreamActive(_ channel: Channel) {
        if upstreamChannel == nil && phase == .loggingIn { upstreamChannel = channel }
    }

    func upstreamRead(_ data: ByteBuffer) {
        bytesFromUpstream += data.readableBytes
        append(data, to: &upstreamBuffer)
        do {
            switch phase {
            case .loggingIn:
                try processUpstreamLogin()
            case .relay:
                try relayFromUpstream()
            case .preAuth, .loginFailed, .closed:
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
        guard phase == .loggingIn, var login = upstreamLogin else { return }
        let action = login.tlsEstablished()
        upstreamLogin = login
        performLogin(action)
    }

    func upstreamClosed() {
        guard !closingUpstream else { return }
        switch phase {
        case .loggingIn:
            loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream closed during login")
        case .relay:
            endReason = upstreamSaidBye ? "upstream said BYE" : "upstream closed the connection"
            if upstreamDecoder.framer.isAtFrameBoundary && !upstreamSaidBye {
                localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] Server closed the connection.\r\n"))
                flushLocalResponses()
            }
            // Mid-frame, a BYE would land inside the response; the client sees the cut instead.
            clientChannel.flush()
            clientChannel.close(promise: nil)
        case .preAuth, .loginFailed, .closed:
            break
        }
    }

    /// The upstream sent `* BYE` (after LOGOUT, or shutting down): its
    /// closing needs no BYE from the proxy.
    private var upstreamSaidBye = false

    /// The proxy itself is closing the upstream (its closure is no news).
    private var closingUpstream = false

    func upstreamError(_ error: Error) {
        if phase == .loggingIn {
            loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream error: \(error)")
        } else {
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
            guard let channel = upstreamChannel, let context = tls.upstream else {
                loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "no TLS context for upstream")
                return
            }
            upstreamBuffer.clear()  // nothing the server said in plaintext after STARTTLS counts
            do {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: tls.upstreamServerName)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                loginFailed(response: "NO [UNAVAILABLE] Server is unavailable.", reason: "upstream TLS: \(error)")
            }
        case .succeeded(let capabilities):
            loginSucceeded(capabilities: capabilities)
        case .failed(let response, let reason):
            loginFailed(response: response, reason: reason)
        }
    }

    private func loginSucceeded(capabilities: [String]) {
        upstreamLogin = nil
        phase = .relay
        logger.info("upstream login succeeded")
        // COMPRESS would make the stream unparseable for the relay; it is not offered.
        let offered = capabilities.filter { !$0.uppercased().hasPrefix("COMPRESS=") }
        let action = preAuth.loginSucceeded(capabilities: offered)
        if case .send(let ok) = action { writeToClient(ok, flush: true) }
        clientDecoder.framer.limits = configuration.clientLimits
        upstreamDecoder.framer.limits = configuration.serverLimits
        replaceIdleTimer(configuration.idleTimeout)
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
        while let event = try clientDecoder.framer.next(&clientBuffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart, segment.kind == .command, segment.endsFrame,
                   segment.secondWord == "COMPRESS", let tag = segment.tag {
                    queueLocalResponse(ByteBuffer(string: "\(tag) NO [CANNOT] COMPRESS is not available through this proxy.\r\n"))
                    continue
                }
                if segment.isFrameStart { currentClientTag = segment.kind == .command ? segment.tag : nil }
                if let literal = segment.literal, literal.isSynchronizing { pendingLiteralTag = currentClientTag }
                upstream.write(segment.bytes, promise: nil)
            case .literalBytes(let chunk, _):
                pendingLiteralTag = nil
                upstream.write(chunk, promise: nil)
            }
        }
        compact(&clientBuffer)
    }

    private var currentClientTag: String?

    private func relayFromUpstream() throws {
        while let event = try upstreamDecoder.framer.next(&upstreamBuffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart, segment.kind == .untaggedResponse, segment.secondWord == "BYE" {
                    upstreamSaidBye = true
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
                if segment.isFrameStart, segment.endsFrame, let rewritten = CapabilityRewriter.withoutCompress(segment) {
                    clientChannel.write(rewritten, promise: nil)
                } else {
                    clientChannel.write(segment.bytes, promise: nil)
                }
            case .literalBytes(let chunk, _):
                clientChannel.write(chunk, promise: nil)
            }
        }
        compact(&upstreamBuffer)
        flushLocalResponses()
        if clientDecoder.framer.isAtFrameBoundary, clientBuffer.readableBytes > 0 {
            try relayFromClient()  // bytes held behind an abandoned literal
        }
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

    static let idleHandlerName = "sluice.idle"

    private func replaceIdleTimer(_ timeout: TimeAmount) {
        let pipeline = clientChannel.pipeline.syncOperations
        _ = clientChannel.pipeline.removeHandler(name: ProxySession.idleHandlerName)
        try? pipeline.addHandler(IdleStateHandler(allTimeout: timeout), name: ProxySession.idleHandlerName, position: .first)
    }

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

    private func closeBoth() {
        closingUpstream = true
        flushLocalResponses()
        clientChannel.flush()
        clientChannel.close(promise: nil)
        upstreamChannel?.close(promise: nil)
    }

    private func end(reason: String) {
        phase = .closed
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
}
