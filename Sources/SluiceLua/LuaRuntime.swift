import CLua
import CSluiceLua
import Logging
import NIOConcurrencyHelpers

/// One sandboxed `lua_State` with a script loaded (sandbox.c builds the
/// sandbox). A script has one per event-loop thread: Lua states are not
/// thread-safe, and sessions never leave their loop, so no call takes a lock.
///
/// Every call into script code is protected (`sluice_lua_call`); what Swift
/// does with the state in between (pushing a command, reading a result)
/// never runs script code: tables are read and written raw, so a metatable
/// the script set cannot run outside the limits.
final class LuaRuntime: @unchecked Sendable {
    // @unchecked: used only on the thread that created it (`LuaScript.runtime()`
    // hands each thread its own). A session that ends elsewhere gives its
    // table back through `released`, under a lock.
    private var sandbox: OpaquePointer?
    let chunkName: String
    let limits: LuaLimits
    private var onCommand = LUA_NOREF
    private var onResponse = LUA_NOREF
    /// Session tables to free, from sessions that ended (on any thread).
    private let released = NIOLockedValueBox<[Int32]>([])
    /// Where `sluice.log` writes during a call, with the session's metadata.
    fileprivate var logger: Logger?

    /// Creates the state and runs the script's top level.
    init(source: [UInt8], chunkName: String, limits: LuaLimits) throws(LuaScriptError) {
        self.chunkName = chunkName
        self.limits = limits
        guard let sandbox = sluice_lua_new(limits.memory, Unmanaged.passUnretained(self).toOpaque(), luaLog) else {
            throw LuaScriptError("\(LuaScript.displayName(chunkName)): cannot create a Lua state")
        }
        self.sandbox = sandbox
        let status = source.withUnsafeBytes { bytes in
            let text = bytes.baseAddress?.assumingMemoryBound(to: CChar.self)
            return text.map { sluice_lua_run(sandbox, $0, bytes.count, chunkName, limits.instructions) }
                ?? sluice_lua_run(sandbox, "", 0, chunkName, limits.instructions)
        }
        guard status == LUA_OK else { throw LuaScriptError(failure()) }
        onCommand = globalFunction("on_command")
        onResponse = globalFunction("on_response")
        lua_settop(state, 0)
    }

    deinit {
        sluice_lua_close(sandbox)
    }

    private var state: OpaquePointer { sluice_lua_state(sandbox) }

    var definesOnCommand: Bool { onCommand != LUA_NOREF }
    var definesOnResponse: Bool { onResponse != LUA_NOREF }

    /// A reference to the global function `name`, or `LUA_NOREF`.
    private func globalFunction(_ name: String) -> Int32 {
        sluice_lua_push_globals(sandbox)
        lua_pushstring(state, name)
        guard lua_rawget(state, -2) == LUA_TFUNCTION else {
            lua_settop(state, 0)
            return LUA_NOREF
        }
        let ref = sluice_lua_ref(sandbox)
        lua_settop(state, 0)
        return ref
    }

    /// The global `name` as a list of strings: `nil` when it is not set;
    /// throws when it is set to anything but a sequence of strings.
    func stringList(global name: String) throws(LuaScriptError) -> [String]? {
        defer { lua_settop(state, 0) }
        sluice_lua_push_globals(sandbox)
        lua_pushstring(state, name)
        switch lua_rawget(state, -2) {
        case LUA_TNIL:
            return nil
        case LUA_TTABLE:
            var result: [String] = []
            let count = lua_rawlen(state, -1)
            for index in 0..<count {
                guard lua_rawgeti(state, -1, lua_Integer(index + 1)) == LUA_TSTRING, let text = string(at: -1) else {
                    throw LuaScriptError("\(LuaScript.displayName(chunkName)): \(name) must list names as strings")
                }
                result.append(text)
                lua_settop(state, -2)
            }
            return result
        default:
            throw LuaScriptError("\(LuaScript.displayName(chunkName)): \(name) must be a table of names, e.g. { \"LIST\" }")
        }
    }

    // MARK: - Calls

    enum Hook { case command, response }

