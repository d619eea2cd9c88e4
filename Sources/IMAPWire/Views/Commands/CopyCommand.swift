/// `COPY` / `MOVE` and their UID forms (RFC 3501 §6.4.7, RFC 6851).
///
/// ```
/// copy = "COPY" SP sequence-set SP mailbox
/// move = "MOVE" SP sequence-set SP mailbox
/// ```
public struct CopyCommand: Hashable, Sendable {
    public var isUID: Bool
    public var isMove: Bool
    public var set: SequenceSet
    public var mailbox: MailboxName

    public init?(_ command: ParsedCommand) {
        guard command.baseName == "COPY" || command.baseName == "MOVE", command.arguments.count == 2,
              let set = SequenceSet(command.arguments[0]), let name = command.arguments[1].stringBytes
        else { return nil }
        isUID = command.isUID
        isMove = command.baseName == "MOVE"
        self.set = set
        mailbox = MailboxName(bytes: name)
    }
}
