import IMAPWire

/// Mailbox names as the client sees them ⇄ names on the server.
///
/// Three forms, tried in the order given:
/// - exact: `"Sent Items": "Sent"`;
/// - subtree: `"Old/*": "Archive/*"` — `Old` ⇄ `Archive` and `Old/x/y` ⇄
///   `Archive/x/y` (written with the server's own delimiter);
/// - prefix: `"*": "INBOX.*"` — every name but INBOX gains (client → server)
///   or loses (server → client) the prefix.
/// A server name that another server name is shown as (e.g. a real `Sent
/// Items` next to a `Sent` shown as `Sent Items`) is not shown at all.
public struct MailboxRenaming: Sendable {
    struct Rule: Sendable {
        var client: String
        var server: String
        var isPrefix: Bool
    }

    private let rules: [Rule]

    /// Throws a description for a pair that cannot work.
    public init(_ pairs: [(client: String, server: String)]) throws(RuleError) {
        var rules: [Rule] = []
        var clientSides = Set<String>(), serverSides = Set<String>()
        for (client, server) in pairs {
            let clientWild = client.hasSuffix("*"), serverWild = server.hasSuffix("*")
            guard clientWild == serverWild else {
                throw RuleError("\(client) → \(server): both sides end in * (a subtree) or neither does")
            }
            let clientBase = clientWild ? String(client.dropLast()) : client
            let serverBase = serverWild ? String(server.dropLast()) : server
            guard !clientBase.contains("*"), !serverBase.contains("*"), !clientBase.contains("%"), !serverBase.contains("%") else {
                throw RuleError("\(client) → \(server): * may only end a name")
            }
            guard clientSides.insert(client).inserted else { throw RuleError("\(client) is renamed twice") }
            guard serverSides.insert(server).inserted else { throw RuleError("two names are renamed to \(server)") }
            rules.append(Rule(client: clientBase, server: serverBase, isPrefix: clientWild))
        }
        self.rules = rules
    }

    public func toServer(_ name: String) -> String { map(name, toServer: true) }

    /// The client's name for a server name; `nil` when the name is shadowed.
    public func toClient(_ name: String) -> String? {
        let client = map(name, toServer: false)
        return toServer(client) == name ? client : nil
    }

    private func map(_ name: String, toServer: Bool) -> String {
        for rule in rules {
            let source = toServer ? rule.client : rule.server, target = toServer ? rule.server : rule.client
            if !rule.isPrefix {
                if name == source { return target }
                continue
            }
            if source.isEmpty {
                // The namespace-prefix form; INBOX keeps its name.
                if name.uppercased() == "INBOX" { continue }
                return target + name
            }
            if name.hasPrefix(source) { return target + name.dropFirst(source.count) }
            // The subtree's root: "Old" for "Old/*".
            if !source.dropLast().isEmpty, !target.dropLast().isEmpty, name == String(source.dropLast()) {
                return String(target.dropLast())
            }
        }
        return name
    }
}

