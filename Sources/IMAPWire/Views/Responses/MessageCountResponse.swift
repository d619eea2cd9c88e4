/// `* n EXISTS`, `* n RECENT`, `* n EXPUNGE` (RFC 3501 §7.3.1–2, §7.4.1).
///
/// ```
/// mailbox-data =/ number SP "EXISTS" / number SP "RECENT"
/// message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
/// ```
public struct MessageCountResponse: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable { case exists = "EXISTS", recent = "RECENT", expunge = "EXPUNGE" }

    public var kind: Kind
    public var number: UInt32

    public init?(_ data: DataResponse) {
        guard let number = data.number, let kind = Kind(rawValue: data.name), data.arguments.isEmpty else {
            return nil
        }
        self.kind = kind
        self.number = number
    }
}
