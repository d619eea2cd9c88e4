/// `IDLE` (RFC 2177); the client ends it with a `DONE` line, framed on its own.
///
/// ```
/// idle = "IDLE" CRLF "DONE"
/// ```
public struct IdleCommand: Hashable, Sendable {
    public init?(_ command: ParsedCommand) {
        guard command.name == "IDLE", command.arguments.isEmpty else { return nil }
    }
}
