import IMAPWire
import NIOCore

/// A filter: middleware on the client's commands and the server's responses
/// (shaped like Hummingbird's middleware). Each hook gets the value, the
/// session's context and `next`; calling `next` passes the (possibly
/// rewritten) value on, returning without calling it short-circuits.
///
/// Filters only see what they select: a command or response that no filter
/// selects is never parsed and goes through as its original bytes, and
/// literal bytes a filter did not ask for (message bodies) never reach it.
/// Hooks run on the session's event loop and must not block.
public protocol Filter: Sendable {
    /// Commands this filter looks at.
    var commands: CommandSelection { get }
    /// Responses this filter looks at.
    var responses: ResponseSelection { get }

    func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome
    func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome

    /// Changes the capability list the client sees: in the greeting and
    /// CAPABILITY before login (`authenticated == false`, no user known),
    /// in the login reply, and in every CAPABILITY response or code after.
    /// Before login the result must depend on the configuration only: the
    /// greeting is made once per configuration (issue 14).
    func rewrite(capabilities: inout [String], authenticated: Bool)
}

public typealias CommandNext = (ClientCommand, FilterContext) -> CommandOutcome
public typealias ResponseNext = (ServerResponse, FilterContext) -> ResponseOutcome

extension Filter {
    public var commands: CommandSelection { .none }
    public var responses: ResponseSelection { .none }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        next(command, context)
    }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        next(response, context)
    }

    public func rewrite(capabilities: inout [String], authenticated: Bool) {}
}

/// Which commands a filter looks at, by name. A base name (`FETCH`)
/// selects its UID form (`UID FETCH`) too.
public struct CommandSelection: Sendable {
    public var names: Set<String>
    public var all: Bool

    public static let none = CommandSelection(names: [], all: false)
    public static let all = CommandSelection(names: [], all: true)
    public static func named(_ names: Set<String>) -> CommandSelection {
        CommandSelection(names: Set(names.map { $0.uppercased() }), all: false)
    }

    public func contains(_ name: String) -> Bool {
        if all || names.contains(name) { return true }
        return name.hasPrefix("UID ") && names.contains(String(name.dropFirst(4)))
    }
}

/// Which responses a filter looks at: untagged responses by name (`LIST`,
/// `CAPABILITY`, `OK` …; `FETCH` for `* 5 FETCH`), and tagged responses to
/// commands by the command's name.
public struct ResponseSelection: Sendable {
    public var untagged: Set<String>
    public var taggedFor: CommandSelection

    public static let none = ResponseSelection(untagged: [], taggedFor: .none)

    public init(untagged: Set<String> = [], taggedFor: CommandSelection = .none) {
        self.untagged = Set(untagged.map { $0.uppercased() })
        self.taggedFor = taggedFor
    }
}

/// A client command as a filter sees it.
public struct ClientCommand: Sendable {
    /// The command as parsed; `rewrite` replaces it.
    public private(set) var parsed: ParsedCommand
    /// The frame as the client sent it (up to a streamed literal, see
    /// `streamedLiteral`).
    public let original: Frame
    /// A literal after the parsed part that streams from the client to the
    /// upstream without passing through filters (APPEND's message). It is
    /// the last argument in `parsed`, as `.literal(bytes: nil)`.
    public let streamedLiteral: LiteralHeader?
    /// The command continues after a literal that streamed past the filters
    /// (MULTIAPPEND's next message, CATENATE's next part): the filters see
    /// it once per part, with everything so far (literal bytes that
    /// streamed are absent: `.literal(bytes: nil)`). The earlier parts
    /// already went upstream, so only a refusal takes effect: the proxy then
    /// makes the server fail the whole command and answers with the reply.
    public let isContinuation: Bool
    public private(set) var isRewritten = false

