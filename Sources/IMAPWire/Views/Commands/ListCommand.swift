/// `LIST` / `LSUB`, including the LIST-EXTENDED forms (RFC 3501 §6.3.8–9, RFC 5258 §6).
///
/// ```
/// list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
/// mbox-or-pat      = list-mailbox / patterns
/// patterns         = "(" list-mailbox *(SP list-mailbox) ")"
/// list-select-opts = "(" [list-select-option *(SP list-select-option)] ")"
/// list-return-opts = "RETURN" SP "(" [return-option *(SP return-option)] ")"
/// ```
public struct ListCommand: Hashable, Sendable {
    public var isLSUB: Bool
    /// Selection options, upper-cased (`SUBSCRIBED`, `SPECIAL-USE`, …).
    public var selectionOptions: [String]
    public var reference: MailboxName
    /// One pattern, or several with LIST-EXTENDED.
    public var patterns: [MailboxName]
    /// Return options as tokens (`CHILDREN`, `STATUS (MESSAGES)`, …).
    public var returnOptions: [IMAPToken]

    public init?(_ command: ParsedCommand) {
        guard command.name == "LIST" || command.name == "LSUB" else { return nil }
        isLSUB = command.name == "LSUB"
        var arguments = command.arguments[...]
        selectionOptions = []
        if !isLSUB, let options = arguments.first?.list {
            guard let keywords = options.keywords else { return nil }
            selectionOptions = keywords
            arguments = arguments.dropFirst()
        }
        guard arguments.count >= 2, let reference = arguments.first?.stringBytes else { return nil }
        self.reference = MailboxName(bytes: reference)
        arguments = arguments.dropFirst()
        guard let pattern = arguments.first else { return nil }
        if let several = pattern.list, !isLSUB {
            let names = several.compactMap(\.stringBytes)
            guard names.count == several.count, !names.isEmpty else { return nil }
            patterns = names.map(MailboxName.init(bytes:))
        } else if let one = pattern.stringBytes {
            patterns = [MailboxName(bytes: one)]
        } else {
            return nil
        }
        arguments = arguments.dropFirst()
        returnOptions = []
        if !arguments.isEmpty {
            guard !isLSUB, arguments.count == 2, arguments.first?.keyword == "RETURN",
                  let options = arguments.last?.list
            else { return nil }
            returnOptions = options
        }
    }
}

extension Array where Element == IMAPToken {
    /// All elements as upper-cased atoms, or `nil` if one is not an atom.
    var keywords: [String]? {
        let words = compactMap { $0.keyword }  // a closure: a key path here costs ~1,000 instructions a call
        return words.count == count ? words : nil
    }

    /// All elements as atoms (case kept), or `nil` if one is not an atom.
    var atoms: [String]? {
        var words: [String] = []
        words.reserveCapacity(count)  // a server's ~40 capabilities: one allocation, not seven
        for token in self {
            guard let word = token.atom else { return nil }
            words.append(word)
        }
        return words
    }
}
