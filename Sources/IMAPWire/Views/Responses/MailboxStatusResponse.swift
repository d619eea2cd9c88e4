/// `* STATUS mailbox (item value …)` (RFC 3501 §7.2.4).
///
/// ```
/// mailbox-data =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"
/// status-att-list = status-att-val *(SP status-att-val)
/// ```
public struct MailboxStatusResponse: Hashable, Sendable {
    public struct Item: Hashable, Sendable {
        /// The item name, upper-cased (`MESSAGES`, `UIDNEXT`, `HIGHESTMODSEQ`, …).
        public var name: String
        public var value: UInt64
    }

    public var mailbox: MailboxName
    public var items: [Item]

    public init?(_ data: DataResponse) {
        guard data.name == "STATUS", data.number == nil, data.arguments.count == 2,
              let name = data.arguments[0].stringBytes, let list = data.arguments[1].list, list.count % 2 == 0
        else { return nil }
        mailbox = MailboxName(bytes: name)
        items = []
        for index in stride(from: 0, to: list.count, by: 2) {
            guard let key = list[index].keyword, let value = list[index + 1].number else { return nil }
            items.append(Item(name: key, value: value))
        }
    }

    public subscript(name: String) -> UInt64? {
        items.first { $0.name == name.uppercased() }?.value
    }
}
