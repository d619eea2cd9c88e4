import IMAPWire
import Logging
import NIOCore

/// The configured filters, each scoped to some users; shared by all sessions.
public struct FilterSet: Sendable {
    public struct Entry: Sendable {
        public var users: UserMatcher
        public var filter: any Filter

        public init(users: UserMatcher = .everyone, filter: any Filter) {
            self.users = users
            self.filter = filter
        }
    }

    public var entries: [Entry]

    public init(_ entries: [Entry] = []) { self.entries = entries }

    public var isEmpty: Bool { entries.isEmpty }

    /// The engine for a session of `user`, or `nil` when no filter applies
    /// (then the relay does no filtering work at all).
    public func engine(user: String, groups: [String] = [], clientAddress: String?, upstreamCapabilities: [String],
                       logger: Logger) -> FilterEngine? {
        let filters = entries.filter { $0.users.matches(user, groups: groups) }.map(\.filter)
        guard !filters.isEmpty else { return nil }
        let context = FilterContext(user: user, clientAddress: clientAddress,
                                    upstreamCapabilities: upstreamCapabilities, logger: logger)
        return FilterEngine(filters: filters, context: context)
    }

    /// Whether any filter applies to `user`.
    public func applies(to user: String, groups: [String] = []) -> Bool {
        entries.contains { $0.users.matches(user, groups: groups) }
    }

    /// Capabilities before login: only filters that apply to everyone.
    public func preAuthCapabilities(_ capabilities: [String]) -> [String] {
        var result = capabilities
        for entry in entries where entry.users.isEveryone {
            entry.filter.rewrite(capabilities: &result, authenticated: false)
        }
        return result
    }
}

/// Runs one session's filter chains and keeps its context current.
///
/// The relay asks `wants…` with the name from a frame's first line (no
/// parsing); only frames some filter (or the engine's own state tracking)
/// selects are collected whole and handed to `process…`. Everything else is
/// only noted (`commandPassed`, `taggedResponsePassed`) for the in-flight queue.
public final class FilterEngine {
    public let context: FilterContext
    let filters: [any Filter]
    /// Each filter's selections, asked once (filters may compute them).
    private let commandSelections: [CommandSelection]
    private let responseSelections: [ResponseSelection]
    /// Each filter's kind, the `rule` label of its metrics.
    private let ruleKinds: [RuleKind]
    private let commandNames: CommandSelection
    private let untaggedNames: Set<String>
    private let taggedFor: CommandSelection

    /// Commands the engine reads to follow the context's state (their
    /// arguments matter); CLOSE and UNSELECT count by their tagged answers.
    static let trackedCommands: Set<String> = Set(IMAPCommandCatalog.commands.filter {
        $0.sessionEffect == .selects || $0.sessionEffect == .enables
    }.map(\.name))

    init(filters: [any Filter], context: FilterContext) {
        // Audit rules go first, wherever they are listed: they only record,
        // and first they see every refusal, whichever rule makes it.
        let filters = filters.filter { $0 is AuditFilter } + filters.filter { !($0 is AuditFilter) }
        self.filters = filters
        ruleKinds = filters.map(RuleMetrics.kind(of:))
        self.context = context
        commandSelections = filters.map(\.commands)
        responseSelections = filters.map(\.responses)
        var names = FilterEngine.trackedCommands
        var all = false
        var untagged: Set<String> = ["ENABLED"]
        var tagged = CommandSelection.named(IMAPCommandCatalog.stateChangingNames)
        for (commands, responses) in zip(commandSelections, responseSelections) {
            names.formUnion(commands.names)
            all = all || commands.all
            untagged.formUnion(responses.untagged)
            tagged.names.formUnion(responses.taggedFor.names)
            tagged.all = tagged.all || responses.taggedFor.all
        }
        commandNames = CommandSelection(names: names, all: all)
        untaggedNames = untagged
        taggedFor = tagged
    }

    /// The proxy learned the server's hierarchy delimiter itself (its own
    /// `LIST "" ""` after login, whose responses the client never sees).
    public func learned(hierarchyDelimiter: UInt8) {
        context.hierarchyDelimiter = hierarchyDelimiter
    }

    // MARK: - Capabilities

