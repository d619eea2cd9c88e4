import CLua
import CoreMetrics
import IMAPWire
import Logging
import SluiceFilters

/// A `lua:` rule: the script's `on_command` and `on_response` as a filter
/// (docs/lua.md). Frames the script did not select never enter Lua.
///
/// Fails closed (DESIGN principle 5): when the script errs, goes over a
/// limit or returns something that cannot go on the wire, the command is
/// refused with `NO [UNAVAILABLE]`, and a selected response ends the session
/// with `* BYE [UNAVAILABLE]` (a script that cannot run cannot be trusted to
/// hide). The error is logged with the script's file and line.
public struct LuaFilter: Filter, RuleKindNaming {
    public let script: LuaScript
    public var ruleKind: RuleKind { .lua }

    public init(script: LuaScript) { self.script = script }

    public var commands: CommandSelection { .named(script.commands) }
    public var responses: ResponseSelection { ResponseSelection(untagged: script.responses) }

    static let unavailable = TaggedReply.no("UNAVAILABLE", "The proxy's rules could not decide on this command.")
    static let responseFailure = "The proxy's rules could not decide on a response."
    /// `sluice_lua_errors_total`: scripts that erred, went over a limit or returned a bad value.
    static let errors = Counter(label: "sluice_lua_errors_total")

    // MARK: - Commands

