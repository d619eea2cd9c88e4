import CLua

/// What `on_command` or `on_response` returned, read but not yet judged
/// (`LuaFilter` checks each value against what may go on the wire).
enum LuaReturn: Equatable {
    case nothing
    case reply(status: String, text: String)
    case answer(lines: [String], status: String, text: String)
    case forward(mailbox: String?)
    case drop
    case failed(String)

    /// What one `sluice.answer` may send (red team 2 #4: 400 lines of 250 KB were 100 MB on the wire).
    static let maxAnswerLines = 10_000
    static let maxAnswerBytes = 1 << 20

    /// Reads the value on top of the stack.
    static func read(_ stack: LuaStack) -> LuaReturn {
        let top = lua_gettop(stack.state)
        switch lua_type(stack.state, top) {
        case LUA_TNIL, LUA_TNONE:
            return .nothing
        case LUA_TTABLE:
            break
        default:
            let kind = String(cString: lua_typename(stack.state, lua_type(stack.state, top)))
            return .failed("returned a \(kind); expected nothing or a value of sluice.reply, answer, forward or drop")
        }
        func text(_ key: String) -> String? {
            defer { stack.pop() }
            stack.field(key, of: top)
            return stack.string(at: -1)
        }
        switch text("sluice") {
        case "reply":
            guard let status = text("status"), let message = text("text") else { return .failed("sluice.reply needs a status and a text") }
            return .reply(status: status, text: message)
        case "answer":
            guard let status = text("status"), let message = text("text") else { return .failed("sluice.answer needs a status and a text") }
            guard stack.field("lines", of: top) == LUA_TTABLE else {
                stack.pop()
                return .failed("sluice.answer needs a table of untagged lines")
            }
            var lines: [String] = []
            let count = lua_rawlen(stack.state, -1)
            guard count <= LuaReturn.maxAnswerLines else {
                stack.pop()
                return .failed("sluice.answer: \(count) untagged lines (at most \(LuaReturn.maxAnswerLines))")
            }
            var bytes = 0
            for index in 0..<count {
                lua_rawgeti(stack.state, -1, lua_Integer(index + 1))
                defer { stack.pop() }
                // Measured before it is copied: the same long string a thousand times is a thousand copies.
                if lua_type(stack.state, -1) == LUA_TSTRING { bytes += Int(lua_rawlen(stack.state, -1)) + 4 }
                guard bytes <= LuaReturn.maxAnswerBytes else {
                    stack.pop()
                    return .failed("sluice.answer: over \(LuaReturn.maxAnswerBytes) bytes of untagged lines")
                }
                guard let line = stack.string(at: -1) else { return .failed("an untagged line of sluice.answer is not UTF-8 text") }
                lines.append(line)
            }
            stack.pop()
            return .answer(lines: lines, status: status, text: message)
        case "forward":
            stack.field("mailbox", of: top)
            defer { stack.pop() }
            if lua_type(stack.state, -1) == LUA_TNIL { return .forward(mailbox: nil) }
            guard let mailbox = stack.string(at: -1) else { return .failed("sluice.forward's mailbox is not UTF-8 text") }
            return .forward(mailbox: mailbox)
        case "drop":
            return .drop
        default:
            return .failed("returned a table that is not a value of sluice.reply, answer, forward or drop")
        }
    }
}