    /// Calls `on_command` or `on_response` with the value `push` leaves on
    /// the stack and the session's table; reads what it returned.
    func call(_ hook: Hook, session: LuaSessionTable, selected: String?, logger: Logger,
              push: (LuaStack) -> Void) -> LuaReturn {
        freeReleasedSessions()
        lua_settop(state, 0)
        sluice_lua_push_ref(sandbox, hook == .command ? onCommand : onResponse)
        let stack = LuaStack(state: state)
        push(stack)
        sluice_lua_push_ref(sandbox, session.ref)
        stack.set("selected", selected)
        self.logger = logger
        let status = sluice_lua_call(sandbox, 2, limits.instructions)
        self.logger = nil
        defer { lua_settop(state, 0) }
        // A limit reached inside something that caught it (load returns its
        // error) still ends the call: its verdict was decided over the limit.
        guard status == LUA_OK, sluice_lua_last_limit(sandbox) == SLUICE_LUA_WITHIN_LIMITS else {
            if status == LUA_OK { lua_pushstring(state, "a limit was reached inside the call") }
            return .failed(failure())
        }
        return LuaReturn.read(stack)
    }

    /// The error on the stack, with the limit that caused it.
    private func failure() -> String {
        var message = string(at: -1) ?? "error object is not a string"
        switch sluice_lua_last_limit(sandbox) {
        case SLUICE_LUA_INSTRUCTION_LIMIT: message += " (over limits.lua_instructions: \(limits.instructions))"
        case SLUICE_LUA_MEMORY_LIMIT:
            message += " (over limits.lua_memory: \(limits.memory) bytes, or a string over 256 KiB)"
        case SLUICE_LUA_TIME_LIMIT: message += " (the call ran over 250 ms)"
        default: break
        }
        lua_settop(state, 0)
        return message
    }

    private func string(at index: Int32) -> String? {
        guard lua_type(state, index) == LUA_TSTRING else { return nil }
        var length = 0
        guard let text = lua_tolstring(state, index, &length) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: text, count: length), as: UTF8.self)
    }

    // MARK: - Sessions

    /// The `session` table of a new IMAP session.
    func makeSession(user: String, clientIP: String?) -> LuaSessionTable {
        lua_settop(state, 0)
        let stack = LuaStack(state: state)
        lua_createtable(state, 0, 4)
        stack.set("user", user)
        stack.set("client_ip", clientIP)
        lua_pushstring(state, "data")
        lua_createtable(state, 0, 0)
        lua_rawset(state, -3)
        let ref = sluice_lua_ref(sandbox)
        return LuaSessionTable(ref: ref, runtime: self)
    }

    /// A session ended (its table may be freed on the next call on this thread).
    func release(_ ref: Int32) {
        released.withLockedValue { $0.append(ref) }
    }

    private func freeReleasedSessions() {
        let refs = released.withLockedValue { refs in
            defer { refs.removeAll() }
            return refs
        }
        for ref in refs { sluice_lua_unref(sandbox, ref) }
    }

    // MARK: - sluice.log

    fileprivate func log(level: String, message: String) -> Bool {
        let levels: [String: Logger.Level] = [
            "debug": .debug, "info": .info, "notice": .notice, "warning": .warning, "error": .error,
        ]
        guard let level = levels[level] else { return false }
        logger?.log(level: level, "\(LuaFilter.loggable(message))", metadata: ["lua.script": "\(LuaScript.displayName(chunkName))"])
        return true
    }
}

/// `sluice.log`'s Swift side: both arguments are strings (the prelude
/// checked), so reading them allocates nothing and cannot raise an error
/// here, where it would unwind through Swift.
private let luaLog: lua_CFunction = { state in
    guard let state, let owner = sluice_lua_owner(state) else { return 0 }
    let runtime = Unmanaged<LuaRuntime>.fromOpaque(owner).takeUnretainedValue()
    var levelLength = 0, messageLength = 0
    guard let level = lua_tolstring(state, 1, &levelLength), let message = lua_tolstring(state, 2, &messageLength) else {
        lua_pushinteger(state, 1)
        return 1
    }
    let known = runtime.log(
        level: String(decoding: UnsafeRawBufferPointer(start: level, count: levelLength), as: UTF8.self),
        message: String(decoding: UnsafeRawBufferPointer(start: message, count: messageLength), as: UTF8.self))
    lua_pushinteger(state, known ? 0 : 1)
    return 1
}
