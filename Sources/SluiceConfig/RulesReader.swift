import SluiceProxy
import IMAPWire
import SluiceFilters

/// The `rules:` section: declarative rules, each becoming a built-in filter
/// scoped to users, in order (see docs/filters.md).
enum RulesReader {
    /// Every kind of rule that becomes a filter, each read by its own file in Rules/.
    /// (Computed: metatypes are not `Sendable`, and this is read once per file.)
    static var readers: [any RuleReader.Type] {
        [DenyRule.self, ReadOnlyRule.self, RenameMailboxesRule.self, HideMailboxesRule.self,
         CapabilitiesRule.self, SpecialUseRule.self, AuditRule.self, LuaRule.self]
    }

    /// Every rule key; an entry has exactly one of them.
    static var ruleKeys: Set<String> { Set(readers.map { $0.key }).union(["rewrite_login"]) }
    static let commonKeys: Set<String> = ["users"]

    /// Commands a `deny` or `audit` rule may name (`IMAPCommandCatalog`); a
    /// misspelt name is an error, not a rule that never fires.
    static let knownCommands: Set<String> = Set(IMAPCommandCatalog.commands.map(\.name)).union(["UID"])

    static func read(_ value: YAMLValue, reading: RuleReading, into configuration: inout ProxyConfiguration) {
        guard let list = value.list() else { return }
        let ruleKeys = self.ruleKeys
        let readersByKey = Dictionary(uniqueKeysWithValues: readers.map { ($0.key, $0) })
        var entries: [FilterSet.Entry] = []
        for item in list {
            guard let mapping = item.mapping() else { continue }
            let present = mapping.map(\.key).filter(ruleKeys.contains)
            guard present.count == 1, let kind = present.first, let ruleValue = mapping.first(where: { $0.key == kind })?.value else {
                item.report(present.isEmpty
                    ? "a rule needs one of: \(ruleKeys.sorted().joined(separator: ", "))"
                    : "one rule per entry; found \(present.joined(separator: ", "))")
                continue
            }
            let allowed = commonKeys.union(readersByKey[kind]?.extraKeys ?? []).union([kind])
            var problem = false
            for (key, entry) in mapping where !allowed.contains(key) {
                entry.report("unknown key for a \(kind) rule (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                problem = true
            }
            if kind == "rewrite_login" {
                if fields(of: mapping)["users"] != nil { item.report("rewrite_login applies before login, to everyone; users: does not apply") }
                readLoginRewrite(ruleValue, into: &configuration)
                continue
            }
            var users = UserMatcher.everyone
            if let usersValue = mapping.first(where: { $0.key == "users" })?.value {
                let patterns = usersValue.listOrSingle().compactMap { $0.nonEmptyString() }
                do {
                    users = try UserMatcher(patterns)
                } catch {
                    usersValue.report("not a valid /regular expression/: \(error)")
                    problem = true
                }
            }
            let fields = fields(of: mapping)
            guard let reader = readersByKey[kind],
                  let filter = reader.filter(from: ruleValue, entry: fields, reading: reading), !problem
            else { continue }
            entries.append(FilterSet.Entry(users: users, filter: filter))
        }
        configuration.filters = FilterSet(entries)
    }

    private static func fields(of mapping: [(key: String, value: YAMLValue)]) -> [String: YAMLValue] {
        Dictionary(mapping.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    private static func readLoginRewrite(_ value: YAMLValue, into configuration: inout ProxyConfiguration) {
        guard let parts = value.fields(["match", "replace"]),
              let match = parts["match"]?.nonEmptyString(), let replace = parts["replace"]?.string()
        else {
            value.report("rewrite_login needs match: REGEX and replace: TEMPLATE")
            return
        }
        do {
            configuration.loginRewrites.append(LoginRewrite(regex: try UncheckedRegex(match), template: replace))
        } catch {
            parts["match"]?.report("not a valid regular expression: \(error)")
        }
    }

    /// Command names (base names; UID forms are covered), checked against the known list.
    static func commandNames(_ value: YAMLValue) -> Set<String>? {
        var names = Set<String>()
        for item in value.listOrSingle() {
            guard let name = item.nonEmptyString()?.uppercased() else { return nil }
            let base = name.hasPrefix("UID ") ? String(name.dropFirst(4)) : name
            guard knownCommands.contains(base) else {
                item.report("unknown command \(name)")
                return nil
            }
            names.insert(base)
        }
        return names
    }
}

/// A mailbox pattern as rules compare it: names are matched with a leading
/// INBOX component in upper case (`MailboxName.canonicalInbox`), so the
/// pattern is written the same way.
func mailboxGlob(_ pattern: String) -> Glob {
    let canonical = MailboxName(bytes: Array(pattern.utf8)).canonicalInbox(delimiter: nil)
    return Glob(String(decoding: canonical.bytes, as: UTF8.self))
}
