/// `SEARCH` and `UID SEARCH` (RFC 3501 §6.4.4, RFC 4731 ESEARCH return options).
///
/// ```
/// search = "SEARCH" [search-return-opts] SP [ "CHARSET" SP charset SP ] search-key *(SP search-key)
/// search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
/// ```
public struct SearchCommand: Hashable, Sendable {
    public var isUID: Bool
    public var returnOptions: [IMAPToken]?
    public var charset: String?
    public var criteria: [IMAPToken]

    public init?(_ command: ParsedCommand) {
        guard command.baseName == "SEARCH" else { return nil }
        isUID = command.isUID
        var rest = command.arguments[...]
        if rest.first?.keyword == "RETURN", rest.count >= 2, let options = rest.dropFirst().first?.list {
            returnOptions = options
            rest = rest.dropFirst(2)
        }
        if rest.first?.keyword == "CHARSET" {
            guard rest.count >= 2, let charset = rest.dropFirst().first?.string else { return nil }
            self.charset = charset
            rest = rest.dropFirst(2)
        }
        guard !rest.isEmpty else { return nil }
        criteria = Array(rest)
    }
}
