import IMAPWire

/// The proxy's side of the conversation before login (RFC 3501 §6.1–6.2):
/// greeting, CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN and AUTHENTICATE
/// PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER (with and without SASL-IR; those
/// `auth_mechanisms` offers). Everything else is refused.
///
/// A struct without I/O: it takes frames and events and returns actions that
/// the session's handler carries out.
struct PreAuthStateMachine {
    enum Action: Equatable {
        /// Write these complete lines to the client.
        case send(String)
        /// Write these lines, then close the connection.
        case sendAndClose(String)
        /// Write this OK, then start TLS; plaintext the client pipelined
        /// behind STARTTLS must be discarded.
        case startTLS(String)
        /// Log in upstream with these credentials for the command `tag`.
        case login(tag: String, credentials: Credentials)
        /// Nothing to do.
        case none
    }

    private enum State: Equatable {
        case ready
        /// STARTTLS was answered; nothing is read as a command until the
        /// handshake completes (review S7: plaintext read in that window
        /// must never count as protected).
        case startingTLS
        /// An AUTHENTICATE exchange waits for the client's next SASL line.
        case awaitingSASL(tag: String, step: SASLStep)
        /// The upstream login is in progress; no frames are taken meanwhile.
        case loggingIn(tag: String)
        case loggedIn
        case closed
    }

    private enum SASLStep: Equatable {
        case plain
        case loginUser
        case loginPassword(user: [UInt8])
        case bearer(BearerMechanism)
        /// The upstream refused a bearer token with a SASL error challenge
        /// (RFC 7628 §3.2.3): the client got the same challenge and answers
        /// it; then it gets the refusal.
        case failureAcknowledgement(response: String)
    }

    /// How the client's current (or last) login was given.
    private(set) var loginMechanism: LoginMechanism = .login
    /// It was the LOGIN command (not AUTHENTICATE LOGIN).
    private(set) var usedLoginCommand = true
    /// Logins tried on this connection (the auth service's `Auth-Login-Attempt`).
    private(set) var loginAttempts = 0

    let security: ProxyConfiguration.ListenerSecurity
    let greetingText: String
    let maxBadCommands: Int
    /// SASL mechanisms offered (`auth_mechanisms`), upper case, in order.
    let mechanisms: [String]
    private(set) var tlsActive: Bool
    private(set) var badCommands = 0
    /// What the client said of itself with ID (RFC 2971), for logs and upstream.
    private(set) var clientID: IDParameters?
    private var state: State = .ready

    /// Rules' changes to the pre-login capability list.
    var rewriteCapabilities: @Sendable ([String]) -> [String] = { $0 }

    init(security: ProxyConfiguration.ListenerSecurity, greeting: String, maxBadCommands: Int,
         mechanisms: [String] = ProxyConfiguration.defaultAuthMechanisms) {
        self.security = security
        self.greetingText = greeting
        self.maxBadCommands = maxBadCommands
        self.mechanisms = mechanisms
        self.tlsActive = security == .implicit
    }

    /// A new connection's, as `configuration` sets it up (greeting text,
    /// limits, mechanisms, and the rules' changes to the capabilities).
    init(security: ProxyConfiguration.ListenerSecurity, configuration: ProxyConfiguration) {
        self.init(security: security, greeting: configuration.greeting, maxBadCommands: configuration.maxBadCommands,
                  mechanisms: configuration.authMechanisms)
        if !configuration.filters.isEmpty {
            let filters = configuration.filters
            rewriteCapabilities = { filters.preAuthCapabilities($0) }
        }
    }

    /// Whether the client framer should treat lines as SASL responses.
    var isAwaitingSASL: Bool {
        if case .awaitingSASL = state { return true }
        return false
    }

    /// Whether frames may be taken now (not while an upstream login runs).
    var acceptsFrames: Bool {
        switch state {
        case .ready, .awaitingSASL: return true
        case .startingTLS, .loggingIn, .loggedIn, .closed: return false
        }
    }

