/// `* LIST` / `* LSUB` (RFC 3501 §7.2.2–3, RFC 5258 extended data such as
/// `CHILDINFO` and `OLDNAME`).
///
/// ```
/// mailbox-list = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
///                [SP mbox-list-extended]
/// ```
public struct ListResponse: Hashable, Sendable {
    public var isLSUB: Bool
    /// Attributes as sent (`\HasNoChildren`, `\Noselect`, `\Sent`, …).
    public var attributes: [String]
    /// The hierarchy delimiter, or `nil` for a flat namespace (NIL).
    public var delimiter: UInt8?
    public var mailbox: MailboxName
    /// Extended data items (`("CHILDINFO" ("SUBSCRIBED"))`, `("OLDNAME" ("x"))`), as tokens.
    public var extendedData: [IMAPToken]

    public init?(_ data: DataResponse) {
        guard data.name == "LIST" || data.name == "LSUB" || data.name == "XLIST", data.number == nil,
              data.arguments.count >= 3,
              let attributes = data.arguments[0].list?.atoms,
              let name = data.arguments[2].stringBytes
        else { return nil }
        isLSUB = data.name == "LSUB"
        self.attributes = attributes
        switch data.arguments[1] {
        case .nilValue:
            delimiter = nil
        case .quoted(let bytes) where bytes.count == 1:
            delimiter = bytes[0]
        default:
            return nil
        }
        mailbox = MailboxName(bytes: name)
        if data.arguments.count == 4 {
            guard let extended = data.arguments[3].list else { return nil }
            extendedData = extended
        } else {
            guard data.arguments.count == 3 else { return nil }
            extendedData = []
        }
    }

    /// The `OLDNAME` extended item (RFC 5465 §5.4), if present.
    public var oldName: MailboxName? {
        for index in stride(from: 0, to: extendedData.count - 1, by: 2)
        where extendedData[index].string?.uppercased() == "OLDNAME" {
            if let names = extendedData[index + 1].list, let name = names.first?.stringBytes {
                return MailboxName(bytes: name)
            }
        }
        return nil
    }
}
