import SluiceFilters

/// `rename_mailboxes: {CLIENT: SERVER, …}` → `RenameMailboxesFilter`.
enum RenameMailboxesRule: RuleReader {
    static let key = "rename_mailboxes"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let pairs = value.mapping() else { return nil }
        var renames: [(client: String, server: String)] = []
        for (client, serverValue) in pairs {
            guard let server = serverValue.nonEmptyString() else { return nil }
            renames.append((client, server))
        }
        do {
            return RenameMailboxesFilter(renaming: try MailboxRenaming(renames))
        } catch {
            value.report(error.description)
            return nil
        }
    }
}