public struct RuleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Renames mailboxes in both directions: in every command that names one
/// (and LIST/LSUB references and patterns), and in LIST, LSUB (with
/// OLDNAME) and STATUS responses.
public struct RenameMailboxesFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .renameMailboxes }

    public let renaming: MailboxRenaming

    public init(renaming: MailboxRenaming) { self.renaming = renaming }

    public var commands: CommandSelection { .named(MailboxArguments.names.union(["LIST", "LSUB"])) }
    public var responses: ResponseSelection { ResponseSelection(untagged: ["LIST", "LSUB", "STATUS"]) }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        let utf8 = context.utf8Enabled
        func rename(_ bytes: [UInt8]) -> [UInt8] {
            guard let name = MailboxName(bytes: bytes).displayName(utf8: utf8) else { return bytes }
            return MailboxName(renaming.toServer(name), utf8: utf8).bytes
        }
        let rewritten: ParsedCommand?
        if command.baseName == "LIST" || command.baseName == "LSUB" {
            rewritten = ListArguments.mapping(command.parsed, reference: rename, pattern: rename)
        } else {
            rewritten = MailboxArguments.mapping(command.parsed) { MailboxName(bytes: rename($0.bytes)) }
        }
        guard let rewritten else { return next(command, context) }
        var command = command
        command.rewrite(rewritten)
        return next(command, context)
    }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        guard case .data(var data) = response.parsed else { return next(response, context) }
        let utf8 = context.utf8Enabled
        func rename(_ bytes: [UInt8]) -> [UInt8]?? {
            guard let name = MailboxName(bytes: bytes).displayName(utf8: utf8) else { return .some(nil) }
            guard let client = renaming.toClient(name) else { return nil }  // shadowed: drop the response
            return client == name ? .some(nil) : .some(MailboxName(client, utf8: utf8).bytes)
        }
        var changed = false
        if data.name == "STATUS" {
            guard let bytes = data.arguments.first?.stringBytes else { return next(response, context) }
            guard let renamed = rename(bytes) else {
                RuleMetrics.rewrote(.renameMailboxes)
                return .drop
            }
            if let renamed { data.arguments[0] = .quoted(renamed); changed = true }
        } else if let list = ListResponse(data) {
            // mailbox-list = "(" flags ")" SP delimiter SP mailbox [SP "(" extended ")"]
            guard let renamed = rename(list.mailbox.bytes) else {
                RuleMetrics.rewrote(.renameMailboxes)
                return .drop
            }
            if let renamed { data.arguments[2] = .quoted(renamed); changed = true }
            if let old = list.oldName, let renamedOld = rename(old.bytes) ?? nil, case .list(var items) = data.arguments[3] {
                for index in stride(from: 0, to: items.count - 1, by: 2) where items[index].string?.uppercased() == "OLDNAME" {
                    items[index + 1] = .list([.quoted(renamedOld)])
                }
                data.arguments[3] = .list(items)
                changed = true
            }
        }
        guard changed else { return next(response, context) }
        RuleMetrics.rewrote(.renameMailboxes)
        var response = response
        response.rewrite(.data(data))
        return next(response, context)
    }
}

