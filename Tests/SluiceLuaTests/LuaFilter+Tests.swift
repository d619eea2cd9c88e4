import Foundation
import IMAPWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import SluiceFilters
@testable import SluiceLua

/// Frames one command or response from text.
private func frame(_ text: String, peer: IMAPPeer) throws -> Frame {
    var decoder = IMAPFrameDecoder(peer: peer)
    var buffer = ByteBuffer(string: text)
    return try #require(try decoder.next(&buffer))
}

/// Log lines a session's logger wrote (to see what a failure logs).
final class LogLines: @unchecked Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    var all: [String] { lines.withLockedValue { $0 } }
    func append(_ line: String) { lines.withLockedValue { $0.append(line) } }
}

struct CapturingLogHandler: LogHandler {
    let sink: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        sink.append("\(event.level) \(event.message) \(fields)")
    }
}

/// A session with one Lua rule, through the real engine.
private struct Session {
    let engine: FilterEngine
    let log = LogLines()

    init(_ source: String, limits: LuaLimits = .default, user: String = "alice") throws {
        let script = try LuaScript(source: Array(source.utf8), name: "test.lua", limits: limits)
        let sink = log
        let logger = Logger(label: "test") { _ in CapturingLogHandler(sink: sink) }
        let set = FilterSet([FilterSet.Entry(filter: LuaFilter(script: script))])
        engine = try #require(set.engine(user: user, clientAddress: "192.0.2.7:50000", upstreamCapabilities: [], logger: logger))
    }

    /// The proxy's answer to a command, or "forward" / "forward: <rewritten>".
    func command(_ text: String) throws -> String {
        switch engine.process(command: try frame(text, peer: .client), streamedLiteral: nil) {
        case .forwardOriginal: return "forward"
        case .forwardRewritten(let command):
            return "forward: " + String(buffer: IMAPEncoder.encode(command, options: EncodingOptions(receiver: .server)).bytes() ?? ByteBuffer())
        case .respond(let bytes): return String(buffer: bytes)
        }
    }

    func response(_ text: String) throws -> String {
        switch engine.process(response: try frame(text, peer: .server)) {
        case .forwardOriginal: return "forward"
        case .forwardRewritten(let bytes): return String(buffer: bytes)
        case .drop: return "drop"
        case .endSession(let reason): return "end: \(reason)"
        }
    }
}

@Suite("Lua rules")
struct LuaFilterTests {
    @Test("on_command refuses with sluice.reply, passes what it does not refuse")
    func reply() throws {
        let session = try Session("""
            commands = { "DELETE" }
            function on_command(cmd, session)
              if cmd.mailbox == "Keep" then return sluice.reply("NO", "[NOPERM] Keep stays") end
            end
            """)
        #expect(try session.command("a DELETE Keep\r\n") == "a NO [NOPERM] Keep stays\r\n")
        #expect(try session.command("b DELETE Trash\r\n") == "forward")
        #expect(try session.command("c NOOP\r\n") == "forward")
    }

