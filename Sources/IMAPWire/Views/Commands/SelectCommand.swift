/// `SELECT` / `EXAMINE` (RFC 3501 §6.3.1–2, with RFC 7162 parameters).
///
/// ```
/// select  = "SELECT" SP mailbox [select-params]
/// examine = "EXAMINE" SP mailbox [select-params]
/// select-params = SP "(" select-param *(SP select-param) ")"
/// ```
public struct SelectCommand: Hashable, Sendable {
    public var mailbox: MailboxName
    /// `true` for EXAMINE (read-only).
    public var isExamine: Bool
    /// Parameters such as `CONDSTORE` or `QRESYNC (…)`, as tokens.
    public var parameters: [IMAPToken]

    public init?(_ command: ParsedCommand) {
        guard command.name == "SELECT" || command.name == "EXAMINE",
              (1...2).contains(command.arguments.count),
              let name = command.arguments[0].stringBytes
        else { return nil }
        mailbox = MailboxName(bytes: name)
        isExamine = command.name == "EXAMINE"
        if command.arguments.count == 2 {
            guard let parameters = command.arguments[1].list else { return nil }
            self.parameters = parameters
        } else {
            parameters = []
        }
    }
}
