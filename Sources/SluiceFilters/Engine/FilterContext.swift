import IMAPWire
import Logging
import NIOCore

/// What a filter knows about its session. One per session, used only on the
/// session's event loop (hence a class, not `Sendable`).
///
/// The engine keeps it current: the in-flight queue (every command sent
/// upstream, in order, until its tagged response), the selected mailbox,
/// and the extensions the client enabled. Filters keep their own per-session
/// state in `storage`.
public final class FilterContext {
    /// What is selected. See `state` and `confirmedState` for which moment each describes.
    public enum State: Equatable, Sendable {
        case authenticated
        /// `mailbox` as the client named it.
        case selected(mailbox: MailboxName, readOnly: Bool)
    }

    /// The login name the client used.
    public let user: String
    /// `HOST:PORT` of the client.
    public let clientAddress: String?
    /// The state the command being decided will run in on the server: after
    /// every SELECT, EXAMINE, CLOSE and UNSELECT sent before it, as if they
    /// succeed. A pipelined `SELECT Secret` + `FETCH` is judged in `Secret`
    /// (review S5). If such a SELECT fails, the server has no mailbox
    /// selected (RFC 9051 §6.3.2), where every command that acts on a
    /// selected mailbox fails anyway: judging it in the expected mailbox can
    /// refuse a command the server would refuse too, never pass one it runs.
    public internal(set) var state: State = .authenticated
    /// The state the server's tagged answers have confirmed so far (equal to
    /// `state` when no state-changing command is in flight).
    public internal(set) var confirmedState: State = .authenticated
    /// State-changing commands sent and not yet answered.
    var stateChangesInFlight = 0
    /// UTF8=ACCEPT is enabled: mailbox names are UTF-8 on the wire, not modified UTF-7.
    public internal(set) var utf8Enabled = false
    /// Commands sent upstream and not yet answered, oldest first. Under
    /// pipelining several are in flight; an untagged response may belong to
    /// any of them.
    /// A ring buffer: appending and answering the oldest are O(1) (review S9).
    public internal(set) var inFlight = CircularBuffer<InFlightCommand>(initialCapacity: 8)
    /// The upstream's hierarchy delimiter, once a LIST response showed it.
    public internal(set) var hierarchyDelimiter: UInt8?
    /// The upstream's capabilities after login (before any filter changed them).
    public internal(set) var upstreamCapabilities: [String]
    public var logger: Logger
    /// Per-session state of filters, keyed by a type of the filter's choosing.
    public var storage: [ObjectIdentifier: Any] = [:]

    public init(user: String, clientAddress: String?, upstreamCapabilities: [String] = [], logger: Logger) {
        self.user = user
        self.clientAddress = clientAddress
        self.upstreamCapabilities = upstreamCapabilities
        self.logger = logger
    }

    /// The in-flight command with this tag.
    public func command(tagged tag: String) -> InFlightCommand? {
        inFlight.first { $0.tag == tag }
    }

    /// In-flight commands named `name` (or its UID form): the commands an
    /// untagged response of that kind can belong to.
    public func inFlight(named names: Set<String>) -> [InFlightCommand] {
        inFlight.filter { names.contains($0.baseName) }
    }
}

/// A command on its way to (or at) the upstream.
public struct InFlightCommand: Sendable {
    public var tag: String
    /// Upper-case, with `UID ` for UID forms.
    public var name: String
    /// The mailbox the command names as it went to the server (after any
    /// renaming), when a filter or the engine parsed it.
    public var mailbox: MailboxName?
    /// The same mailbox as the client named it (before any renaming).
    public var clientMailbox: MailboxName?
    public var started: NIODeadline

    public var baseName: String { name.hasPrefix("UID ") ? String(name.dropFirst(4)) : name }

    public init(tag: String, name: String, mailbox: MailboxName? = nil, started: NIODeadline = .now()) {
        self.tag = tag
        self.name = name
        self.mailbox = mailbox
        self.started = started
    }
}
