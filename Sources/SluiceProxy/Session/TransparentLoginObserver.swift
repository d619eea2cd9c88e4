import IMAPWire

/// Transparent mode: who logs in, read from the relayed `LOGIN` or
/// `AUTHENTICATE PLAIN` with an initial response, and whether the client's
/// next bytes must wait for the login's answer (with rules, they start
/// with it). No I/O: the session feeds it command lines and the tagged
/// answer and acts on what it returns.
struct TransparentLoginObserver {
    /// Rules are configured: a login whose user cannot be read is refused,
    /// and a login must be the only command in flight (its answer is matched
    /// by tag: red team 3, `a NOOP` then `a LOGIN nobody x`).
    let rulesConfigured: Bool
    /// The tag of the relayed login waiting for its answer.
    private(set) var loginTag: String?
    /// The user the relayed login names.
    private(set) var pendingUser: String?
    /// With rules: client bytes wait until the login is answered.
    private(set) var holdsClient = false
    /// How the relayed login was given.
    private(set) var mechanism: LoginMechanism = .login

    init(rulesConfigured: Bool) { self.rulesConfigured = rulesConfigured }

    /// A client command line about to be relayed before the user is known;
    /// `false` when it must be refused instead (with rules: a login whose
    /// user cannot be read, or one sent while other commands are in flight).
    mutating func commandRelayed(_ segment: LineSegment, commandsInFlight: Int) -> Bool {
        guard segment.secondWordIs("LOGIN") || segment.secondWordIs("AUTHENTICATE") else { return true }
        if rulesConfigured, commandsInFlight > 1 { return false }
        let relayed = readLogin(segment)
        if !relayed {
            // Refused by the proxy: never relayed, so no answer will come for its tag.
            loginTag = nil
            pendingUser = nil
            holdsClient = false
        }
        return relayed
    }

    private mutating func readLogin(_ segment: LineSegment) -> Bool {
        loginTag = segment.tag
        mechanism = segment.secondWordIs("LOGIN") ? .login : .plain
        guard segment.endsFrame else { return !rulesConfigured }
        defer { if rulesConfigured, pendingUser != nil { holdsClient = true } }
        guard let command = try? Frame(kind: .command, line: segment.bytes).command() else { return !rulesConfigured }
        if let login = LoginCommand(command) {
            pendingUser = String(decoding: login.user, as: UTF8.self)
        } else if let authenticate = AuthenticateCommand(command) {
            mechanism = LoginMechanism(rawValue: authenticate.mechanism.lowercased()) ?? .plain
            if mechanism == .plain, let initial = authenticate.initialResponse, let decoded = Base64.decode(initial) {
                let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
                if parts.count == 3 {
                    let authorization = String(decoding: parts[0], as: UTF8.self)
                    pendingUser = authorization.isEmpty ? String(decoding: parts[1], as: UTF8.self) : authorization
                }
            }
        }
        return !rulesConfigured || pendingUser != nil
    }

    /// Whether this tagged line answers the relayed login.
    func answers(_ segment: LineSegment) -> Bool {
        loginTag != nil && segment.tag == loginTag
    }

    enum Answer: Equatable {
        /// Refused upstream: the client stays unauthenticated.
        case refused
        /// Logged in as this user (`nil`: a mechanism whose user was not read, without rules).
        case loggedIn(user: String?)
        /// Logged in, but the rules need a user the login did not show: end the session.
        case rulesNeedUser
    }

    /// The upstream answered the login; `releasedClient`: bytes held behind it may go on.
    mutating func answered(ok: Bool) -> (answer: Answer, releasedClient: Bool) {
        let released = holdsClient
        holdsClient = false
        loginTag = nil
        let user = pendingUser
        pendingUser = nil
        guard ok else { return (.refused, released) }
        if rulesConfigured && user == nil { return (.rulesNeedUser, released) }
        return (.loggedIn(user: user), released)
    }
}
