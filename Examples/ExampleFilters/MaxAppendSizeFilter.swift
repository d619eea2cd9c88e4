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
        guard let target = MailboxArguments.first(of: command.parsed)?.displayName(utf8: context.utf8Enabled),
              target == mailbox
        else { return next(command, context) }
        // Every message of a MULTIAPPEND, and every TEXT part of a CATENATE,
        // is a literal; sizes are in their headers, the bytes stream past
        // the filter and are never copied for it. The filter sees the
        // command again for each part after a streamed literal
        // (`command.isContinuation`), so a large second message is caught
        // too (the proxy then cancels the whole command on the server).
        guard command.arguments.contains(where: { literalOver(maxBytes, in: $0) }) else { return next(command, context) }
        return .reply(.no("TOOBIG", "Messages over \(maxBytes) bytes cannot be stored in \(mailbox)."))
    }

    private func literalOver(_ limit: UInt64, in token: IMAPToken) -> Bool {
        switch token {
        case .literal(_, let size, _): return size > limit
        case .list(let elements): return elements.contains { literalOver(limit, in: $0) }
        default: return false
        }
    }
}