    /// Between the STARTTLS answer and the end of the TLS handshake.
    var isStartingTLS: Bool { state == .startingTLS }

    private var loginDisabled: Bool { security.requiresTLSForLogin && !tlsActive }

    /// Capabilities announced before login.
    var capabilities: [String] {
        var capabilities = ["IMAP4rev1", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+"]
        if security.offersStartTLS && !tlsActive { capabilities.append("STARTTLS") }
        if loginDisabled {
            capabilities.append("LOGINDISABLED")
        } else {
            capabilities += mechanisms.map { "AUTH=\($0)" }
        }
        return rewriteCapabilities(capabilities)
    }

    func greeting() -> String {
        "* OK [\(PreAuthStateMachine.capabilityList(capabilities))] \(greetingText)\r\n"
    }

    /// `CAPABILITY name name …` (the greeting's, CAPABILITY's and the login
    /// reply's), the names copied as bytes: `joined(separator:)` cost
    /// several times as much for a server's ~40 names.
    static func capabilityList(_ names: [String]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(names.reduce(10) { $0 + $1.utf8.count + 1 })
        bytes.append(contentsOf: "CAPABILITY".utf8)
        for var name in names {
            bytes.append(0x20)
            name.withUTF8 { bytes.append(contentsOf: $0) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The TLS handshake completed (STARTTLS or an implicit-TLS listener).
    /// What the client said of itself in plaintext is forgotten.
    mutating func tlsEstablished() {
        tlsActive = true
        if state == .startingTLS {
            state = .ready
            clientID = nil
        }
    }

    /// The client announced a synchronizing literal in `frame` (the command
    /// so far) and waits for `+`. `nil`: send it. Otherwise the command is
    /// refused now, before the client sends the literal (DESIGN principle 4;
    /// review S15: a `starttls-required` listener must not invite a
    /// plaintext password with `+`).
    mutating func literalAnnounced(in frame: Frame) -> Action? {
        guard state == .ready, frame.kind == .command, let tag = frame.tag, let name = frame.name else {
            return bad("* BAD Error in IMAP command: missing tag or command.\r\n")
        }
        switch name {
        case "LOGIN":
            if loginDisabled {
                return bad("\(tag) NO [PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS.\r\n")
            }
            return nil
        case "ID":
            return nil
        default:
            return bad("\(tag) BAD \(name) takes no literal before login.\r\n")
        }
    }

    /// A frame from the client.
    mutating func receive(_ frame: Frame) -> Action {
        switch state {
        case .awaitingSASL(let tag, let step):
            return receiveSASL(frame, tag: tag, step: step)
        case .ready:
            break
        case .startingTLS, .loggingIn, .loggedIn, .closed:
            return .none
        }
        guard frame.kind == .command, let tag = frame.tag, let name = frame.name else {
            return bad("* BAD Error in IMAP command: missing tag or command.\r\n")
        }
        let command = try? frame.command()
        switch name {
        case "CAPABILITY":
            return .send("* \(PreAuthStateMachine.capabilityList(capabilities))\r\n"
                + "\(tag) OK Pre-login capabilities listed, post-login capabilities have more.\r\n")
        case "NOOP":
            return .send("\(tag) OK NOOP completed.\r\n")
        case "LOGOUT":
            state = .closed
            return .sendAndClose("* BYE Logging out.\r\n\(tag) OK Logout completed.\r\n")
        case "ID":
            guard let command, let id = IDCommand(command) else { return bad("\(tag) BAD Invalid ID arguments.\r\n") }
            clientID = id.parameters
            return .send("* ID (\"name\" \"Sluice\")\r\n\(tag) OK ID completed.\r\n")
        case "STARTTLS":
            guard security.offersStartTLS, !tlsActive else {
                return bad("\(tag) BAD STARTTLS is not available here.\r\n")
            }
            state = .startingTLS
            return .startTLS("\(tag) OK Begin TLS negotiation now.\r\n")
        case "LOGIN":
            if loginDisabled {
                return bad("\(tag) NO [PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS.\r\n")
            }
            guard let command, let login = LoginCommand(command) else {
                return bad("\(tag) BAD Invalid LOGIN arguments.\r\n")
            }
            usedLoginCommand = true
            return startLogin(tag: tag, credentials: Credentials(user: login.user, password: login.password), mechanism: .login)
        case "AUTHENTICATE":
            if loginDisabled {
                return bad("\(tag) NO [PRIVACYREQUIRED] Authentication is disallowed without TLS.\r\n")
            }
            guard let command, let authenticate = AuthenticateCommand(command) else {
                return bad("\(tag) BAD Invalid AUTHENTICATE arguments.\r\n")
            }
            usedLoginCommand = false
            return authenticateCommand(tag: tag, authenticate)
        case "ENABLE":
            return bad("\(tag) BAD ENABLE is only allowed after login.\r\n")
        default:
            if let known = IMAPCommandCatalog.command(named: name), !known.states.contains(.notAuthenticated) {
                return bad("\(tag) BAD \(name) is only allowed after login.\r\n")
            }
            return bad("\(tag) BAD Unknown command.\r\n")
        }
    }

    /// The upstream accepted the login; `capabilities` are its post-login ones.
    mutating func loginSucceeded(capabilities: [String]) -> Action {
        guard case .loggingIn(let tag) = state else { return .none }
        state = .loggedIn
        let code = capabilities.isEmpty ? "" : "[\(PreAuthStateMachine.capabilityList(capabilities))] "
        return .send("\(tag) OK \(code)Logged in\r\n")
    }

    /// The upstream refused the login (its response code and text are kept),
    /// or could not be reached.
    mutating func loginFailed(response: String, challenge: String? = nil) -> Action {
        guard case .loggingIn(let tag) = state else { return .none }
        if let challenge {
            // The same SASL error challenge the server gave; the refusal follows the client's answer.
            state = .awaitingSASL(tag: tag, step: .failureAcknowledgement(response: response))
            return .send("+ \(challenge)\r\n")
        }
        state = .ready
        return bad("\(tag) \(response)\r\n")
    }

    // MARK: - AUTHENTICATE

    private mutating func authenticateCommand(tag: String, _ command: AuthenticateCommand) -> Action {
        guard mechanisms.contains(command.mechanism) else {
            return bad("\(tag) NO [CANNOT] Unsupported authentication mechanism.\r\n")
        }
        switch command.mechanism {
        case "PLAIN":
            guard let initial = command.initialResponse else {
                state = .awaitingSASL(tag: tag, step: .plain)
                return .send("+ \r\n")
            }
            return plainResponse(initial, tag: tag)
        case "LOGIN":
            guard let initial = command.initialResponse else {
                state = .awaitingSASL(tag: tag, step: .loginUser)
                return .send("+ VXNlcm5hbWU6\r\n")  // "Username:"
            }
            guard let user = decodeSASL(initial) else { return bad("\(tag) BAD Invalid BASE64 in initial response.\r\n") }
            state = .awaitingSASL(tag: tag, step: .loginPassword(user: user))
            return .send("+ UGFzc3dvcmQ6\r\n")  // "Password:"
        case "XOAUTH2", "OAUTHBEARER":
            let mechanism: BearerMechanism = command.mechanism == "XOAUTH2" ? .xoauth2 : .oauthbearer
            guard let initial = command.initialResponse else {
                state = .awaitingSASL(tag: tag, step: .bearer(mechanism))
                return .send("+ \r\n")
            }
            return bearerResponse(initial, mechanism: mechanism, tag: tag)
        default:
            return bad("\(tag) NO [CANNOT] Unsupported authentication mechanism.\r\n")
        }
    }

    private mutating func receiveSASL(_ frame: Frame, tag: String, step: SASLStep) -> Action {
        state = .ready
        guard frame.kind == .saslResponse, let line = frame.segments.first.map({ Array($0.readableBytesView) }) else {
            return bad("\(tag) BAD Authentication exchange expected a response line.\r\n")
        }
        var response = line
        while let last = response.last, last == 0x0A || last == 0x0D { response.removeLast() }
        if case .failureAcknowledgement(let refusal) = step {
            // Whatever the client answers (RFC 7628 asks for %x01), the login was refused.
            return bad("\(tag) \(refusal)\r\n")
        }
        if response == [UInt8(ascii: "*")] {
            return bad("\(tag) BAD Authentication aborted by client.\r\n")
        }
        switch step {
        case .plain:
            return plainResponse(response, tag: tag)
        case .loginUser:
            guard let user = decodeSASL(response) else { return bad("\(tag) BAD Invalid BASE64.\r\n") }
            state = .awaitingSASL(tag: tag, step: .loginPassword(user: user))
            return .send("+ UGFzc3dvcmQ6\r\n")
        case .loginPassword(let user):
            guard let password = decodeSASL(response) else { return bad("\(tag) BAD Invalid BASE64.\r\n") }
            return startLogin(tag: tag, credentials: Credentials(user: user, password: password), mechanism: .login)
        case .bearer(let mechanism):
            return bearerResponse(response, mechanism: mechanism, tag: tag)
        case .failureAcknowledgement:
            return .none  // answered above
        }
    }

    /// XOAUTH2 or OAUTHBEARER: the user comes from the message (`user=`, or
    /// the GS2 header's `a=`); the token is kept as the password, never shown.
    private mutating func bearerResponse(_ encoded: [UInt8], mechanism: BearerMechanism, tag: String) -> Action {
        guard let decoded = decodeSASL(encoded), let parsed = BearerMechanism.parse(mechanism, decoded) else {
            return bad("\(tag) BAD Invalid \(mechanism.rawValue) response (it needs the user and auth=Bearer TOKEN).\r\n")
        }
        return startLogin(tag: tag, credentials: Credentials(user: parsed.user, password: parsed.token, bearer: mechanism),
                          mechanism: mechanism.loginMechanism)
    }

    /// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.
    private mutating func plainResponse(_ encoded: [UInt8], tag: String) -> Action {
        guard let decoded = decodeSASL(encoded) else { return bad("\(tag) BAD Invalid BASE64.\r\n") }
        let parts = decoded.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else { return bad("\(tag) BAD Invalid PLAIN response.\r\n") }
        let authorization = Array(parts[0])
        let user = Array(parts[1])
        guard authorization.isEmpty || authorization == user else {
            return bad("\(tag) NO [AUTHORIZATIONFAILED] Logging in as another user is not supported.\r\n")
        }
        return startLogin(tag: tag, credentials: Credentials(user: user, password: Array(parts[2])), mechanism: .plain)
    }

    /// `=` is an empty response (RFC 4959 §3).
    private func decodeSASL(_ encoded: [UInt8]) -> [UInt8]? {
        encoded == [UInt8(ascii: "=")] ? [] : Base64.decode(encoded)
    }

    private mutating func startLogin(tag: String, credentials: Credentials, mechanism: LoginMechanism) -> Action {
        loginAttempts += 1
        state = .loggingIn(tag: tag)
        loginMechanism = mechanism
        return .login(tag: tag, credentials: credentials)
    }

    // MARK: - Bad commands

    /// Sends a refusal and counts it; too many end the connection.
    private mutating func bad(_ lines: String) -> Action {
        badCommands += 1
        if badCommands >= maxBadCommands {
            state = .closed
            return .sendAndClose(lines + "* BYE Too many invalid commands.\r\n")
        }
        return .send(lines)
    }

}
