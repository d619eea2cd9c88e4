import IMAPWire

/// Refuses commands by name (UID forms included), optionally only when they
/// name a mailbox matching one of `mailboxes`.
public struct DenyCommandsFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .deny }

    public let names: Set<String>
    public let mailboxes: [Glob]
    public let reply: TaggedReply

    public init(names: Set<String>, mailboxes: [Glob] = [], reply: TaggedReply = .no("NOPERM", "Not allowed here.")) {
        self.names = Set(names.map { $0.uppercased() })
        self.mailboxes = mailboxes
        self.reply = reply
    }

    /// Commands that read messages: a rule that denies one also refuses
    /// the other ways to read them — IMAP URLs (`APPEND … CATENATE (URL …)`,
    /// `URLFETCH`, `GENURLAUTH`) into a matching mailbox, and NOTIFY with
    /// fetch attributes (red team 2 #4, #5).
    public static let readCommands: Set<String> = ["FETCH", "COPY", "MOVE"]

    private var deniesReads: Bool { !names.isDisjoint(with: DenyCommandsFilter.readCommands) }

    public var commands: CommandSelection {
        .named(deniesReads ? names.union(MailboxArguments.urlCommands).union(["NOTIFY"]) : names)
    }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        if !names.contains(command.baseName) {
            // Selected only as another way to read messages.
            if command.baseName == "NOTIFY" {
                return DenyCommandsFilter.notifyFetches(command.arguments) ? .reply(reply) : next(command, context)
            }
            guard let read = MailboxArguments.urlMailboxes(of: command.parsed) else {
                return .reply(.bad("Mailbox name could not be read."))
            }
            if read.isEmpty { return next(command, context) }
            if mailboxes.isEmpty || read.contains(where: { matches($0, context: context) }) { return .reply(reply) }
            return next(command, context)
        }
        if mailboxes.isEmpty { return .reply(reply) }
        guard let named = mailboxesActedOn(by: command, context: context) else {
            return .reply(.bad("Mailbox name could not be read."))
        }
        let hit = named.contains { matches($0, context: context) }
        // RENAME of a parent moves a protected child with it.
        let movesProtected = command.baseName == "RENAME" && named.first.map {
            MailboxHierarchy.mayContain(mailboxes, under: $0, context: context)
        } == true
        return hit || movesProtected ? .reply(reply) : next(command, context)
    }

    /// Whether a pattern matches `mailbox` (a name that does not decode
    /// cannot be shown not to match: it does).
    private func matches(_ mailbox: MailboxName, context: FilterContext) -> Bool {
        let canonical = mailbox.canonicalInbox(delimiter: context.hierarchyDelimiter)
        guard let name = canonical.displayName(utf8: context.utf8Enabled) else { return true }
        return mailboxes.contains { $0.matches(name) }
    }

    /// NOTIFY (RFC 5465) with `MessageNew` followed by fetch attributes has
    /// the server send message data unasked.
    static func notifyFetches(_ tokens: [IMAPToken]) -> Bool {
        for (index, token) in tokens.enumerated() {
            if token.atom?.uppercased() == "MESSAGENEW", index + 1 < tokens.count, tokens[index + 1].list != nil {
                return true
            }
            if let list = token.list, notifyFetches(list) { return true }
        }
        return false
    }

    /// The mailboxes `command` acts on: those it names (URLs included), and
    /// the selected one for commands that act on it (EXPUNGE, STORE,
    /// FETCH …, and COPY/MOVE, which read it). `nil` when a name cannot be
    /// read. The selected mailbox is the one the command will run in
    /// (`FilterContext.state`), so a pipelined SELECT counts.
    private func mailboxesActedOn(by command: ClientCommand, context: FilterContext) -> [MailboxName]? {
        let base = command.baseName
        let namesMailboxes = MailboxArguments.names.contains(base) || MailboxArguments.urlCommands.contains(base)
        var result: [MailboxName] = []
        if namesMailboxes {
            guard let named = MailboxArguments.referenced(by: command.parsed) else { return nil }
            result = named
        }
        if !namesMailboxes || base == "COPY" || base == "MOVE", case .selected(let mailbox, _) = context.state {
            result.append(mailbox)
        }
        return result
    }
}

