import Logging
import NIOCore

/// Why a session ended: one case per way, so the end-of-session line and
/// (later) metrics get a bounded `kind`, and the free text (an error's
/// description, a framing hint) stays in `detail`.
enum EndReason: Equatable, Sendable {
    case clientClosed
    case clientError(String)
    case clientFramingError(hint: String)
    case clientProtocolError(hint: String)
    case clientTLSError(String)
    /// LOGOUT, or too many invalid commands, before login.
    case closedBeforeLogin
    case preAuthTimeout
    case loginTimeout
    case idleTimeout
    /// Transparent mode with rules: the relayed login did not show the user.
    case rulesNeedUser
    case upstreamClosed
    case upstreamSaidBye
    case upstreamUnavailable(String)
    case upstreamError(String)
    case upstreamFramingError(hint: String)
    case upstreamResponseTooLarge
    /// The server sent `+` for nothing the proxy relayed.
    case strayContinuation
    case shutdown
    case shutdownGraceOver

    /// A fixed label (metrics, log filters): never peer text.
    var kind: String {
        switch self {
        case .clientClosed: return "client_closed"
        case .clientError: return "client_error"
        case .clientFramingError: return "client_framing_error"
        case .clientProtocolError: return "client_protocol_error"
        case .clientTLSError: return "client_tls_error"
        case .closedBeforeLogin: return "closed_before_login"
        case .preAuthTimeout: return "pre_auth_timeout"
        case .loginTimeout: return "login_timeout"
        case .idleTimeout: return "idle_timeout"
        case .rulesNeedUser: return "rules_need_user"
        case .upstreamClosed: return "upstream_closed"
        case .upstreamSaidBye: return "upstream_bye"
        case .upstreamUnavailable: return "upstream_unavailable"
        case .upstreamError: return "upstream_error"
        case .upstreamFramingError: return "upstream_framing_error"
        case .upstreamResponseTooLarge: return "upstream_response_too_large"
        case .strayContinuation: return "stray_continuation"
        case .shutdown: return "shutdown"
        case .shutdownGraceOver: return "shutdown_grace_over"
        }
    }

    /// The text of the log line's `reason`.
    var text: String {
        switch self {
        case .clientClosed: return "client closed the connection"
        case .clientError(let detail): return "client error: \(detail)"
        case .clientFramingError(let hint): return "client framing error: \(hint)"
        case .clientProtocolError(let hint): return "client protocol error: \(hint)"
        case .clientTLSError(let detail): return "client TLS: \(detail)"
        case .closedBeforeLogin: return "closed in pre-auth"
        case .preAuthTimeout: return "pre-auth timeout"
        case .loginTimeout: return "login timeout"
        case .idleTimeout: return "idle timeout"
        case .rulesNeedUser: return "transparent login with rules: user unknown"
        case .upstreamClosed: return "upstream closed the connection"
        case .upstreamSaidBye: return "upstream said BYE"
        case .upstreamUnavailable(let detail): return detail
        case .upstreamError(let detail): return "upstream error: \(detail)"
        case .upstreamFramingError(let hint): return "upstream framing error: \(hint)"
        case .upstreamResponseTooLarge: return "upstream response too large for the rules"
        case .strayContinuation: return "server asked for data the proxy did not see"
        case .shutdown: return "server shutting down"
        case .shutdownGraceOver: return "server shut down (grace period over)"
        }
    }
}

/// What a session's end-of-session line reports: who, how much, how long,
/// and why it ended. The place per-session figures (and metrics) hang from.
struct SessionRecord {
    let started = NIODeadline.now()
    var user: String?
    var bytesFromClient = 0
    var bytesFromUpstream = 0
    var endReason: EndReason = .clientClosed

    /// The metadata of the "session ended" line.
    func endMetadata(now: NIODeadline = .now()) -> Logger.Metadata {
        let duration = Double((now - started).nanoseconds) / 1e9
        return [
            "imap.user": "\(user ?? "-")",
            "bytes.from_client": "\(bytesFromClient)",
            "bytes.from_upstream": "\(bytesFromUpstream)",
            "duration.seconds": "\((duration * 1000).rounded() / 1000)",
            "reason": "\(endReason.text)",
            "reason.kind": "\(endReason.kind)",
        ]
    }
}
