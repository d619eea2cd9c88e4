import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a script may use per call (`limits.lua_memory`, `limits.lua_instructions`).
public struct LuaLimits: Sendable, Hashable {
    /// Bytes one `lua_State` may hold (each event-loop thread has its own).
    public var memory: Int
    /// VM instructions per call of `on_command` / `on_response` (and for the top level).
    public var instructions: Int

    public static let `default` = LuaLimits(memory: 32 * 1024 * 1024, instructions: 1_000_000)

    public init(memory: Int, instructions: Int) {
        self.memory = memory
        self.instructions = instructions
    }
}

/// A script that does not load: `FILE:LINE: message` where Lua knows the line.
public struct LuaScriptError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The script of a `lua:` rule: read, compiled and run once when the
/// configuration loads (which reads its `commands` and `responses`), then
/// loaded again in each event-loop thread that first needs it.
///
/// A new configuration (SIGHUP) makes new `LuaScript`s; sessions that
/// started before keep the filters, and so the states, they started with.
public final class LuaScript: Sendable {
    /// The file as the configuration names it (in errors and log lines).
    public let name: String
    let source: [UInt8]
    public let limits: LuaLimits
    /// Base names of the commands `on_command` sees (`commands = { … }`).
    public let commands: Set<String>
    /// Names of the untagged responses `on_response` sees (`responses = { … }`).
    public let responses: Set<String>
    /// Each thread's state, by thread.
    private let runtimes = NIOLockedValueBox<[UInt: LuaRuntime]>([:])

    /// Compiles and runs `source` (the file `name`: errors read `name:LINE: …`),
    /// and checks what it selects against what it defines.
    public init(source: [UInt8], name: String, limits: LuaLimits = .default) throws(LuaScriptError) {
        self.name = name
        self.source = source
        self.limits = limits
        let runtime = try LuaRuntime(source: source, chunkName: "@" + name, limits: limits)
        let commands = try runtime.stringList(global: "commands") ?? []
        let responses = try runtime.stringList(global: "responses") ?? []
        for command in commands {
            let upper = command.uppercased()
            if upper.hasPrefix("UID ") {
                throw LuaScriptError("\(name): commands lists \(command); select \(upper.dropFirst(4)) (a base name selects its UID form too)")
            }
            guard LuaScript.isAtom(upper) else { throw LuaScriptError("\(name): commands lists \"\(command)\", which is no command name") }
        }
        for response in responses where !LuaScript.isAtom(response.uppercased()) {
            throw LuaScriptError("\(name): responses lists \"\(response)\", which is no response name")
        }
        if !commands.isEmpty && !runtime.definesOnCommand {
            throw LuaScriptError("\(name): commands are selected but on_command is not defined")
        }
        if !responses.isEmpty && !runtime.definesOnResponse {
            throw LuaScriptError("\(name): responses are selected but on_response is not defined")
        }
        if commands.isEmpty && runtime.definesOnCommand {
            throw LuaScriptError("\(name): on_command is defined but commands selects nothing (commands = { \"APPEND\", … })")
        }
        if responses.isEmpty && runtime.definesOnResponse {
            throw LuaScriptError("\(name): on_response is defined but responses selects nothing (responses = { \"LIST\", … })")
        }
        self.commands = Set(commands.map { $0.uppercased() })
        self.responses = Set(responses.map { $0.uppercased() })
        // The state that checked the script is not kept: the thread that loads a
        // configuration (at start, or a reload's task) serves no sessions.
    }

    /// This thread's state, created on first use; throws when the script
    /// does not load here (memory, or a top level that does not always succeed).
    func runtime() throws(LuaScriptError) -> LuaRuntime {
        let thread = LuaScript.currentThread
        if let runtime = runtimes.withLockedValue({ $0[thread] }) { return runtime }
        let runtime = try LuaRuntime(source: source, chunkName: "@" + name, limits: limits)
        runtimes.withLockedValue { $0[thread] = runtime }
        return runtime
    }

    #if canImport(Glibc)
    static var currentThread: UInt { UInt(pthread_self()) }
    #else
    static var currentThread: UInt { UInt(bitPattern: pthread_self()) }
    #endif

    /// Command and response names: letters, digits, `-`, `_` and `.`.
    static func isAtom(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
    }

    /// `@name` → `name`.
    static func displayName(_ chunkName: String) -> String {
        chunkName.hasPrefix("@") ? String(chunkName.dropFirst()) : chunkName
    }
}
