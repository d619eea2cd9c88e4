import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Routing, connecting to the upstream and logging in there (`UpstreamLoginStateMachine`).
extension ProxySession {
    /// The upstream's side until its login completed: greeting, capability
    /// and login answers are a few hundred bytes (review F6: a 16 MiB relay
    /// limit let a broken upstream cost 27 MB per session here).
    static func upstreamLoginDecoder() -> IMAPFrameDecoder {
        IMAPFrameDecoder(peer: .server, limits: .upstreamLogin, literalCaptureLimit: IMAPLimits.upstreamLogin.maxLiteralSize)
    }

    /// Asks the router where this user goes, then connects there.
    func route(_ clientCredentials: Credentials) {
        if ProxyHops.exhausted(after: preAuth.clientID) {
            loginFailed(response: ProxyHops.refusal, reason: "proxy loop: x-proxy-ttl exhausted")
            return
        }
        var rewritten = clientCredentials
        for rewrite in configuration.loginRewrites {
            guard let name = rewrite.apply(clientCredentials.userName) else { continue }
            logFields.upstreamUser = name
            rewritten.user = Array(name.utf8)
            break
        }
        let credentials = rewritten
        let upstreamDeadline = NIODeadline.now() + configuration.upstreamLoginTimeout
        upstreamLoginDeadline = upstreamDeadline
        armSessionTimer(notAfter: upstreamDeadline)
        let tlsVersion = clientUsesTLS
            ? (try? clientChannel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self))?.tlsVersion : nil
        let request = RouteRequest(credentials: credentials, clientAddress: clientAddress,
                                   clientID: preAuth.clientID, clientUsesTLS: clientUsesTLS,
                                   clientTLSProtocol: tlsVersion.map(ProxySession.tlsName),
                                   clientTLSCipher: clientUsesTLS ? clientTLSCipher : nil,
                                   mechanism: preAuth.loginMechanism, loginCommand: preAuth.usedLoginCommand,
                                   loginAttempt: preAuth.loginAttempts)
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let attempt = preAuth.loginAttempts
        router.route(request, on: clientChannel.eventLoop).hop(to: clientChannel.eventLoop).whenComplete { result in
            let session = bound.value
            // Only the answer to this login, and only while it waits for one: a
            // late answer to an earlier login (after its timeout) must not route
            // a later one (review of issue 11 #1).
            guard case .loggingIn(nil) = session.phase, session.preAuth.loginAttempts == attempt else { return }
            switch result {
            case .success(.route(let route)):
                session.connectUpstream(route: route, clientPassword: route.password ?? credentials.password,
                                        bearer: credentials.bearer)
            case .success(.reject(let response)):
                session.loginFailed(response: response, reason: "refused by the router")
            case .failure(let error):
                session.loginFailed(response: ProxySession.unavailable, reason: "router failed: \(error)")
            }
        }
    }

    func connectUpstream(route: Route, clientPassword: [UInt8], bearer: BearerMechanism? = nil) {
        let upstream = route.upstream
        logFields.upstreamHost = HostPort(host: upstream.host, port: upstream.port).description
        if route.upstreamName != "\(upstream.host):\(upstream.port)" {
            logFields.upstreamName = route.upstreamName
        }
        if case .asUser(let name) = route.login, !name.isEmpty, name != user {
            logFields.upstreamUser = name
        }
        // With filters, the proxy asks the delimiter itself before the relay starts.
        let learn = phase.kind == .loggingIn && configuration.filters.applies(to: user ?? "", groups: route.groups)
        let forward = upstream.forwardClientAddress
            ? ForwardedAddresses(client: clientAddress, local: connectedAddress,
                                 clientID: preAuth.clientID) : nil
        if phase.kind == .loggingIn {
            let machine = UpstreamLoginStateMachine(
                credentials: UpstreamCredentials(route.login, clientPassword: clientPassword, bearer: bearer),
                useStartTLS: upstream.security == .starttls, learnDelimiter: learn, forward: forward)
            phase = .loggingIn(UpstreamLoginAttempt(machine: machine, upstream: upstream, groups: route.groups))
        }
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        let connectStarted = NIODeadline.now()
        let upstreamName = route.upstreamName
        let proxyHeader = upstream.proxyProtocol.map {
            ProxyProtocol.header($0, source: clientAddress, destination: connectedAddress)
        }
        upstreamGeneration &+= 1
        let generation = upstreamGeneration
        connector.connect(to: upstream, on: clientChannel.eventLoop, proxyHeader: proxyHeader) {
            UpstreamHandler(session: bound.value, generation: generation)
        }.whenComplete { result in
            let session = bound.value
            guard session.upstreamGeneration == generation else {
                // The login this connection was made for is over.
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let channel):
                session.metrics.upstreamConnected(upstreamName, after: .now() - connectStarted)
                session.upstreamChannel = channel
                if session.phase.kind == .connecting {
                    session.startTransparentRelay()
                } else if session.phase.kind != .loggingIn {
                    channel.close(promise: nil)
                }
            case .failure(let error):
                session.upstreamUnavailable(reason: "connect failed: \(error)")
            }
        }
    }

    /// The upstream cannot be reached (or fails TLS) before the relay started.
    func upstreamUnavailable(reason: String) {
        if phase.kind == .connecting {
            record.endReason = .upstreamUnavailable(reason)
            logger.notice("upstream unavailable", metadata: ["reason": "\(reason)"])
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: UnavailableReply.bye)).whenComplete {
                [clientChannel] _ in clientChannel.close(promise: nil)
            }
        } else {
            loginFailed(response: ProxySession.unavailable, reason: reason)
        }
    }

    /// Transparent mode: the upstream is connected; from here every byte in
    /// both directions relays, greeting and login included.
    func startTransparentRelay() {
        phase = .relay
        relayOutputs = upstreamChannel.flatMap { RelayOutputs(client: clientChannel, upstream: $0) }
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: configuration.clientLimits, literalCaptureLimit: IMAPLimits.preAuth.maxLiteralSize)
        upstreamDecoder.framer.limits = configuration.serverLimits
        upstreamDecoder.framer.streamsLongLines = true  // a long line is not held whole (review B.4)
        resumeReads()
        upstreamChannel?.read()
    }

    func processUpstreamLogin() throws {
        while case .loggingIn(let attempt?) = phase, let frame = try upstreamDecoder.next(&upstreamBuffer) {
            performLogin(attempt.machine.receive(frame))
        }
        if phase.kind == .relay { try relayFromUpstream() }
    }

    func performLogin(_ action: UpstreamLoginStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let bytes):
            upstreamChannel?.writeAndFlush(bytes, promise: nil)
        case .startTLS:
            guard let channel = upstreamChannel, case .loggingIn(let attempt?) = phase else { return }
            upstreamBuffer.clear()  // nothing the server said in plaintext after STARTTLS counts
            do {
                try UpstreamConnector.startTLS(on: channel, upstream: attempt.upstream)
            } catch {
                loginFailed(response: ProxySession.unavailable, reason: "upstream TLS: \(ErrorText.describe(error))")
            }
        case .succeeded(let capabilities, let delimiter):
            loginSucceeded(capabilities: capabilities, delimiter: delimiter)
        case .failed(let response, let reason):
            let challenge: String?
            if case .loggingIn(let attempt?) = phase { challenge = attempt.machine.saslChallenge } else { challenge = nil }
            loginFailed(response: response, reason: reason, challenge: challenge)
        }
    }

    func loginSucceeded(capabilities: [String], delimiter: UInt8?) {
        guard case .loggingIn(let attempt?) = phase else { return }
        upstreamLoginDeadline = nil
        loginCompleted()
        penalty.succeeded(ip: LoginPenalty.key(for: clientAddress))
        phase = .relay
        relayOutputs = upstreamChannel.flatMap { RelayOutputs(client: clientChannel, upstream: $0) }
        logger.info("upstream login succeeded")
        // COMPRESS would make the stream unparseable for the relay; it is not offered.
        var offered: [String] = []
        offered.reserveCapacity(capabilities.count)
        for name in capabilities where !capabilityRewriter.isRemoved(name) { offered.append(name) }
        if !configuration.filters.isEmpty {
            filters = configuration.filters.engine(user: user ?? "", groups: attempt.groups, clientAddress: clientAddressText,
                                                  upstreamCapabilities: capabilities, logger: logger).map(FilterStage.init)
        }
        if let engine {
            offered = engine.capabilities(offered)
            if let delimiter { engine.learned(hierarchyDelimiter: delimiter) }
        }
        let action = preAuth.loginSucceeded(capabilities: offered)
        if case .send(let ok) = action { writeToClient(ok, flush: true) }
        loginAnswered(.ok)
        clientDecoder.framer.limits = configuration.clientLimits
        upstreamDecoder.framer.limits = configuration.serverLimits
        upstreamDecoder.framer.streamsLongLines = true  // a long line is not held whole (review B.4)
        startIdleTimeout()
        // Bytes that arrived behind the login on either side now relay: the
        // client's here, through processClient, so that a framing error in
        // them is answered with BAD and BYE like one sent later (red team 8
        // #3: they closed the session silently); the server's when this
        // returns to processUpstreamLogin, which relays them and handles
        // their errors as the upstream's.
        processClient()
        guard phase.kind == .relay else { return }
        clientChannel.flush()
        upstreamChannel?.flush()
        resumeReads()
        byeIfQuiet()
    }

    func loginFailed(response: String, reason: String, challenge: String? = nil) {
        guard phase.kind == .loggingIn else { return }
        logger.notice("login failed", metadata: ["reason": "\(reason)"])
        upstreamLoginDeadline = nil
        phase = .loginFailed
        upstreamGeneration &+= 1  // a connect still under way is no longer this session's
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        upstreamChannel = nil
        closingUpstream = false
        upstreamBuffer.clear()
        upstreamDecoder = ProxySession.upstreamLoginDecoder()
        let bound = NIOLoopBound(self, eventLoop: clientChannel.eventLoop)
        // The upstream's own NO [UNAVAILABLE] (Dovecot: a temporary authentication failure) too.
        let unavailable = response == ProxySession.unavailable || response.uppercased().hasPrefix("NO [UNAVAILABLE]")
        let delay = penalty.failed(ip: LoginPenalty.key(for: clientAddress), unavailable: unavailable)
        clientChannel.eventLoop.scheduleTask(in: delay) {
            let session = bound.value
            guard session.phase.kind == .loginFailed else { return }
            session.phase = .preAuth
            session.perform(session.preAuth.loginFailed(response: response, challenge: challenge))
            if session.preAuth.isAwaitingSASL { session.clientDecoder.framer.authenticationResumed() }
            session.loginAnswered(unavailable ? .unavailable : .rejected)
            session.processClient()
            session.resumeReads()
        }
    }

    /// The client's login got its tagged answer: counted and timed.
    func loginAnswered(_ result: ProxyMetrics.LoginResult, mechanism: LoginMechanism? = nil) {
        guard let started = loginStarted else { return }
        loginStarted = nil
        metrics.login(result, mechanism: mechanism ?? preAuth.loginMechanism, duration: .now() - started)
    }
}

extension ProxySession {
    /// nginx's names for TLS versions (`Auth-SSL-Protocol`).
    static func tlsName(_ version: TLSVersion) -> String {
        switch version {
        case .tlsv1: return "TLSv1"
        case .tlsv11: return "TLSv1.1"
        case .tlsv12: return "TLSv1.2"
        case .tlsv13: return "TLSv1.3"
        }
    }
}