    @Test("cmd carries tag, name, uid, mailbox, args (literals by size only) and line; session the user and client")
    func commandFields() throws {
        let session = try Session("""
            commands = { "FETCH", "XECHO" }
            local function show(value)
              if type(value) ~= "table" then return tostring(value) end
              if value.literal then return "literal:" .. value.literal end
              local parts = {}
              for i = 1, #value do parts[i] = show(value[i]) end
              return "(" .. table.concat(parts, " ") .. ")"
            end
            function on_command(cmd, session)
              return sluice.answer({ "XSHOW " .. table.concat({ cmd.tag, cmd.name, tostring(cmd.uid), tostring(cmd.mailbox),
                show(cmd.args), cmd.line, session.user, session.client_ip, tostring(session.selected) }, "|") },
                "OK", "Shown")
            end
            """)
        #expect(try session.command("t1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])\r\n")
            == "* XSHOW t1|FETCH|true|nil|(1:* (FLAGS BODY.PEEK[HEADER]))|t1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER])|alice|192.0.2.7|nil\r\nt1 OK Shown\r\n")
        #expect(try session.command("t2 XECHO {3}\r\nabc NIL \"q\"\r\n")
            == "* XSHOW t2|XECHO|false|nil|(literal:3 NIL q)|t2 XECHO {3}|alice|192.0.2.7|nil\r\nt2 OK Shown\r\n")
    }

    @Test("session.data lives as long as the session and is the session's own")
    func sessionData() throws {
        let source = """
            commands = { "NOOP", "XSTATS" }
            function on_command(cmd, session)
              session.data.count = (session.data.count or 0) + 1
              if cmd.name == "XSTATS" then return sluice.answer({ "XSTATS " .. session.data.count }, "OK", "Counted") end
            end
            """
        let first = try Session(source), second = try Session(source)
        #expect(try first.command("a NOOP\r\n") == "forward")
        #expect(try first.command("b NOOP\r\n") == "forward")
        #expect(try first.command("c XSTATS\r\n") == "* XSTATS 3\r\nc OK Counted\r\n")
        #expect(try second.command("d XSTATS\r\n") == "* XSTATS 1\r\nd OK Counted\r\n")
    }

    @Test("sluice.forward replaces the first mailbox argument, encoded for the server")
    func forwardMailbox() throws {
        let session = try Session("""
            commands = { "SELECT", "COPY", "NOOP" }
            function on_command(cmd)
              if cmd.name == "NOOP" then return sluice.forward{ mailbox = "X" } end
              if cmd.mailbox == "Old" then return sluice.forward{ mailbox = "Archive/Ünïcode" } end
            end
            """)
        #expect(try session.command("a SELECT Old\r\n") == "forward: a SELECT \"Archive/&ANw-n&AO8-code\"\r\n")
        #expect(try session.command("b UID COPY 1:3 Old\r\n") == "forward: b UID COPY 1:3 \"Archive/&ANw-n&AO8-code\"\r\n")
        // A command without a mailbox cannot be given one: the script is wrong, the command refused.
        #expect(try session.command("c NOOP\r\n").hasPrefix("c NO [UNAVAILABLE]"))
    }

    @Test("on_response drops and renames LIST and STATUS entries by name")
    func responses() throws {
        let session = try Session("""
            responses = { "LIST", "STATUS" }
            function on_response(resp)
              if resp.mailbox == "Secret" then return sluice.drop() end
              if resp.mailbox == "Sent Messages" then return sluice.forward{ mailbox = "Sent" } end
            end
            """)
        #expect(try session.response("* LIST (\\HasNoChildren) \"/\" Secret\r\n") == "drop")
        #expect(try session.response("* LIST (\\HasNoChildren) \"/\" \"Sent Messages\"\r\n") == "* LIST (\\HasNoChildren) \"/\" \"Sent\"\r\n")
        #expect(try session.response("* STATUS \"Sent Messages\" (MESSAGES 2)\r\n") == "* STATUS \"Sent\" (MESSAGES 2)\r\n")
        #expect(try session.response("* LIST () \"/\" INBOX\r\n") == "forward")
        #expect(try session.response("* 3 EXISTS\r\n") == "forward", "not selected: never enters Lua")
    }

    // MARK: - Fail closed

    @Test("an endless loop stops at the instruction limit: the command is refused, the next one runs")
    func endlessLoop() throws {
        let session = try Session("""
            commands = { "DELETE" }
            function on_command(cmd)
              if cmd.mailbox == "Loop" then while true do end end
            end
            """)
        #expect(try session.command("a DELETE Loop\r\n") == "a NO [UNAVAILABLE] The proxy's rules could not decide on this command.\r\n")
        #expect(session.log.all.contains { $0.contains("test.lua:3: instruction limit reached") && $0.contains("lua.script=test.lua") },
                "\(session.log.all)")
        #expect(try session.command("b DELETE Trash\r\n") == "forward")
    }

    @Test("a script cannot catch the limit with pcall and go on")
    func pcallDoesNotCatchTheLimit() throws {
        let session = try Session("""
            commands = { "NOOP" }
            function on_command(cmd)
              for i = 1, 1000000 do pcall(function() while true do end end) end
              return sluice.reply("OK", "escaped")
            end
            """)
        #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"))
    }

    @Test("allocating without end stops at the memory limit; the state recovers")
    func memory() throws {
        let session = try Session("""
            commands = { "NOOP", "XGROW" }
            local kept = {}
            function on_command(cmd)
              if cmd.name == "XGROW" then
                local t = {}
                for i = 1, 100000000 do t[i] = string.rep("x", 1000) .. i end
              end
            end
            """, limits: LuaLimits(memory: 4 << 20, instructions: 100_000_000))
        #expect(try session.command("a XGROW\r\n").hasPrefix("a NO [UNAVAILABLE]"))
        #expect(session.log.all.contains { $0.contains("over limits.lua_memory") })
        #expect(try session.command("b NOOP\r\n") == "forward")
    }

    @Test("os, io, require, dofile, loadfile and bytecode are not there: each fails closed")
    func sandbox() throws {
        for body in ["os.execute('true')", "io.open('/etc/passwd')", "require('os')", "dofile('/etc/passwd')",
                     "loadfile('/etc/passwd')", "return load('\\27Lua', 'x', 'b')()", "collectgarbage('stop')",
                     "setmetatable({}, { __gc = function() end })", "return string.dump(on_command)",
                     "debug.traceback()", "package.loadlib('x', 'y')"] {
            let session = try Session("""
                commands = { "NOOP" }
                function on_command(cmd) \(body) end
                """)
            #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"), "\(body)")
        }
    }

    @Test("work the count hook cannot see is paid for: xpcall handlers, C loops, backtracking, long strings")
    func unseenWork() throws {
        // Each body would run for minutes (or for ever) if only VM instructions were counted (red team L1, L2).
        let bodies = [
            "xpcall(function() while true do end end, function() while true do end end)",
            "table.move({}, 1, 1e15, 1, {})",
            "local s = string.rep('a', 3000); s:find('.-.-.-.-x')",
            "local s = string.rep('x', 200000); for i = 1, 300000 do s:find('y') end",
            "local s = string.rep('x', 200000); local t = string.rep('x', 199999) .. 'x'; for i = 1, 1e9 do local e = (s == t) end",
            "local t = {}; for i = 1, 1e5 do t[i] = i end; for i = 1, 1e6 do table.concat(t, ',') end",
            "local s = string.rep('ab', 100000); for i = 1, 1e6 do s:upper() end",
            "local t = {}; for i = 1, 1e5 do t[i] = i end; for i = 1, 1e6 do table.insert(t, 1, i) end",
            "string.rep('x', 300000)",
            "local s = string.rep('x', 200000) .. string.rep('y', 200000)",
            "local parts = {} for i = 1, 1e6 do parts[i] = 'x' end; local s = table.concat(parts)",
            // Red team 2: an empty string repeated, a __len the table functions obey, a reader given to load.
            "string.rep('', 3000000000)",
            "string.rep('', 1 << 62, '')",
            "local t = setmetatable({}, { __len = function() return 3e9 end }); table.insert(t, 1, 'x')",
            "local t = setmetatable({}, { __len = function() return 3e9 end }); table.remove(t, 1)",
            "local t = setmetatable({}, { __len = function() return 1e9 end }); table.unpack(t)",
            "local chunk = '--' .. string.rep('x', 200000); local f = load(function() return chunk end)",
        ]
        for body in bodies {
            let session = try Session("""
                commands = { "NOOP" }
                function on_command(cmd) \(body) end
                """, limits: LuaLimits(memory: 32 << 20, instructions: 1_000_000))
            #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"), "\(body)")
            #expect(session.log.all.contains { $0.contains("limit") }, "\(body): \(session.log.all)")
        }
    }

    @Test("a limit reached inside load (which returns the error) still fails the call (red team 2 #6)")
    func limitInsideLoad() throws {
        let session = try Session("""
            commands = { "NOOP" }
            function on_command(cmd)
              local f = load(function() while true do end end)
              return sluice.reply("NO", "decided after the limit")
            end
            """)
        #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"))
    }

    @Test("__close cannot keep a call running after its limit (red team 2 #3)")
    func closeHandlers() throws {
        // setmetatable refuses __close, and the strings' shared metatable cannot be changed.
        for body in ["local t <close> = setmetatable({}, { __close = function() while true do end end })",
                     "getmetatable('').__close = function() while true do end end",
                     "local mt = {}; local t = setmetatable({}, mt); mt.__close = function() local again <close> = t; while true do end end; local x <close> = t; while true do end"] {
            let session = try Session("""
                commands = { "NOOP" }
                function on_command(cmd) \(body) end
                """, limits: LuaLimits(memory: 256 << 20, instructions: 1_000_000))
            #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"), "\(body)")
        }
    }

    @Test("sluice.answer is bounded: at most 10,000 lines and 1 MiB (red team 2 #4)")
    func answerSize() throws {
        let session = try Session("""
            commands = { "XBIG", "XMANY" }
            local big = "XB " .. string.rep("y", 250000)
            function on_command(cmd)
              local t = {}
              if cmd.name == "XBIG" then for i = 1, 400 do t[i] = big end end
              if cmd.name == "XMANY" then for i = 1, 20000 do t[i] = "XA" end end
              return sluice.answer(t, "OK", "x")
            end
            """)
        #expect(try session.command("a XBIG\r\n").hasPrefix("a NO [UNAVAILABLE]"))
        #expect(try session.command("b XMANY\r\n").hasPrefix("b NO [UNAVAILABLE]"))
        #expect(session.log.all.contains { $0.contains("at most 10000") })
    }

    @Test("a script's log line cannot forge another: control characters are escaped")
    func logInjection() throws {
        let session = try Session("""
            commands = { "NOOP" }
            function on_command(cmd) sluice.log("notice", "one\\nlevel=error forged") end
            """)
        #expect(try session.command("a NOOP\r\n") == "forward")
        #expect(session.log.all.contains("notice one\\x0alevel=error forged lua.script=test.lua"), "\(session.log.all)")
    }

    @Test("a mailbox name that decodes to control characters is not handed to a script")
    func controlCharactersInNames() throws {
        let session = try Session("""
            commands = { "DELETE" }
            responses = { "LIST" }
            function on_command(cmd) end
            function on_response(resp) end
            """)
        #expect(try session.command("a DELETE \"foo&AAo-FAKE\"\r\n") == "a BAD Mailbox name could not be read.\r\n")
        #expect(try session.response("* LIST () \"/\" \"x&AA0ACg-y\"\r\n") == "drop")
    }

    @Test("answers cannot change what the client knows: no fake EXPUNGE, CAPABILITY, state codes, or OK to SELECT")
    func stateChangingAnswers() throws {
        let session = try Session("""
            commands = { "SELECT", "XA", "XB", "XC", "XD", "XE", "XF", "XOK" }
            function on_command(cmd)
              if cmd.name == "SELECT" then return sluice.reply("OK", "[READ-WRITE] selected by the proxy") end
              if cmd.name == "XA" then return sluice.answer({ "3 EXPUNGE" }, "OK", "x") end
              if cmd.name == "XB" then return sluice.answer({ "CAPABILITY IMAP4rev1 LOGINDISABLED" }, "OK", "x") end
              if cmd.name == "XC" then return sluice.answer({ "OK [UIDVALIDITY 1] x" }, "OK", "x") end
              if cmd.name == "XD" then return sluice.reply("NO", "see attached {5}") end
              if cmd.name == "XE" then return sluice.reply("NO", "[CAPABILITY IMAP4rev1] x") end
              if cmd.name == "XF" then return sluice.answer({ "FLAGS (\\\\Seen)" }, "OK", "x") end
              if cmd.name == "XOK" then return sluice.answer({ "XOK 1", "OK [ALERT] fine", "LIST () \\"/\\" X" }, "OK", "[TOOBIG] y") end
            end
            """)
        for name in ["SELECT INBOX", "XA", "XB", "XC", "XD", "XE", "XF"] {
            #expect(try session.command("t \(name)\r\n").hasPrefix("t NO [UNAVAILABLE]"), "\(name)")
        }
        #expect(try session.command("t XOK\r\n") == "* XOK 1\r\n* OK [ALERT] fine\r\n* LIST () \"/\" X\r\nt OK [TOOBIG] y\r\n")
    }

    @Test("a runtime error in on_response ends the session rather than passing the response")
    func responseError() throws {
        let session = try Session("""
            responses = { "LIST" }
            function on_response(resp) return resp.mailbox:upper() .. nil end
            """)
        #expect(try session.response("* LIST () \"/\" Secret\r\n") == "end: The proxy's rules could not decide on a response.")
        #expect(session.log.all.contains { $0.contains("test.lua:2:") })
    }

    @Test("values that would break the stream are refused: CRLF, literal announcements, BYE, bad codes and statuses")
    func badValues() throws {
        let session = try Session("""
            commands = { "XA", "XB", "XC", "XD", "XE", "XF", "XG", "XH" }
            function on_command(cmd)
              if cmd.name == "XA" then return sluice.reply("NO", "two\\r\\nx OK lines") end
              if cmd.name == "XB" then return sluice.answer({ "XB {5}" }, "OK", "x") end
              if cmd.name == "XC" then return sluice.answer({ "BYE now" }, "OK", "x") end
              if cmd.name == "XD" then return sluice.reply("PREAUTH", "x") end
              if cmd.name == "XE" then return sluice.reply("NO", "[TOO\\"BIG] x") end
              if cmd.name == "XF" then return { sluice = "reply", status = 5 } end
              if cmd.name == "XG" then return 42 end
              if cmd.name == "XH" then return sluice.reply("NO", "[UNCLOSED x") end
            end
            """)
        for name in ["XA", "XB", "XC", "XD", "XE", "XF", "XG", "XH"] {
            #expect(try session.command("t \(name)\r\n").hasPrefix("t NO [UNAVAILABLE]"), "\(name)")
        }
    }

    @Test("reading a global that does not exist is an error, not nil")
    func strictGlobals() throws {
        let session = try Session("""
            commands = { "NOOP" }
            function on_command(cmd) if undefined_flag then return sluice.reply("OK", "x") end end
            """)
        #expect(try session.command("a NOOP\r\n").hasPrefix("a NO [UNAVAILABLE]"))
        #expect(session.log.all.contains { $0.contains("global 'undefined_flag' is not defined") })
    }

    @Test("sluice.log writes to the session's log with the script's name")
    func log() throws {
        let session = try Session("""
            commands = { "DELETE" }
            function on_command(cmd) sluice.log("notice", "deleting " .. cmd.mailbox) end
            """)
        #expect(try session.command("a DELETE Old\r\n") == "forward")
        #expect(session.log.all.contains("notice deleting Old lua.script=test.lua"))
    }

    // MARK: - Loading

    @Test("scripts that do not load name the file and line")
    func loadErrors() {
        let cases: [(String, String)] = [
            ("commands = { \"NOOP\" \nfunction", "test.lua:2:"),
            ("local x = missing_table.field", "test.lua:1: global 'missing_table' is not defined"),
            ("commands = { \"UID FETCH\" }\nfunction on_command() end", "select FETCH"),
            ("commands = { \"NOOP\" }", "on_command is not defined"),
            ("function on_response() end", "responses selects nothing"),
            ("commands = \"NOOP\"", "must be a table"),
            ("while true do end", "instruction limit reached"),
        ]
        for (source, expected) in cases {
            do {
                _ = try LuaScript(source: Array(source.utf8), name: "test.lua")
                Issue.record("loaded: \(source)")
            } catch {
                #expect(error.description.contains(expected), "\(error.description)")
            }
        }
    }

    @Test("each thread gets its own state: globals are not shared across threads")
    func threads() async throws {
        let script = try LuaScript(source: Array("""
            commands = { "NOOP" }
            calls = 0
            function on_command(cmd) calls = calls + 1; return sluice.answer({ "XCALLS " .. calls }, "OK", "x") end
            """.utf8), name: "test.lua")
        let results = NIOLockedValueBox<[String]>([])
        let threads = (0..<2).map { _ in
            Thread {
                let set = FilterSet([FilterSet.Entry(filter: LuaFilter(script: script))])
                guard let engine = set.engine(user: "u", clientAddress: nil, upstreamCapabilities: [], logger: Logger(label: "t")),
                      let frame = try? frame("a NOOP\r\n", peer: .client),
                      case .respond(let bytes) = engine.process(command: frame, streamedLiteral: nil)
                else {
                    results.withLockedValue { $0.append("not answered") }
                    return
                }
                results.withLockedValue { $0.append(String(buffer: bytes)) }
                // Both threads alive at once: a thread that ended may hand its id to the next.
                while results.withLockedValue({ $0.count }) < 2 { usleep(1000) }
            }
        }
        for thread in threads { thread.start() }
        while results.withLockedValue({ $0.count }) < 2 { try await Task.sleep(nanoseconds: 1_000_000) }
        #expect(results.withLockedValue { $0 } == ["* XCALLS 1\r\na OK x\r\n", "* XCALLS 1\r\na OK x\r\n"])
    }
}
