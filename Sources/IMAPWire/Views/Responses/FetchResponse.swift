/// `* n FETCH (item value …)` (RFC 3501 §7.4.2).
///
/// ```
/// message-data = nz-number SP "FETCH" SP msg-att
/// msg-att = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) ")"
/// ```
/// Values stay tokens: a `BODY[]` value is a literal by reference (its index
/// among the frame's literals and its size), never a copy of the message.
public struct FetchResponse: Hashable, Sendable {
    public struct Attribute: Hashable, Sendable {
        /// The item name, upper-cased, section and partial included (`BODY[HEADER]<0>`).
        public var name: String
        public var value: IMAPToken
    }

    public var number: UInt32
    public var attributes: [Attribute]

    public init?(_ data: DataResponse) {
        guard data.name == "FETCH", let number = data.number, data.arguments.count == 1,
              let list = data.arguments[0].list, list.count % 2 == 0
        else { return nil }
        self.number = number
        attributes = []
        for index in stride(from: 0, to: list.count, by: 2) {
            guard let name = list[index].keyword else { return nil }
            attributes.append(Attribute(name: name, value: list[index + 1]))
        }
    }

    public subscript(name: String) -> IMAPToken? {
        attributes.first { $0.name == name.uppercased() }?.value
    }

    /// The UID item's value, if present.
    public var uid: UInt32? {
        self["UID"]?.number.flatMap { $0 <= UInt64(UInt32.max) ? UInt32($0) : nil }
    }

    /// The FLAGS item's flags, if present.
    public var flags: [String]? { self["FLAGS"]?.list?.atoms }
}