/// Read-only access: SELECT becomes EXAMINE (so its tagged reply says
/// `[READ-ONLY]` and nothing sets `\Seen`), every mutating command is
/// refused with `NO [NOPERM]`.
public struct ReadOnlyFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .readOnly }

    public static let mutatingCommands = IMAPCommandCatalog.mutatingNames

    public init() {}

    public var commands: CommandSelection { .named(ReadOnlyFilter.mutatingCommands.union(["SELECT"])) }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        if command.baseName == "SELECT" {
            var command = command
            var examine = command.parsed
            examine.name = "EXAMINE"
            command.rewrite(examine)
            return next(command, context)
        }
        return .reply(.no("NOPERM", "Read-only access."))
    }
}

/// Adds and removes capability names everywhere the client sees them, and
/// refuses the commands of removed extensions with `BAD`.
public struct CapabilityFilter: Filter, BuiltInRule {
    public var ruleKind: RuleKind { .capabilities }

    public let remove: Set<String>
    public let add: [String]
    public init(remove: Set<String>, add: [String]) {
        self.remove = Set(remove.map { $0.uppercased() })
        self.add = add
    }

    private func isRemoved(_ name: String) -> Bool {
        let upper = name.uppercased()
        if remove.contains(upper) { return true }
        // THREAD=REFERENCES is removed by THREAD, AUTH=PLAIN by AUTH.
        if let equals = upper.firstIndex(of: "=") { return remove.contains(String(upper[..<equals])) }
        return false
    }

    private var refusedCommands: Set<String> {
        remove.reduce(into: Set<String>()) { result, name in
            result.formUnion(IMAPCommandCatalog.commands(announcedBy: name))
        }
    }

    public var commands: CommandSelection { .named(refusedCommands.union(["ENABLE"])) }

    public var responses: ResponseSelection {
        ResponseSelection(untagged: ["CAPABILITY", "OK", "ENABLED"],
                          taggedFor: .named(["LOGIN", "AUTHENTICATE", "STARTTLS", "CAPABILITY"]))
    }

    public func rewrite(capabilities: inout [String], authenticated: Bool) {
        capabilities.removeAll(where: isRemoved)
        for name in add where !capabilities.contains(where: { $0.uppercased() == name.uppercased() }) {
            capabilities.append(name)
        }
    }

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        if command.baseName == "ENABLE", !refusedCommands.contains("ENABLE") {
            // Enabling a removed extension is not passed on.
            let kept = command.arguments.filter { !isRemoved($0.atom ?? "") }
            if kept.count == command.arguments.count { return next(command, context) }
            if kept.isEmpty { return .answer(untagged: ["ENABLED"], reply: .ok("Enabled.")) }
            var command = command
            command.rewrite(arguments: kept)
            return next(command, context)
        }
        return .reply(.bad("\(command.name) is not available."))
    }

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        var response = response
        switch response.parsed {
        case .data(var data) where data.name == "CAPABILITY":
            let before = data.arguments.compactMap(\.atom)
            var names = before
            rewrite(capabilities: &names, authenticated: true)
            data.arguments = names.map { .atom(Array($0.utf8)) }
            response.rewrite(.data(data))
            if names != before { RuleMetrics.rewrote(.capabilities) }
        case .data(var data) where data.name == "ENABLED":
            let kept = data.arguments.filter { !isRemoved($0.atom ?? "") }
            if kept.count != data.arguments.count {
                data.arguments = kept
                response.rewrite(.data(data))
                RuleMetrics.rewrote(.capabilities)
            }
        case .status(var status):
            guard var code = status.text.code, code.name == "CAPABILITY", let arguments = code.arguments else { break }
            let before = arguments.compactMap(\.atom)
            var names = before
            rewrite(capabilities: &names, authenticated: true)
            code.arguments = names.map { .atom(Array($0.utf8)) }
            code.rawArguments = Array(names.joined(separator: " ").utf8)
            status.text.code = code
            response.rewrite(.status(status))
            if names != before { RuleMetrics.rewrote(.capabilities) }
        default:
            break
        }
        return next(response, context)
    }
}