    public func capabilities(_ capabilities: [String]) -> [String] {
        var result = capabilities
        for filter in filters { filter.rewrite(capabilities: &result, authenticated: true) }
        return result
    }

    // MARK: - Commands

    public func wantsCommand(named name: String) -> Bool { commandNames.contains(name) }

    /// A command no filter selected went upstream as it was.
    public func commandPassed(tag: String, name: String) {
        context.inFlight.append(InFlightCommand(tag: tag, name: name))
        if name == "CLOSE" || name == "UNSELECT" { stateChangeSent(nil) }
    }

    /// A command that changes the selected state went upstream: commands
    /// behind it are judged in the state it leads to. SELECT and EXAMINE
    /// lead to their mailbox (if they fail, no mailbox is selected, where
    /// mailbox commands fail anyway). CLOSE and UNSELECT (`nil`) keep the
    /// old mailbox until their OK: if they fail (a server without UNSELECT,
    /// `UID CLOSE`), the old mailbox stays selected, so that is the worst
    /// case to judge in (red team 2 #3).
    private func stateChangeSent(_ state: FilterContext.State?) {
        context.stateChangesInFlight += 1
        if let state { context.state = state }
    }

    /// The proxy refused a command before or instead of the rules (it does
    /// not parse, is too large for them, has a tag the proxy cannot read, or
    /// is COMPRESS): audit rules naming it record the refusal, and
    /// `failClosed` counts it under `sluice_commands_refused_total{rule="fail_closed"}`.
    public func proxyRefused(commandNamed name: String?, status: String, failClosed: Bool) {
        if failClosed { RuleMetrics.refused[.failClosed]?.increment() }
        guard let name else { return }
        let base = name.hasPrefix("UID ") ? String(name.dropFirst(4)) : name
        for case let audit as AuditFilter in filters where audit.names.contains(base) {
            audit.recordRefusal(of: name, status: status, context: context)
        }
    }

    public enum CommandDecision {
        case forwardOriginal
        case forwardRewritten(ParsedCommand)
        /// The proxy's answer for the client (complete lines).
        case respond(ByteBuffer)
    }

    /// Runs the command chain over a collected command frame.
    ///
    /// A selected command that does not parse is refused here, never
    /// forwarded (DESIGN principle 5): the server may read what the proxy
    /// could not (Dovecot ignores trailing arguments, so `DELETE Secret x[`
    /// deleted `Secret` under a deny rule).
    ///
    /// `continuing`: the frame is a command whose earlier parts already went
    /// upstream, each ending in a literal that streamed past the rules
    /// (MULTIAPPEND's next message, CATENATE's next part). The chain runs
    /// again on everything so far; only a refusal takes effect then (the
    /// parts sent cannot be rewritten), and the in-flight queue and state
    /// are not touched again.
    public func process(command frame: Frame, streamedLiteral: LiteralHeader?, continuing: Bool = false) -> CommandDecision {
        let parsed: ParsedCommand
        do {
            parsed = try frame.command(continues: streamedLiteral != nil)
        } catch {
            context.logger.notice("selected command refused: it does not parse", metadata: [
                "imap.command": "\(frame.name ?? "-")", "parse.error": "\(error.hint)",
            ])
            proxyRefused(commandNamed: frame.name, status: "BAD", failClosed: true)
            return .respond(ByteBuffer(string: "\(frame.tag ?? "*") BAD \(error.hint).\r\n"))
        }
        let command = ClientCommand(parsed: parsed, original: frame, streamedLiteral: streamedLiteral,
                                    isContinuation: continuing)
        let outcome = runCommand(command, from: 0)
        if continuing, case .forward = outcome { return .forwardOriginal }
        switch outcome {
        case .forward(let command):
            if command.isRewritten, streamedLiteral != nil, !FilterEngine.endsWithStreamedLiteral(command.parsed) {
                // The streamed literal sits inside a list (CATENATE's TEXT): the
                // encoder cannot leave that list open, so the rewrite cannot be sent.
                proxyRefused(commandNamed: command.name, status: "NO", failClosed: true)
                return .respond(ByteBuffer(string: "\(parsed.tag) NO [CANNOT] This command cannot be rewritten by the proxy's rules.\r\n"))
            }
            var entry = InFlightCommand(tag: command.tag, name: command.name)
            if FilterEngine.trackedCommands.contains(command.baseName) || MailboxArguments.names.contains(command.baseName) {
                entry.mailbox = MailboxArguments.first(of: command.parsed)
                entry.clientMailbox = MailboxArguments.first(of: parsed)
                if entry.mailbox == nil, command.baseName == "SELECT" || command.baseName == "EXAMINE" {
                    // A name the proxy could not read (a literal) selects a mailbox
                    // every mailbox-scoped rule treats as matching (red team #6).
                    entry.mailbox = .unreadable
                }
            }
            context.inFlight.append(entry)
            switch command.baseName {
            case "SELECT", "EXAMINE":
                let mailbox = entry.mailbox ?? .unreadable
                stateChangeSent(.selected(mailbox: mailbox, readOnly: command.baseName == "EXAMINE"))
            case "CLOSE", "UNSELECT":
                // `UID CLOSE` is no command (BAD): only the exact names count.
                if !command.parsed.isUID { stateChangeSent(nil) }
            default:
                break
            }
            return command.isRewritten ? .forwardRewritten(command.parsed) : .forwardOriginal
        case .reply(let reply):
            return .respond(ByteBuffer(string: "\(parsed.tag) \(reply)\r\n"))
        case .answer(let untagged, let reply):
            var text = ""
            for line in untagged { text += "* \(line)\r\n" }
            return .respond(ByteBuffer(string: text + "\(parsed.tag) \(reply)\r\n"))
        }
    }