    public init(parsed: ParsedCommand, original: Frame, streamedLiteral: LiteralHeader?, isContinuation: Bool = false) {
        self.parsed = parsed
        self.original = original
        self.streamedLiteral = streamedLiteral
        self.isContinuation = isContinuation
    }

    public var tag: String { parsed.tag }
    public var name: String { parsed.name }
    public var baseName: String { parsed.baseName }
    public var arguments: [IMAPToken] { parsed.arguments }

    /// Replaces the command (any part, or another command altogether) with
    /// the same tag. A streamed literal must stay the last argument.
    public mutating func rewrite(_ command: ParsedCommand) {
        parsed = command
        parsed.tag = original.tag ?? command.tag
        isRewritten = true
    }

    /// Replaces the arguments.
    public mutating func rewrite(arguments: [IMAPToken]) {
        var command = parsed
        command.arguments = arguments
        rewrite(command)
    }
}

/// A server response as a filter sees it.
public struct ServerResponse: Sendable {
    public private(set) var parsed: ParsedResponse
    public let original: Frame
    /// For a tagged response: the command it completes.
    public let command: InFlightCommand?
    public private(set) var isRewritten = false

    public init(parsed: ParsedResponse, original: Frame, command: InFlightCommand?) {
        self.parsed = parsed
        self.original = original
        self.command = command
    }

    public mutating func rewrite(_ response: ParsedResponse) {
        parsed = response
        isRewritten = true
    }
}

/// A tagged reply the proxy gives itself: `NO [NOPERM] Not allowed here`.
public struct TaggedReply: Hashable, Sendable, CustomStringConvertible {
    public var status: ResponseStatus
    public var code: String?
    public var text: String

    public init(_ status: ResponseStatus, code: String? = nil, _ text: String) {
        self.status = status
        self.code = code
        self.text = text
    }

    public static func no(_ code: String?, _ text: String) -> TaggedReply { TaggedReply(.no, code: code, text) }
    public static func bad(_ text: String) -> TaggedReply { TaggedReply(.bad, code: nil, text) }
    public static func ok(_ text: String) -> TaggedReply { TaggedReply(.ok, code: nil, text) }

    /// Parses `OK|NO|BAD [CODE args] text` (as written in a configuration).
    public init?(parsing text: String) {
        let trimmed = text.drop { $0 == " " }
        guard let space = trimmed.firstIndex(of: " ") else { return nil }
        guard let status = ResponseStatus(rawValue: trimmed[..<space].uppercased()), [.ok, .no, .bad].contains(status) else {
            return nil
        }
        var rest = trimmed[trimmed.index(after: space)...]
        var code: String?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            code = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...].drop { $0 == " " }
        }
        guard !rest.contains(where: { $0 == "\r" || $0 == "\n" }) else { return nil }
        self.init(status, code: code, rest.isEmpty ? "Done." : String(rest))
    }

    public var description: String {
        "\(status.rawValue) " + (code.map { "[\($0)] " } ?? "") + text
    }
}

public enum CommandOutcome: Sendable {
    /// Send the command upstream (its original bytes unless rewritten).
    case forward(ClientCommand)
    /// Answer the client without asking the upstream.
    case reply(TaggedReply)
    /// Answer with untagged lines (without `* ` and CRLF) and a tagged reply.
    case answer(untagged: [String], reply: TaggedReply)
}

public enum ResponseOutcome: Sendable {
    /// Pass the response on (its original bytes unless rewritten).
    case forward(ServerResponse)
    /// Drop an untagged response. (A tagged response cannot be dropped:
    /// the engine forwards it unchanged.)
    case drop
    /// Several responses in order, e.g. untagged ones a filter held back
    /// and now releases before a tagged reply — each the outcome of `next`.
    indirect case sequence([ResponseOutcome])
    /// The filter cannot decide on this response (a script that failed):
    /// rather than pass what it may have had to hide, the session ends with
    /// `* BYE [UNAVAILABLE] reason` (DESIGN principle 5).
    case endSession(reason: String)
}
