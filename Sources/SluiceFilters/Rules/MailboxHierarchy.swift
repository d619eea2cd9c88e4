import IMAPWire

/// Names under a mailbox, for rules that protect names by pattern.
enum MailboxHierarchy {
    /// Whether some mailbox under `parent` (its name, the hierarchy
    /// delimiter, anything) could match one of `patterns`. With the
    /// delimiter not yet known, `.` and `/` are both tried. A parent whose
    /// name does not decode could hold anything.
    static func mayContain(_ patterns: [Glob], under parent: MailboxName, context: FilterContext) -> Bool {
        let canonical = parent.canonicalInbox(delimiter: context.hierarchyDelimiter)
        guard let name = canonical.displayName(utf8: context.utf8Enabled) else { return true }
        let delimiters: [String] = context.hierarchyDelimiter.map { [String(decoding: [$0], as: UTF8.self)] } ?? [".", "/"]
        return delimiters.contains { delimiter in
            patterns.contains { $0.mayMatchNames(startingWith: name + delimiter) }
        }
    }
}
