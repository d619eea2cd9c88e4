import CLua
import Testing
@testable import SluiceLua

/// The sandbox's own string.find / match / gmatch / gsub (patterns.c, which
/// charges every matching step) against Lua 5.4's library as the oracle:
/// the same chunk runs in a plain lua_State with the standard libraries and
/// in the sandbox, and must compute the same results.
@Suite("Lua patterns")
struct LuaPatternTests {
    /// Runs `chunk` (which sets the global `results` to a list of strings) with Lua's own library.
    private func reference(_ chunk: String) throws -> [String] {
        let state = try #require(luaL_newstate())
        defer { lua_close(state) }
        luaL_openlibs(state)
        guard luaL_loadstring(state, chunk) == LUA_OK, lua_pcallk(state, 0, 0, 0, 0, nil) == LUA_OK else {
            Issue.record("reference chunk failed: \(String(cString: lua_tolstring(state, -1, nil)))")
            return []
        }
        lua_getglobal(state, "results")
        var results: [String] = []
        for index in 1...max(1, lua_rawlen(state, -1)) {
            lua_rawgeti(state, -1, lua_Integer(index))
            var length = 0
            results.append(lua_tolstring(state, -1, &length).map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self)
            } ?? "nil")
            lua_settop(state, -2)
        }
        return results
    }

    private func sandboxed(_ chunk: String) throws -> [String] {
        let runtime = try LuaRuntime(source: Array(chunk.utf8), chunkName: "=patterns",
                                     limits: LuaLimits(memory: 64 << 20, instructions: 500_000_000))
        return try #require(try runtime.stringList(global: "results"))
    }

    /// A chunk that applies each function to each case and records what it
    /// returned (or "error"), as one string per call.
    private func chunk(cases: [(subject: String, pattern: String)]) -> String {
        func quoted(_ text: String) -> String {
            "\"" + text.unicodeScalars.map { scalar in
                switch scalar {
                case "\"": return "\\\""
                case "\\": return "\\\\"
                case "\0": return "\\0"
                default: return String(scalar)
                }
            }.joined() + "\""
        }
        let list = cases.map { "{\(quoted($0.subject)), \(quoted($0.pattern))}" }.joined(separator: ",\n")
        return """
            local cases = { \(list) }
            results = {}
            local function show(ok, ...)
              if not ok then return "error" end
              local parts = {}
              for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
              return table.concat(parts, ",")
            end
            local function all(s, p, init)
              local parts = {}
              for a, b, c in string.gmatch(s, p, init) do parts[#parts + 1] = tostring(a) .. "/" .. tostring(b) .. "/" .. tostring(c) end
              return table.concat(parts, ";")
            end
            for _, c in ipairs(cases) do
              local s, p = c[1], c[2]
              results[#results + 1] = table.concat({
                show(pcall(string.find, s, p)), show(pcall(string.find, s, p, 3)), show(pcall(string.find, s, p, -2)),
                show(pcall(string.match, s, p)), show(pcall(all, s, p)), show(pcall(all, s, p, 4)),
                show(pcall(all, s, p, #s + 2)), show(pcall(string.find, s, p, #s + 1)),
                show(pcall(string.gsub, s, p, "<%0>")), show(pcall(string.gsub, s, p, "%1", 2)),
                show(pcall(string.gsub, s, p, function(...) return select("#", ...) end)),
                show(pcall(string.gsub, s, p, { a = "A", ab = false })),
              }, " | ")
            end
            """
    }

    @Test("hand-picked patterns: classes, sets, anchors, quantifiers, captures, %b, %f, back-references")
    func handPicked() throws {
        let cases: [(String, String)] = [
            ("hello world", "o w"), ("hello world", "l+"), ("hello world", "l*"), ("hello world", "l-o"),
            ("hello world", "^h"), ("hello world", "d$"), ("hello world", "^world"), ("hello", "h?ello"),
            ("x = 1, y = 22", "(%a)%s*=%s*(%d+)"), ("key=val", "(%w+)=(%w+)"), ("  trim  ", "^%s*(.-)%s*$"),
            ("THE (quick) fox", "%((%a+)%)"), ("f(a(b)c)d", "%b()"), ("THE (quick) fox", "%f[%a]%a+"),
            ("hello", "()ll()"), ("abcabc", "(abc)%1"), ("aaa", "(a)%1%1"), ("[x]", "[]]"), ("a-b", "[a-]"),
            ("a.b", "%."), ("a%b", "%%"), ("a]b", "[%]]"), ("1a2b3c", "[^%d]"), ("Archive.2019", "^Archive[./]"),
            ("", ""), ("", ".-"), ("abc", ""), ("abc", "()"), ("aXb", "%u"), ("a\tb", "%c"), ("a b", "%S+"),
            ("hello", "(h)(e)(l)(l)(o)"), ("hello", "%"), ("hello", "[a"), ("hello", "(()"), ("hello", "%1"),
            ("hello", "%b"), ("hello", "%f"), ("hello", "%g+"), ("héllo", "[\u{80}-\u{FF}]+"), ("aaab", "a-b"),
            ("aaab", "a*b"), ("x", "x?x?x?xxx"), ("abc", "$"), ("abc", "^$"), ("a$b", "a$b"), ("a^b", "a^b"),
            ("Private", "^Private%f[%z]"), ("Private.x", "^Private%f[%z]"), ("a\0b", "%z"), ("a\0b", "%Z+"),
            ("a]b%", "[a-%%]"), ("a]b%", "[%]]"), ("-x", "[%w-]+"), ("ab", "[]"), ("ab", "[^]"), ("a", "[a-]"),
        ]
        try compare(cases)
    }

    /// Each case's results, ours against Lua's; the first difference is reported.
    private func compare(_ cases: [(String, String)]) throws {
        let text = chunk(cases: cases)
        let expected = try reference(text), actual = try sandboxed(text)
        #expect(actual.count == expected.count)
        for (index, (got, want)) in zip(actual, expected).enumerated() where got != want {
            Issue.record("subject \(cases[index].0.debugDescription), pattern \(cases[index].1.debugDescription):\n ours \(got)\n Lua  \(want)")
            break
        }
    }

    /// SplitMix64: the random cases are the same in every run (a failure repeats).
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("5,000 random patterns over a small alphabet give Lua's results", arguments: [1, 2, 3, 4, 5] as [UInt64])
    func random(seed: UInt64) throws {
        var generator = SeededGenerator(state: seed)
        let atoms = ["a", "b", ".", "%a", "%d", "[ab]", "[^a]", "[a-c]", "(", ")", "()", "%b()", "%f[%a]", "%1", " ",
                     "%s", "x", "^", "$", "%", "[", "%z", "%f[%z]", "[a-%%]", "[%]]", "%W", "[^%s]", "%u"]
        let quantifiers = ["", "", "", "*", "+", "-", "?"]
        var cases: [(String, String)] = []
        for _ in 0..<1000 {
            var pattern = ""
            for _ in 0..<Int.random(in: 1...5, using: &generator) {
                pattern += atoms.randomElement(using: &generator)! + quantifiers.randomElement(using: &generator)!
            }
            let subject = String((0..<Int.random(in: 0...12, using: &generator)).map { _ in
                "ab(1 )xb".randomElement(using: &generator)!
            })
            cases.append((subject, pattern))
        }
        try compare(cases)
    }
}
