/// Where a session is. A phase carries the data only it has, so that, for
/// example, an upstream login state machine cannot outlive the login.
///
/// The relay's own state (`RelayStateMachine`, the filter engine) stays in
/// stored properties of the session instead of a `.relay` payload: it is
/// changed for every frame, and state inside an enum payload is taken out,
/// changed and put back, which copies its buffers unless done with care on
/// the hottest path (docs/design-notes.md, "Session phases").
enum SessionPhase {
    /// Transparent mode: connecting to the upstream before anything is said.
    case connecting
    /// Before login: the proxy answers the client itself (`PreAuthStateMachine`).
    case preAuth
    /// The client's login is being routed (`nil`), then carried out upstream.
    case loggingIn(UpstreamLoginAttempt?)
    /// The login failed; its answer waits out the failure delay.
    case loginFailed
    /// The authenticated relay (or, in transparent mode, the whole session).
    case relay
    /// Ended; nothing more is read or written.
    case closed

    /// The phase without its data.
    enum Kind: Hashable {
        case connecting, preAuth, loggingIn, loginFailed, relay, closed
    }

    var kind: Kind {
        switch self {
        case .connecting: return .connecting
        case .preAuth: return .preAuth
        case .loggingIn: return .loggingIn
        case .loginFailed: return .loginFailed
        case .relay: return .relay
        case .closed: return .closed
        }
    }
}

/// A login being carried out upstream: where, for which rule groups, and
/// the state machine that speaks to the server.
///
/// A class, so that the phase holds one reference: the state machine
/// changes with every frame of the login, and a value inside the enum
/// payload was copied out (each field retained) and boxed again each time
/// (docs/performance.md, issue 14). A session without a login under way
/// carries no attempt at all (~240 bytes, issue 14's idle memory).
final class UpstreamLoginAttempt {
    var machine: UpstreamLoginStateMachine
    let upstream: UpstreamEndpoint
    /// The router's groups for this user (rules can be scoped to them).
    let groups: [String]

    init(machine: UpstreamLoginStateMachine, upstream: UpstreamEndpoint, groups: [String]) {
        self.machine = machine
        self.upstream = upstream
        self.groups = groups
    }
}
