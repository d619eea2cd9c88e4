/// Commands that name one mailbox and nothing else that matters for routing:
/// `CREATE`, `DELETE`, `SUBSCRIBE`, `UNSUBSCRIBE` (RFC 3501 §6.3.3–7).
///
/// ```
/// create = "CREATE" SP mailbox [create-params]     ; RFC 4466 params, e.g. USE (\Sent)
/// delete = "DELETE" SP mailbox
/// subscribe = "SUBSCRIBE" SP mailbox
/// unsubscribe = "UNSUBSCRIBE" SP mailbox
/// ```
public struct MailboxCommand: Hashable, Sendable {
    public var name: String
    public var mailbox: MailboxName
    /// CREATE parameters (RFC 4466, e.g. `USE (\Sent)` of RFC 6154), as tokens.
    public var parameters: [IMAPToken]

    public init?(_ command: ParsedCommand) {
        guard IMAPCommandCatalog.oneMailboxNames.contains(command.name), let first = command.arguments.first,
              let mailbox = first.stringBytes
        else { return nil }
        if command.arguments.count == 2 {
            guard command.name == "CREATE", let parameters = command.arguments[1].list else { return nil }
            self.parameters = parameters
        } else {
            guard command.arguments.count == 1 else { return nil }
            parameters = []
        }
        name = command.name
        self.mailbox = MailboxName(bytes: mailbox)
    }
}