    public func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        let utf8 = context.utf8Enabled
        // A mailbox the proxy cannot read is one the script cannot judge.
        var mailbox: String?
        if MailboxArguments.names.contains(command.baseName) {
            guard MailboxArguments.referenced(by: command.parsed) != nil else { return .reply(.bad("Mailbox name could not be read.")) }
            if let first = MailboxArguments.first(of: command.parsed) {
                guard let name = LuaFilter.readable(first, utf8: utf8) else { return .reply(.bad("Mailbox name could not be read.")) }
                mailbox = name
            }
        }
        guard let selected = LuaFilter.selected(context) else {
            return .reply(.bad("The selected mailbox's name could not be read."))
        }
        let session: LuaSessionTable
        do {
            session = try self.session(context)
        } catch {
            return failed(command: command, error.description, context: context)
        }
        let result = session.runtime.call(.command, session: session, selected: selected.name, logger: context.logger) { stack in
            lua_createtable(stack.state, 0, 6)
            stack.set("tag", command.tag)
            stack.set("name", command.baseName)
            stack.set("uid", command.parsed.isUID)
            stack.set("mailbox", mailbox)
            stack.set("args") { stack.push(arguments: command.arguments) }
            stack.set("line") { stack.push(LuaFilter.firstLine(of: command.original)) }
        }
        switch result {
        case .nothing, .forward(mailbox: nil):
            return next(command, context)
        case .forward(mailbox: let name?):
            guard let server = LuaFilter.mailboxName(name, utf8: utf8) else {
                return failed(command: command, "sluice.forward: the mailbox name is empty or has control characters", context: context)
            }
            guard MailboxArguments.first(of: command.parsed) != nil else {
                return failed(command: command, "sluice.forward{ mailbox = … } on \(command.baseName), which names no mailbox", context: context)
            }
            var first = true
            let rewritten = MailboxArguments.mapping(command.parsed) { _ in
                defer { first = false }
                return first ? server : nil
            }
            guard let rewritten else { return next(command, context) }  // the same name
            var command = command
            command.rewrite(rewritten)
            return next(command, context)
        case .reply(let status, let text):
            switch LuaReplyCheck.reply(status: status, text: text, command: command.baseName) {
            case .success(let reply): return .reply(reply)
            case .failure(let problem): return failed(command: command, "sluice.reply: \(problem.description)", context: context)
            }
        case .answer(let lines, let status, let text):
            if let problem = lines.lazy.compactMap(LuaReplyCheck.untaggedProblem).first {
                return failed(command: command, "sluice.answer: \(problem)", context: context)
            }
            switch LuaReplyCheck.reply(status: status, text: text, command: command.baseName) {
            case .success(let reply): return .answer(untagged: lines, reply: reply)
            case .failure(let problem): return failed(command: command, "sluice.answer: \(problem.description)", context: context)
            }
        case .drop:
            return failed(command: command, "sluice.drop() is for responses; refuse a command with sluice.reply", context: context)
        case .failed(let message):
            return failed(command: command, message, context: context)
        }
    }

    private func failed(command: ClientCommand, _ message: String, context: FilterContext) -> CommandOutcome {
        LuaFilter.errors.increment()
        context.logger.error("Lua rule failed; command refused", metadata: [
            "lua.script": "\(script.name)", "lua.error": "\(LuaFilter.loggable(message))", "imap.command": "\(command.name)",
        ])
        return .reply(LuaFilter.unavailable)
    }

    // MARK: - Responses

    public func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        let utf8 = context.utf8Enabled
        let name: String
        var number: UInt32?
        var mailbox: MailboxName?
        switch response.parsed {
        case .data(let data):
            name = data.name
            number = data.number
            if let list = ListResponse(data) {
                mailbox = list.mailbox
            } else if data.name == "STATUS" {
                guard let bytes = data.arguments.first?.stringBytes else { return unreadable(response, name, context: context) }
                mailbox = MailboxName(bytes: bytes)
            } else if ["LIST", "LSUB", "XLIST"].contains(data.name) {
                return unreadable(response, name, context: context)
            }
        case .status(let status):
            name = status.status.rawValue
        case .continuation:
            return next(response, context)
        }
        var mailboxName: String?
        if let mailbox {
            guard let decoded = LuaFilter.readable(mailbox, utf8: utf8) else { return unreadable(response, name, context: context) }
            mailboxName = decoded
        }
        guard let selected = LuaFilter.selected(context) else {
            return failed(response: name, "the selected mailbox's name could not be read", context: context)
        }
        let session: LuaSessionTable
        do {
            session = try self.session(context)
        } catch {
            return failed(response: name, error.description, context: context)
        }
        let result = session.runtime.call(.response, session: session, selected: selected.name, logger: context.logger) { stack in
            lua_createtable(stack.state, 0, 4)
            stack.set("name", name)
            stack.set("mailbox", mailboxName)
            if let number { stack.set("number", integer: Int(number)) }
            stack.set("line") { stack.push(LuaFilter.firstLine(of: response.original)) }
        }
        switch result {
        case .nothing, .forward(mailbox: nil):
            return next(response, context)
        case .drop:
            return .drop
        case .forward(mailbox: let shown?):
            guard mailbox != nil, case .data(var data) = response.parsed else {
                return failed(response: name, "sluice.forward{ mailbox = … } on \(name), which names no mailbox", context: context)
            }
            guard let client = LuaFilter.mailboxName(shown, utf8: utf8) else {
                return failed(response: name, "sluice.forward: the mailbox name is empty or has control characters", context: context)
            }
            data.arguments[data.name == "STATUS" ? 0 : 2] = .quoted(client.bytes)
            var response = response
            response.rewrite(.data(data))
            return next(response, context)
        case .reply, .answer:
            return failed(response: name, "sluice.reply and sluice.answer are for commands", context: context)
        case .failed(let message):
            return failed(response: name, message, context: context)
        }
    }

    /// A selected response with a mailbox the proxy cannot read: the
    /// script cannot judge it, so the client does not see it.
    private func unreadable(_ response: ServerResponse, _ name: String, context: FilterContext) -> ResponseOutcome {
        context.logger.notice("selected response dropped: its mailbox name could not be read",
                              metadata: ["lua.script": "\(script.name)", "imap.response": "\(name)"])
        return .drop
    }

    private func failed(response name: String, _ message: String, context: FilterContext) -> ResponseOutcome {
        LuaFilter.errors.increment()
        context.logger.error("Lua rule failed on a response; ending the session", metadata: [
            "lua.script": "\(script.name)", "lua.error": "\(LuaFilter.loggable(message))", "imap.response": "\(name)",
        ])
        return .endSession(reason: LuaFilter.responseFailure)
    }

    // MARK: - Session state

    /// This session's table in this thread's state, made on first use.
    private func session(_ context: FilterContext) throws(LuaScriptError) -> LuaSessionTable {
        let key = ObjectIdentifier(script)
        if let session = context.storage[key] as? LuaSessionTable { return session }
        let runtime = try script.runtime()
        let session = runtime.makeSession(user: context.user, clientIP: LuaFilter.host(of: context.clientAddress))
        context.storage[key] = session
        return session
    }

    /// `session.selected`: the selected mailbox's name, or `nil` when none is selected.
    struct Selected {
        var name: String?
    }

    /// What is selected; `nil` when a mailbox is selected whose name cannot be read.
    static func selected(_ context: FilterContext) -> Selected? {
        guard case .selected(let mailbox, _) = context.state else { return Selected(name: nil) }
        return readable(mailbox, utf8: context.utf8Enabled).map { Selected(name: $0) }
    }

    /// A mailbox's name for a script: decoded, and without control characters
    /// (`&AAo-` decodes to a line feed, which a script would write into a log
    /// line or a reply); `nil` when it cannot be one.
    static func readable(_ mailbox: MailboxName, utf8: Bool) -> String? {
        guard let name = mailbox.displayName(utf8: utf8), LuaReplyCheck.isPrintable(name) else { return nil }
        return name
    }

    /// Text a script produced, fit for one log line: control characters
    /// escaped (`\n` as `\x0a`), at most 1,024 bytes.
    static func loggable(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            if result.utf8.count >= 1024 {
                result += "…"
                break
            }
            if scalar.value < 0x20 || scalar.value == 0x7F {
                let hex = String(scalar.value, radix: 16)
                result += "\\x" + (hex.count < 2 ? "0" : "") + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// `HOST` of `HOST:PORT` or `[V6]:PORT`.
    static func host(of address: String?) -> String? {
        guard let address else { return nil }
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<close])
        }
        guard let colon = address.lastIndex(of: ":") else { return address }
        return String(address[..<colon])
    }

    /// A name from a script, encoded for the wire; `nil` when it cannot be one.
    static func mailboxName(_ name: String, utf8: Bool) -> MailboxName? {
        guard !name.isEmpty, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        return MailboxName(name, utf8: utf8)
    }

    /// The frame's first line without CRLF (up to a literal's `{n}`).
    static func firstLine(of frame: Frame) -> [UInt8] {
        guard var segment = frame.segments.first, var bytes = segment.readBytes(length: segment.readableBytes) else { return [] }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        return bytes
    }
}
