import CLua
import IMAPWire

/// Pushes the proxy's values onto a Lua stack and reads a script's answer
/// back, raw (never through a metatable, so no script code runs here).
struct LuaStack {
    let state: OpaquePointer

    func push(_ text: String) {
        var text = text
        text.withUTF8 { push(bytes: UnsafeRawBufferPointer($0)) }
    }

    func push(bytes: UnsafeRawBufferPointer) {
        lua_pushlstring(state, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    func push(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { push(bytes: $0) }
    }

    /// `table[key] = value` for the table on top of the stack (nil removes).
    func set(_ key: String, _ value: String?) {
        push(key)
        if let value { push(value) } else { lua_pushnil(state) }
        lua_rawset(state, -3)
    }

    func set(_ key: String, _ value: Bool) {
        push(key)
        lua_pushboolean(state, value ? 1 : 0)
        lua_rawset(state, -3)
    }

    func set(_ key: String, integer value: Int) {
        push(key)
        lua_pushinteger(state, lua_Integer(value))
        lua_rawset(state, -3)
    }

    /// `table[key] = <what push leaves on the stack>`.
    func set(_ key: String, pushing push: () -> Void) {
        self.push(key)
        push()
        lua_rawset(state, -3)
    }

    /// Arguments as a script sees them: atoms and strings (and NIL) as
    /// strings, lists as sequences, literals as `{ literal = SIZE }` (their
    /// bytes never reach Lua).
    func push(arguments: [IMAPToken]) {
        lua_checkstack(state, 4)
        lua_createtable(state, Int32(clamping: arguments.count), 0)
        for (index, token) in arguments.enumerated() {
            switch token {
            case .atom(let bytes), .quoted(let bytes):
                push(bytes)
            case .nilValue:
                push("NIL")
            case .literal(_, let size, _):
                lua_createtable(state, 0, 1)
                set("literal", integer: Int(clamping: size))
            case .list(let items):
                push(arguments: items)
            }
            lua_rawseti(state, -2, lua_Integer(index + 1))
        }
    }

    // MARK: - Reading

    func string(at index: Int32) -> String? {
        guard let bytes = bytes(at: index) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    func bytes(at index: Int32) -> [UInt8]? {
        guard lua_type(state, index) == LUA_TSTRING else { return nil }
        var length = 0
        guard let text = lua_tolstring(state, index, &length) else { return nil }
        return Array(UnsafeRawBufferPointer(start: text, count: length))
    }

    /// `table[key]` of the table at `table` (an absolute index), pushed; its Lua type.
    @discardableResult
    func field(_ key: String, of table: Int32) -> Int32 {
        push(key)
        return lua_rawget(state, table)
    }

    func pop() { lua_settop(state, -2) }
}
