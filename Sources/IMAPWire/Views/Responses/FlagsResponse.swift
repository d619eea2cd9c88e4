/// `* FLAGS (…)`, part of SELECT/EXAMINE's answer (RFC 3501 §7.2.6).
///
/// ```
/// mailbox-data =/ "FLAGS" SP flag-list
/// ```
public struct FlagsResponse: Hashable, Sendable {
    public var flags: [String]

    public init?(_ data: DataResponse) {
        guard data.name == "FLAGS", data.number == nil, data.arguments.count == 1,
              let flags = data.arguments[0].list?.atoms
        else { return nil }
        self.flags = flags
    }
}
