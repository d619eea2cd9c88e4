import Logging
import NIOCore

/// Why a session ended: one case per way, so the end-of-session line and
/// metrics get a bounded `name` (plain words: normal endings read as
/// normal), and the free text (an error's description, a framing hint)
/// stays in `detail`.
enum EndReason: Equatable, Sendable {
    case clientClosed
    /// The client logged out (LOGOUT, then the server's BYE).
    case logout
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
    /// A rule could not decide on a server response (a script that failed).
    case ruleFailed(String)
    /// The server sent `+` for nothing the proxy relayed.
    case strayContinuation
    case shutdown
    case shutdownGraceOver

    /// The bounded name: the log line's `reason`.
    var name: String {
        switch self {
        case .clientClosed: return "client closed"
        case .logout: return "logout"
        case .clientError: return "client error"
        case .clientFramingError: return "client framing error"
        case .clientProtocolError: return "client protocol error"
        case .clientTLSError: return "client TLS error"
        case .closedBeforeLogin: return "closed before login"
        case .preAuthTimeout: return "pre-auth timeout"
        case .loginTimeout: return "login timeout"
        case .idleTimeout: return "idle timeout"
        case .rulesNeedUser: return "rules need the user"
        case .upstreamClosed: return "upstream closed"
        case .upstreamSaidBye: return "upstream said BYE"
        case .upstreamUnavailable: return "upstream unavailable"
        case .upstreamError: return "upstream error"
        case .upstreamFramingError: return "upstream framing error"
        case .upstreamResponseTooLarge: return "upstream response too large"
        case .ruleFailed: return "rule failed"
        case .strayContinuation: return "stray continuation"
        case .shutdown: return "shutdown"
        case .shutdownGraceOver: return "shutdown grace over"
        }
    }

    /// The name in snake case (`reason.kind`, for log filters and labels).
    var kind: String { String(name.lowercased().map { $0 == " " || $0 == "-" ? "_" : $0 }) }

    /// What only this ending knows (an error, a hint), or `nil`.
    var detail: String? {
        switch self {
        case .clientError(let detail), .clientTLSError(let detail), .upstreamUnavailable(let detail),
             .upstreamError(let detail), .ruleFailed(let detail):
            return detail
        case .clientFramingError(let hint), .clientProtocolError(let hint), .upstreamFramingError(let hint):
            return hint
        case .strayContinuation: return "the server asked for data the proxy did not see"
        case .rulesNeedUser: return "transparent login with rules: the user name was not shown"
        default: return nil
        }
    }

    /// Name and detail in one string (for reasons passed on as text).
    var text: String { detail.map { "\(name): \($0)" } ?? name }
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
        var metadata: Logger.Metadata = [
            "imap.user": "\(user ?? "-")",
            "bytes.from_client": .stringConvertible(bytesFromClient),
            "bytes.from_upstream": .stringConvertible(bytesFromUpstream),
            "duration.seconds": .stringConvertible((duration * 1000).rounded() / 1000),
            "reason": "\(endReason.name)",
            "reason.kind": "\(endReason.kind)",
        ]
        if let detail = endReason.detail { metadata["reason.detail"] = "\(detail)" }
        return metadata
    }
}
