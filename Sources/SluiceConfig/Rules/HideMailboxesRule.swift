import SluiceFilters

/// `hide_mailboxes: [PATTERN, …]` → `HideMailboxesFilter`.
enum HideMailboxesRule: RuleReader {
    static let key = "hide_mailboxes"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        let patterns = value.listOrSingle().compactMap { $0.nonEmptyString() }
        if patterns.contains(where: { $0.uppercased() == "INBOX" }) { value.report("INBOX cannot be hidden") }
        return HideMailboxesFilter(patterns: patterns.map(mailboxGlob))
    }
}
