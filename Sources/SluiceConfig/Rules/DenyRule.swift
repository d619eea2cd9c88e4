import SluiceFilters

/// `deny: [NAME, …]` with optional `reply:` and `mailboxes:` → `DenyCommandsFilter`.
enum DenyRule: RuleReader {
    static let key = "deny"
    static let extraKeys: Set<String> = ["reply", "mailboxes"]

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let names = RulesReader.commandNames(value) else { return nil }
        var reply = TaggedReply.no("NOPERM", "Not allowed here.")
        if let replyValue = entry["reply"], let text = replyValue.string() {
            guard let parsed = TaggedReply(parsing: text), parsed.status != .ok else {
                replyValue.report("expected NO or BAD, an optional [CODE] and text, e.g. \"NO [NOPERM] Not allowed here\"")
                return nil
            }
            reply = parsed
        }
        let mailboxes = entry["mailboxes"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() }.map(mailboxGlob) } ?? []
        return DenyCommandsFilter(names: names, mailboxes: mailboxes, reply: reply)
    }
}
