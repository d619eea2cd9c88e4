import IMAPWire
import SluiceFilters

/// Refuses APPEND of messages over `maxBytes` to one mailbox.
///
/// The example of docs/filters.md: compiled with the package and tested
/// against Dovecot (Tests/SluiceProxyTests/CustomFilter+Tests.swift).
public struct MaxAppendSizeFilter: Filter {
    public let mailbox: String
    public let maxBytes: UInt64

    public init(mailbox: String, maxBytes: UInt64) {
        self.mailbox = mailbox
        self.maxBytes = maxBytes
    }

    // Only APPEND reaches this filter; nothing else is parsed for it.
    public var commands: CommandSelection { .named(["APPEND"]) }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        // APPEND mailbox [flags] [date] literal: the message is the last
        // argument. Its size is in the literal's header; the bytes stream
        // past the filter and are never copied for it.
        guard let target = MailboxArguments.first(of: command.parsed)?.displayName(utf8: context.utf8Enabled),
              target == mailbox,
              case .literal(_, let size, _)? = command.arguments.last,
              size > maxBytes
        else { return next(command, context) }
        // Answered before a synchronizing literal is sent; a LITERAL+ one is
        // read and dropped by the proxy.
        return .reply(.no("TOOBIG", "Messages over \(maxBytes) bytes cannot be stored in \(mailbox)."))
    }
}