    /// Whether the command's last top-level argument is a literal that streams.
    static func endsWithStreamedLiteral(_ command: ParsedCommand) -> Bool {
        if case .literal(_, _, nil)? = command.arguments.last { return true }
        return false
    }

    private func runCommand(_ command: ClientCommand, from index: Int) -> CommandOutcome {
        var index = index
        while index < filters.count, !commandSelections[index].contains(command.name) { index += 1 }
        guard index < filters.count else { return .forward(command) }
        let next = index + 1
        var passedOn: CommandOutcome?
        let outcome = filters[index].handle(command: command, context: context) { command, _ in
            let outcome = self.runCommand(command, from: next)
            passedOn = outcome
            return outcome
        }
        // A refusal is counted for the rule that made it, not for those it passes through.
        if FilterEngine.isRefusal(outcome), passedOn.map(FilterEngine.isRefusal) != true {
            RuleMetrics.refused[ruleKinds[index]]?.increment()
        }
        return outcome
    }

    private static func isRefusal(_ outcome: CommandOutcome) -> Bool {
        guard case .reply(let reply) = outcome else { return false }
        return reply.status == .no || reply.status == .bad
    }

    // MARK: - Responses

    /// Whether a response starting with this first line is collected whole.
    public func wantsResponse(kind: FrameKind, name: String?, tag: String?) -> Bool {
        switch kind {
        case .untaggedResponse:
            guard let name else { return false }
            // LIST is looked at until it has shown the hierarchy delimiter.
            return untaggedNames.contains(name) || (name == "LIST" && context.hierarchyDelimiter == nil)
        case .taggedResponse:
            guard let tag, let command = context.command(tagged: tag) else { return false }
            return taggedFor.contains(command.name)
        default:
            return false
        }
    }

    /// A tagged response went to the client unfiltered.
    public func taggedResponsePassed(tag: String) {
        guard let index = context.inFlight.firstIndex(where: { $0.tag == tag }) else { return }
        let command = removeInFlight(at: index)
        switch command.name {
        case "SELECT", "EXAMINE", "CLOSE", "UNSELECT":
            // Answered without being tracked (unparseable): what the server
            // did is unknown; the worst case is a mailbox the rules cannot
            // name, which every mailbox-scoped rule refuses.
            stateChangeAnswered(.selected(mailbox: .unreadable, readOnly: false))
        default:
            break
        }
    }

    /// Answers come in order almost always: the oldest leaves in O(1).
    @discardableResult
    private func removeInFlight(at index: CircularBuffer<InFlightCommand>.Index) -> InFlightCommand {
        index == context.inFlight.startIndex ? context.inFlight.removeFirst() : context.inFlight.remove(at: index)
    }

    /// A state-changing command was answered: once none is left in flight,
    /// the state commands run in is the confirmed one.
    private func stateChangeAnswered(_ confirmed: FilterContext.State) {
        context.confirmedState = confirmed
        context.stateChangesInFlight = max(0, context.stateChangesInFlight - 1)
        if context.stateChangesInFlight == 0 { context.state = confirmed }
    }