/// Hides mailboxes (glob patterns on their names): they vanish from LIST,
/// LSUB and STATUS responses, and commands naming them are answered as if
/// they did not exist.
///
/// LIST and LSUB responses are held until the command's tagged reply, so a
/// mailbox whose only children are hidden can say `\HasNoChildren` instead
/// of `\HasChildren` (when the pattern listed its children at all).
public struct HideMailboxesFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .hideMailboxes }

    public let patterns: [Glob]
    /// Responses held per LIST before they are released uncorrected (bounds memory).
    public static let maxHeld = IMAPLimits.maxHeldListResponses

    public init(patterns: [Glob]) { self.patterns = patterns }

    public var commands: CommandSelection { .named(MailboxArguments.names.union(MailboxArguments.urlCommands)) }
    public var responses: ResponseSelection {
        ResponseSelection(untagged: ["LIST", "LSUB", "XLIST", "STATUS"], taggedFor: .named(["LIST", "LSUB", "XLIST"]))
    }

    /// LIST/LSUB responses held for the current LIST command.
    final class Held {
        var responses: [(response: ServerResponse, list: ListResponse, hidden: Bool)] = []
        /// Bytes of the held responses: past `IMAPLimits.maxCollectedBytes`
        /// they are released (hiding applied, `\HasChildren` left as sent),
        /// so a server that never ends its LIST cannot grow memory.
        var bytes = 0
    }

    /// Whether `mailbox` is hidden: compared with INBOX's hierarchy in
    /// upper case, and decoded from modified UTF-7 / UTF-8. A name that does
    /// not decode counts as hidden (fail closed).
    func isHidden(_ mailbox: MailboxName, context: FilterContext) -> Bool {
        guard !mailbox.isInbox else { return false }
        let mailbox = mailbox.canonicalInbox(delimiter: context.hierarchyDelimiter)
        if mailbox.bytes.allSatisfy({ $0 < 0x80 && $0 != UInt8(ascii: "&") }) {
            return mailbox.bytes.withUnsafeBufferPointer { bytes in patterns.contains { $0.matches(bytes: bytes) } }
        }
        guard let name = mailbox.displayName(utf8: context.utf8Enabled) else { return true }
        return patterns.contains { $0.matches(name) }
    }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        guard let named = MailboxArguments.referenced(by: command.parsed) else {
            return .reply(.bad("Mailbox name could not be read."))
        }
        if named.contains(where: { isHidden($0, context: context) }) {
            return .reply(.no("NONEXISTENT", "Mailbox does not exist."))
        }
        // RENAME moves the source's children too: a hidden one would come out under the new name.
        if command.baseName == "RENAME", let source = named.first,
           MailboxHierarchy.mayContain(patterns, under: source, context: context) {
            return .reply(.no("CANNOT", "This mailbox cannot be renamed."))
        }
        return next(command, context)
    }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        let held = context.storage[ObjectIdentifier(Held.self)] as? Held ?? {
            let fresh = Held()
            context.storage[ObjectIdentifier(Held.self)] = fresh
            return fresh
        }()
        if response.command != nil {
            // The LIST is complete: release what was held, corrected, then the reply.
            let released = release(held, next: next, context: context)
            return .sequence(released + [next(response, context)])
        }
        guard case .data(let data) = response.parsed else { return next(response, context) }
        if data.name == "STATUS" {
            if let bytes = data.arguments.first?.stringBytes, isHidden(MailboxName(bytes: bytes), context: context) {
                RuleMetrics.rewrote(.hideMailboxes)
                return .drop
            }
            return next(response, context)
        }
        // A LIST line this rule cannot read may name a hidden mailbox: dropped.
        guard let list = ListResponse(data) else {
            RuleMetrics.rewrote(.hideMailboxes)
            return .drop
        }
        // Unasked (NOTIFY): no LIST to hold it for; it goes now, or not at all.
        if context.inFlight(named: ["LIST", "LSUB", "XLIST"]).isEmpty {
            guard isHidden(list.mailbox, context: context) else { return next(response, context) }
            RuleMetrics.rewrote(.hideMailboxes)
            return .drop
        }
        held.responses.append((response, list, isHidden(list.mailbox, context: context)))
        held.bytes += response.original.length
        if held.responses.count >= HideMailboxesFilter.maxHeld || held.bytes >= IMAPLimits.maxCollectedBytes {
            return .sequence(release(held, next: next, context: context))
        }
        return .sequence([])
    }

    private func release(_ held: Held, next: ResponseNext, context: FilterContext) -> [ResponseOutcome] {
        let entries = held.responses
        held.responses = []
        held.bytes = 0
        let visible = entries.filter { !$0.hidden }
        for _ in 0..<(entries.count - visible.count) { RuleMetrics.rewrote(.hideMailboxes) }  // removed
        return visible.map { entry in
            var response = entry.response
            if entry.list.attributes.contains(where: { $0.caseInsensitiveCompare("\\HasChildren") }),
               let delimiter = entry.list.delimiter {
                let prefix = entry.list.mailbox.bytes + [delimiter]
                let isParent = { (other: (response: ServerResponse, list: ListResponse, hidden: Bool)) in
                    other.list.mailbox.bytes.starts(with: prefix)
                }
                if !visible.contains(where: isParent), entries.contains(where: isParent),
                   case .data(var data) = response.parsed, case .list(let attributes) = data.arguments[0] {
                    data.arguments[0] = .list(attributes.map { token in
                        token.atom?.caseInsensitiveCompare("\\HasChildren") == true ? .atom(Array("\\HasNoChildren".utf8)) : token
                    })
                    RuleMetrics.rewrote(.hideMailboxes)
                    response.rewrite(.data(data))
                }
            }
            return next(response, context)
        }
    }
}

/// Adds special-use attributes (`\Sent`, `\Trash` …, RFC 6154) to LIST
/// responses by mailbox name, for servers without SPECIAL-USE.
public struct SpecialUseFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .specialUse }

    public static let attributes: Set<String> = ["\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"]
    public let byName: [String: String]

    public init(byName: [String: String]) { self.byName = byName }

    public var responses: ResponseSelection { ResponseSelection(untagged: ["LIST"]) }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        guard case .data(var data) = response.parsed, let list = ListResponse(data),
              let name = list.mailbox.displayName(utf8: context.utf8Enabled), let attribute = byName[name],
              !list.attributes.contains(where: { $0.caseInsensitiveCompare(attribute) }),
              case .list(var attributes) = data.arguments.first
        else { return next(response, context) }
        attributes.append(.atom(Array(attribute.utf8)))
        data.arguments[0] = .list(attributes)
        RuleMetrics.rewrote(.specialUse)
        var response = response
        response.rewrite(.data(data))
        return next(response, context)
    }
}

extension String {
    func caseInsensitiveCompare(_ other: String) -> Bool { lowercased() == other.lowercased() }
}
