/// `APPEND`, with MULTIAPPEND, CATENATE and UTF8 forms (RFC 3501 §6.3.11,
/// RFC 3502, RFC 4469, RFC 6855 §4).
///
/// ```
/// append         = "APPEND" SP mailbox 1*append-message
/// append-message = [SP flag-list] [SP date-time] SP append-data
/// append-data    = literal / literal8 / "CATENATE" SP "(" cat-part *(SP cat-part) ")"
///                / "UTF8" SP "(" literal8 ")"
/// ```
public struct AppendCommand: Hashable, Sendable {
    public struct Message: Hashable, Sendable {
        public var flags: [String]
        /// The date-time string as sent, if any.
        public var internalDate: String?
        /// The message literal: its index among the frame's literals and its size.
        public var literalIndex: Int?
        public var literalSize: UInt64?
        /// CATENATE parts, as tokens, when the message is built by CATENATE.
        public var catenateParts: [IMAPToken]?
    }

    public var mailbox: MailboxName
    /// One message, or several with MULTIAPPEND.
    public var messages: [Message]

    public init?(_ command: ParsedCommand) {
        guard command.name == "APPEND", let name = command.arguments.first?.stringBytes else { return nil }
        mailbox = MailboxName(bytes: name)
        messages = []
        var rest = command.arguments.dropFirst()
        while !rest.isEmpty {
            var message = Message(flags: [], internalDate: nil, literalIndex: nil, literalSize: nil, catenateParts: nil)
            if let flags = rest.first?.list {
                guard let atoms = flags.atoms else { return nil }
                message.flags = atoms
                rest = rest.dropFirst()
            }
            if case .quoted(let date) = rest.first {
                message.internalDate = String(decoding: date, as: UTF8.self)
                rest = rest.dropFirst()
            }
            guard let data = rest.first else { return nil }
            rest = rest.dropFirst()
            switch data {
            case .literal(let index, let size, _):
                message.literalIndex = index
                message.literalSize = size
            case .atom where data.keyword == "CATENATE":
                guard let parts = rest.first?.list else { return nil }
                message.catenateParts = parts
                rest = rest.dropFirst()
            case .atom where data.keyword == "UTF8":
                guard let wrapped = rest.first?.list, wrapped.count == 1,
                      case .literal(let index, let size, _) = wrapped[0]
                else { return nil }
                message.literalIndex = index
                message.literalSize = size
                rest = rest.dropFirst()
            default:
                return nil
            }
            messages.append(message)
        }
        guard !messages.isEmpty else { return nil }
    }
}
