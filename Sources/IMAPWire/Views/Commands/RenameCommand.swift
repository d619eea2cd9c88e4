/// `RENAME existing new` (RFC 3501 §6.3.5).
///
/// ```
/// rename = "RENAME" SP mailbox SP mailbox
/// ```
public struct RenameCommand: Hashable, Sendable {
    public var from: MailboxName
    public var to: MailboxName

    public init?(_ command: ParsedCommand) {
        guard command.name == "RENAME", command.arguments.count == 2,
              let from = command.arguments[0].stringBytes, let to = command.arguments[1].stringBytes
        else { return nil }
        self.from = MailboxName(bytes: from)
        self.to = MailboxName(bytes: to)
    }
}
