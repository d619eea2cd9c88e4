/// `STATUS mailbox (items)` (RFC 3501 §6.3.10).
///
/// ```
/// status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
/// ```
public struct StatusCommand: Hashable, Sendable {
    public var mailbox: MailboxName
    /// Requested items, upper-cased (`MESSAGES`, `UIDNEXT`, …).
    public var items: [String]

    public init?(_ command: ParsedCommand) {
        guard command.name == "STATUS", command.arguments.count == 2,
              let name = command.arguments[0].stringBytes,
              let items = command.arguments[1].list?.keywords, !items.isEmpty
        else { return nil }
        mailbox = MailboxName(bytes: name)
        self.items = items
    }
}
