import IMAPWire

/// Transparent mode: who logs in, read from the relayed `LOGIN` or
/// `AUTHENTICATE PLAIN` with an initial response, and whether the client's
/// next bytes must wait for the login's answer (with rules, they start
/// with it). No I/O: the session feeds it command lines and the tagged
/// answers and acts on what it returns.
struct TransparentLoginObserver {
    /// A relayed login waiting for its tagged answer.
    struct PendingLogin: Equatable {
        var tag: String
        var user: String?
        var mechanism: LoginMechanism
    }

    /// Rules are configured: a login whose user cannot be read is refused,
    /// and a login must be the only command in flight (its answer is matched
    /// by tag: red team 3, `a NOOP` then `a LOGIN nobody x`).
    let rulesConfigured: Bool
    /// Relayed logins, oldest first (without rules a client may pipeline several).
    private(set) var pending: [PendingLogin] = []
    /// With rules: client bytes wait until the login is answered.
    private(set) var holdsClient = false

    init(rulesConfigured: Bool) { self.rulesConfigured = rulesConfigured }

    /// How the oldest relayed login was given (`login` when none is pending).
    var mechanism: LoginMechanism { pending.first?.mechanism ?? .login }

    /// A client command line about to be relayed before the user is known;
    /// `false` when it must be refused instead (with rules: a login whose
    /// user cannot be read, or one sent while other commands are in flight).
    mutating func commandRelayed(_ segment: LineSegment, commandsInFlight: Int) -> Bool {
        guard segment.secondWordIs("LOGIN") || segment.secondWordIs("AUTHENTICATE"), let tag = segment.tag else { return true }
        if rulesConfigured, commandsInFlight > 1 { return false }
        let login = read(segment, tag: tag)
        if rulesConfigured && login.user == nil { return false }  // never relayed: no answer will come for its tag
        pending.append(login)
        if rulesConfigured { holdsClient = true }
        return true
    }

    private func read(_ segment: LineSegment, tag: String) -> PendingLogin {
        var login = PendingLogin(tag: tag, user: nil, mechanism: segment.secondWordIs("LOGIN") ? .login : .other)
        guard segment.endsFrame, let command = try? Frame(kind: .command, line: segment.bytes).command() else { return login }
        if let parsed = LoginCommand(command) {
            login.user = String(decoding: parsed.user, as: UTF8.self)
        } else if let authenticate = AuthenticateCommand(command) {
            login.mechanism = LoginMechanism(rawValue: authenticate.mechanism.lowercased()) ?? .other
            if login.mechanism == .plain, let initial = authenticate.initialResponse, let decoded = Base64.decode(initial) {
                let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
                if parts.count == 3 {
                    let authorization = String(decoding: parts[0], as: UTF8.self)
                    login.user = authorization.isEmpty ? String(decoding: parts[1], as: UTF8.self) : authorization
                }
            }
        }
        return login
    }

    /// Whether this tagged line answers a relayed login.
    func answers(_ segment: LineSegment) -> Bool {
        guard !pending.isEmpty, let tag = segment.tag else { return false }
        return pending.contains { $0.tag == tag }
    }

    enum Answer: Equatable {
        /// Refused upstream: the client stays unauthenticated.
        case refused(LoginMechanism)
        /// Logged in as this user (`nil`: a mechanism whose user was not read, without rules).
        case loggedIn(user: String?, LoginMechanism)
        /// Logged in, but the rules need a user the login did not show: end the session.
        case rulesNeedUser
    }

    /// The upstream answered the login tagged `tag`; `releasedClient`: bytes held behind it may go on.
    mutating func answered(tag: String, ok: Bool) -> (answer: Answer, releasedClient: Bool) {
        let released = holdsClient
        holdsClient = false
        guard let index = pending.firstIndex(where: { $0.tag == tag }) else { return (.refused(.login), released) }
        let login = pending.remove(at: index)
        guard ok else { return (.refused(login.mechanism), released) }
        pending.removeAll()  // logged in: later answers are no login's
        if rulesConfigured && login.user == nil { return (.rulesNeedUser, released) }
        return (.loggedIn(user: login.user, login.mechanism), released)
    }
}