    public enum ResponseDecision {
        case forwardOriginal
        case forwardRewritten(ByteBuffer)
        case drop
        /// A filter could not decide: nothing of this response goes out, and
        /// the session ends with `* BYE [UNAVAILABLE] reason`.
        case endSession(reason: String)
    }

    /// Runs the response chain over a collected response frame.
    ///
    /// An untagged response a filter selected and that does not parse is
    /// dropped and logged (a hiding rule cannot tell whether it names a
    /// hidden mailbox); a tagged one still reaches the client, which waits
    /// for it.
    public func process(response frame: Frame) -> ResponseDecision {
        let parsed: ParsedResponse
        do {
            parsed = try frame.response()
        } catch {
            if frame.kind == .taggedResponse, let tag = frame.tag {
                taggedResponsePassed(tag: tag)
                return .forwardOriginal
            }
            guard let name = frame.name, selectedByFilter(untagged: name) else { return .forwardOriginal }
            context.logger.notice("selected response dropped: it does not parse", metadata: [
                "imap.response": "\(name)", "parse.error": "\(error.hint)",
            ])
            return .drop
        }
        var command: InFlightCommand?
        if frame.kind == .taggedResponse, let tag = frame.tag { command = context.command(tagged: tag) }
        track(parsed, command: command)
        let response = ServerResponse(parsed: parsed, original: frame, command: command)
        let outcome = runResponse(response, from: filters.count - 1)
        if let command, let index = context.inFlight.firstIndex(where: { $0.tag == command.tag }) {
            removeInFlight(at: index)
        }
        if let reason = FilterEngine.endReason(in: outcome) { return .endSession(reason: reason) }
        switch outcome {
        case .forward(let response):
            guard response.isRewritten else { return .forwardOriginal }
            return .forwardRewritten(encode(response.parsed))
        case .drop:
            return frame.kind == .taggedResponse ? .forwardOriginal : .drop
        case .endSession(let reason):
            return .endSession(reason: reason)
        case .sequence(let outcomes):
            var bytes = ByteBuffer()
            var tail = outcomes
            // A tagged reply cannot be dropped: make sure it is there.
            if frame.kind == .taggedResponse, !FilterEngine.containsForward(outcomes) { tail.append(.forward(response)) }
            FilterEngine.append(tail, to: &bytes, utf8: context.utf8Enabled)
            return bytes.readableBytes == 0 ? .drop : .forwardRewritten(bytes)
        }
    }

    /// Whether some filter (not only the engine's own tracking) selects this untagged response.
    private func selectedByFilter(untagged name: String) -> Bool {
        responseSelections.contains { $0.untagged.contains(name) }
    }

    private static func containsForward(_ outcomes: [ResponseOutcome]) -> Bool {
        guard let last = outcomes.last else { return false }
        switch last {
        case .forward: return true
        case .drop, .endSession: return false
        case .sequence(let inner): return containsForward(inner)
        }
    }

    /// The first `endSession` anywhere in the outcome (a held response
    /// released into a filter that fails ends the session as well).
    private static func endReason(in outcome: ResponseOutcome) -> String? {
        switch outcome {
        case .endSession(let reason): return reason
        case .sequence(let inner): return inner.lazy.compactMap(endReason(in:)).first
        case .forward, .drop: return nil
        }
    }

    private static func append(_ outcomes: [ResponseOutcome], to bytes: inout ByteBuffer, utf8: Bool) {
        for outcome in outcomes {
            switch outcome {
            case .forward(let response):
                if response.isRewritten {
                    var encoded = encode(response.parsed, utf8: utf8)
                    bytes.writeBuffer(&encoded)
                } else {
                    for (index, segment) in response.original.segments.enumerated() {
                        var segment = segment
                        bytes.writeBuffer(&segment)
                        guard index < response.original.literals.count else { continue }
                        for var chunk in response.original.literals[index].chunks ?? [] { bytes.writeBuffer(&chunk) }
                    }
                }
            case .drop, .endSession:
                break
            case .sequence(let inner):
                append(inner, to: &bytes, utf8: utf8)
            }
        }
    }

