import IMAPWire
import SluiceFilters

/// The `rules:` section: declarative rules, each becoming a built-in filter
/// scoped to users, in order (see docs/filters.md).
enum RulesReader {
    /// Every rule key; an entry has exactly one of them.
    static let ruleKeys: Set<String> = [
        "deny", "read_only", "rename_mailboxes", "hide_mailboxes", "capabilities", "special_use", "audit", "rewrite_login",
    ]
    static let commonKeys: Set<String> = ["users"]
    static let extraKeys: [String: Set<String>] = ["deny": ["reply", "mailboxes"]]

    /// Commands a `deny` or `audit` rule may name (`IMAPCommandCatalog`); a
    /// misspelt name is an error, not a rule that never fires.
    static let knownCommands: Set<String> = Set(IMAPCommandCatalog.commands.map(\.name)).union(["UID"])

    static func read(_ value: YAMLValue, baseDirectory: String?, into configuration: inout ProxyConfiguration) {
        guard let list = value.list() else { return }
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
            let allowed = commonKeys.union(extraKeys[kind] ?? []).union([kind])
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
            guard let filter = makeFilter(kind, ruleValue, fields: fields, baseDirectory: baseDirectory), !problem else { continue }
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

    private static func makeFilter(_ kind: String, _ value: YAMLValue, fields: [String: YAMLValue],
                                   baseDirectory: String?) -> (any Filter)? {
        switch kind {
        case "deny":
            guard let names = commandNames(value) else { return nil }
            var reply = TaggedReply.no("NOPERM", "Not allowed here.")
            if let replyValue = fields["reply"], let text = replyValue.string() {
                guard let parsed = TaggedReply(parsing: text), parsed.status != .ok else {
                    replyValue.report("expected NO or BAD, an optional [CODE] and text, e.g. \"NO [NOPERM] Not allowed here\"")
                    return nil
                }
                reply = parsed
            }
            let mailboxes = fields["mailboxes"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() }.map(mailboxGlob) } ?? []
            return DenyCommandsFilter(names: names, mailboxes: mailboxes, reply: reply)
        case "read_only":
            guard let flag = value.bool() else { return nil }
            if !flag { value.report("read_only: false has no effect; leave the rule out") }
            return flag ? ReadOnlyFilter() : nil
        case "rename_mailboxes":
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
        case "hide_mailboxes":
            let patterns = value.listOrSingle().compactMap { $0.nonEmptyString() }
            if patterns.contains(where: { $0.uppercased() == "INBOX" }) { value.report("INBOX cannot be hidden") }
            return HideMailboxesFilter(patterns: patterns.map(mailboxGlob))
        case "capabilities":
            guard let parts = value.fields(["remove", "add"]) else { return nil }
            let remove = parts["remove"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() } } ?? []
            let add = parts["add"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() } } ?? []
            for name in remove + add where !name.allSatisfy({ $0.isASCII && !" ()[]{}\"\\%*".contains($0) }) {
                value.report("\(name) is not a capability name")
                return nil
            }
            if remove.contains(where: { ["IMAP4REV1", "IMAP4REV2"].contains($0.uppercased()) }) {
                value.report("IMAP4rev1/IMAP4rev2 cannot be removed")
                return nil
            }
            return CapabilityFilter(remove: Set(remove), add: add)
        case "special_use":
            guard let pairs = value.mapping() else { return nil }
            var byName: [String: String] = [:]
            for (name, attributeValue) in pairs {
                guard let attribute = attributeValue.string() else { return nil }
                guard let known = SpecialUseFilter.attributes.first(where: { $0.lowercased() == attribute.lowercased() }) else {
                    attributeValue.report("expected one of \(SpecialUseFilter.attributes.sorted().joined(separator: ", ")), got \(attribute)")
                    return nil
                }
                byName[name] = known
            }
            return SpecialUseFilter(byName: byName)
        case "audit":
            guard let parts = value.fields(["commands", "file"]) else { return nil }
            guard let commandsValue = parts["commands"], let names = commandNames(commandsValue) else {
                if parts["commands"] == nil { value.report("audit needs commands: [NAME, …]") }
                return nil
            }
            guard let fileValue = parts["file"], let path = fileValue.nonEmptyString() else {
                if parts["file"] == nil { value.report("audit needs file: PATH") }
                return nil
            }
            let resolved = resolvePath(path, relativeTo: baseDirectory)
            do {
                return AuditFilter(names: names, log: try AuditLog(path: resolved))
            } catch {
                fileValue.report(error.description)
                return nil
            }
        default:
            return nil
        }
    }

    /// Command names (base names; UID forms are covered), checked against the known list.
    private static func commandNames(_ value: YAMLValue) -> Set<String>? {
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

/// `rewrite_login`: a login name matching `regex` (whole) is replaced by
/// `template` (`$1`…) before routing.
public struct LoginRewrite: Sendable {
    public var regex: UncheckedRegex
    public var template: String

    public func apply(_ name: String) -> String? {
        guard let groups = regex.wholeMatch(name) else { return nil }
        return RoutingMap.substitute(template, groups: groups)
    }
}

/// A mailbox pattern as rules compare it: names are matched with a leading
/// INBOX component in upper case (`MailboxName.canonicalInbox`), so the
/// pattern is written the same way.
func mailboxGlob(_ pattern: String) -> Glob {
    let canonical = MailboxName(bytes: Array(pattern.utf8)).canonicalInbox(delimiter: nil)
    return Glob(String(decoding: canonical.bytes, as: UTF8.self))
}