    /// Responses pass the filters in reverse order (an onion: the filter
    /// nearest the client sees commands first and responses last), so a
    /// rule after a renaming rule sees server names both ways.
    private func runResponse(_ response: ServerResponse, from index: Int) -> ResponseOutcome {
        var index = index
        while index >= 0, !selects(responseSelections[index], response) { index -= 1 }
        guard index >= 0 else { return .forward(response) }
        let next = index - 1
        var passedOn: ResponseOutcome?
        let outcome = filters[index].handle(response: response, context: context) { response, _ in
            let outcome = self.runResponse(response, from: next)
            passedOn = outcome
            return outcome
        }
        // Built-in rules count what they change themselves (they know a hold
        // from a removal); a filter of one's own or a script is counted here,
        // for an outcome it changed rather than passed on.
        if ruleKinds[index] == .custom || ruleKinds[index] == .lua, FilterEngine.changes(outcome), passedOn.map(FilterEngine.changes) != true {
            RuleMetrics.rewritten[.custom]?.increment()
        }
        return outcome
    }

    /// Anything but the response passed on as it came: a rewrite, a removal,
    /// holding it back, or releasing what was held.
    private static func changes(_ outcome: ResponseOutcome) -> Bool {
        if case .forward(let response) = outcome { return response.isRewritten }
        return true
    }

    private func selects(_ selection: ResponseSelection, _ response: ServerResponse) -> Bool {
        if let command = response.command { return selection.taggedFor.contains(command.name) }
        switch response.parsed {
        case .data(let data): return selection.untagged.contains(data.name)
        case .status(let status): return selection.untagged.contains(status.status.rawValue)
        case .continuation: return false
        }
    }

    /// Keeps the context's state: selected mailbox, enabled extensions, delimiter.
    private func track(_ response: ParsedResponse, command: InFlightCommand?) {
        switch response {
        case .status(let status):
            guard let command, status.tag != nil else { return }
            switch command.baseName {
            case "SELECT", "EXAMINE":
                switch status.status {
                case .ok:
                    let readOnly = status.text.code?.name == "READ-ONLY" || command.baseName == "EXAMINE"
                    stateChangeAnswered(.selected(mailbox: command.mailbox ?? .unreadable, readOnly: readOnly))
                case .no:
                    stateChangeAnswered(.authenticated)  // a failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2)
                default:
                    // BAD: the command was not run; whatever was selected may still be.
                    stateChangeAnswered(context.confirmedState)
                }
            case "CLOSE", "UNSELECT":
                guard !command.name.hasPrefix("UID ") else { break }  // a UID form: no state change was counted
                stateChangeAnswered(status.status == .ok ? .authenticated : context.confirmedState)
            default:
                break
            }
        case .data(let data):
            if data.name == "ENABLED" {
                if data.arguments.contains(where: { $0.keyword == "UTF8=ACCEPT" }) { context.utf8Enabled = true }
            } else if data.name == "LIST", context.hierarchyDelimiter == nil, let list = ListResponse(data),
                      let delimiter = list.delimiter {
                context.hierarchyDelimiter = delimiter
            }
        case .continuation:
            break
        }
    }

    /// Encodes a rewritten response for the client (8-bit strings quoted
    /// once UTF8=ACCEPT is enabled, RFC 6855 §3; literals otherwise).
    func encode(_ response: ParsedResponse) -> ByteBuffer {
        FilterEngine.encode(response, utf8: context.utf8Enabled)
    }

    static func encode(_ response: ParsedResponse, utf8: Bool = false) -> ByteBuffer {
        let options = EncodingOptions(receiver: .client, utf8Accepted: utf8)
        switch response {
        case .status(let status): return IMAPEncoder.encode(status, options: options).bytes() ?? ByteBuffer()
        case .data(let data): return IMAPEncoder.encode(data, options: options).bytes() ?? ByteBuffer()
        case .continuation(let text):
            var buffer = ByteBuffer(string: "+ ")
            if let code = text.code {
                buffer.writeString("[\(code.name)" + (code.rawArguments.isEmpty ? "" : " ") )
                buffer.writeBytes(code.rawArguments)
                buffer.writeString("] ")
            }
            buffer.writeBytes(text.text)
            buffer.writeString("\r\n")
            return buffer
        }
    }
}
