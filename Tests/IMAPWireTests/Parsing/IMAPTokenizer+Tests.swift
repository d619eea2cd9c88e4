import IMAPWire
import Testing

private func atom(_ text: String) -> IMAPToken { .atom(Array(text.utf8)) }
private func quoted(_ text: String) -> IMAPToken { .quoted(Array(text.utf8)) }

@Suite("Tokens")
struct IMAPTokenizerTests {
    @Test("NIL is nil, \"NIL\" is a string")
    func nilVersusQuoted() throws {
        let parsed = try command("a X NIL nil \"NIL\" NILS\r\n")
        #expect(parsed.arguments == [.nilValue, .nilValue, quoted("NIL"), atom("NILS")])
    }

    @Test("escaped quotes and backslashes")
    func escapes() throws {
        let parsed = try command(#"a LOGIN "fred \"the\" user" "back\\slash""# + "\r\n")
        #expect(parsed.arguments == [quoted(#"fred "the" user"#), quoted(#"back\slash"#)])
    }

    @Test("8-bit bytes in quoted strings are kept as sent")
    func eightBit() throws {
        let parsed = try command("a SELECT \"caf\u{E9}\"\r\n")
        #expect(parsed.arguments == [.quoted([0x63, 0x61, 0x66, 0xC3, 0xA9])])
    }

    @Test("sections and partials stay one atom")
    func sections() throws {
        let parsed = try command("a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE \"FROM\")]<0.100> BODY[])\r\n")
        #expect(parsed.arguments == [
            atom("1:*"),
            .list([atom("FLAGS"), atom("BODY.PEEK[HEADER.FIELDS (DATE \"FROM\")]<0.100>"), atom("BODY[]")]),
        ])
    }

    @Test("a literal inside a parenthesized list inside FETCH")
    func literalInList() throws {
        let frame = try singleFrame("* 7 FETCH (UID 9 BODY[1] {3}\r\nabc FLAGS (\\Seen))\r\n", peer: .server)
        guard case .data(let data) = try frame.response() else { Issue.record("not data"); return }
        #expect(data.number == 7)
        #expect(data.arguments == [.list([
            atom("UID"), atom("9"), atom("BODY[1]"), .literal(index: 0, size: 3, bytes: Array("abc".utf8)),
            atom("FLAGS"), .list([atom("\\Seen")]),
        ])])
    }

    @Test("BODYSTRUCTURE of nested multiparts")
    func bodyStructure() throws {
        // A multipart/mixed holding a text part and a multipart/alternative (RFC 3501 §7.4.2 shapes).
        let text = "* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 1152 23)"
            + "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\") NIL NIL \"QUOTED-PRINTABLE\" 10 1)"
            + "(\"TEXT\" \"HTML\" (\"CHARSET\" \"UTF-8\") NIL NIL \"BASE64\" 20 1) \"ALTERNATIVE\")"
            + " \"MIXED\" (\"BOUNDARY\" \"xyz\") NIL NIL))\r\n"
        let fetch = try #require(FetchResponse(try data(text)))
        let structure = try #require(fetch["BODYSTRUCTURE"]?.list)
        #expect(structure.count == 6)
        let alternative = try #require(structure[1].list)
        #expect(alternative.last == quoted("ALTERNATIVE"))
        #expect(alternative[1].list?[1] == quoted("HTML"))
        #expect(structure[0].list?[3] == .nilValue)
        #expect(structure[2] == quoted("MIXED"))
    }

    @Test("nesting beyond the limit is a parse error, not a crash")
    func deepNesting() throws {
        let deep = String(repeating: "(", count: 10_000) + String(repeating: ")", count: 10_000)
        let frame = try singleFrame("a X \(deep)\r\n", peer: .client)
        #expect(throws: IMAPParseError.self) { try frame.command() }
        do {
            _ = try frame.command()
        } catch {
            #expect(error.kind == .nestingTooDeep(limit: IMAPLimits.client.maxNestingDepth))
        }
        #expect(frame.isUnderstood() == false)
    }

    @Test("too many tokens is a parse error")
    func tooManyTokens() throws {
        var limits = IMAPLimits.client
        limits.maxTokensPerFrame = 10
        let frame = try singleFrame("a X " + Array(repeating: "1", count: 20).joined(separator: " ") + "\r\n", peer: .client)
        do {
            _ = try frame.command(limits: limits)
            Issue.record("no error")
        } catch {
            #expect(error.kind == .tooManyTokens(limit: 10))
        }
    }

    @Test("malformed argument text is a parse error and the frame is not understood", arguments: [
        "a LOGIN \"unterminated\r\n", "a X )\r\n", "a X (a b\r\n", "a FETCH 1 BODY[HEADER\r\n",
    ])
    func malformed(text: String) throws {
        let frame = try singleFrame(text, peer: .client)
        #expect(throws: IMAPParseError.self) { try frame.command() }
        #expect(!frame.isUnderstood())
    }

    @Test("response codes: typed, free-form, and [ inside the text")
    func responseCodes() throws {
        guard case .status(let ok) = try response("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n") else {
            Issue.record("not status"); return
        }
        #expect(ok.text.code.flatMap(KnownResponseCode.init) == .permanentFlags(["\\Deleted", "\\Seen", "\\*"]))
        #expect(ok.text.text == Array("Limited".utf8))

        guard case .status(let plain) = try response("* OK see [this] here\r\n") else { Issue.record("not status"); return }
        #expect(plain.text.code == nil)
        #expect(plain.text.text == Array("see [this] here".utf8))

        guard case .status(let alert) = try response("* NO [ALERT] disk [almost] full\r\n") else { Issue.record("not status"); return }
        #expect(alert.status == .no)
        #expect(alert.text.code?.name == "ALERT")
        #expect(alert.text.text == Array("disk [almost] full".utf8))

        guard case .status(let bad) = try response("a BAD [BADCHARSET (UTF-8 \"x]\")] no\r\n") else { Issue.record("not status"); return }
        #expect(bad.text.code?.arguments == [.list([atom("UTF-8"), quoted("x]")])])
        #expect(bad.text.text == Array("no".utf8))

        guard case .status(let free) = try response("* OK [XFOO some \"free text] ok\r\n") else { Issue.record("not status"); return }
        #expect(free.text.code?.name == "XFOO")
    }

    @Test("sequence sets", arguments: [
        ("1:*", SequenceSet(elements: [.range(.number(1), .last)])),
        ("2,4:7,9,12:*", SequenceSet(elements: [
            .single(.number(2)), .range(.number(4), .number(7)), .single(.number(9)), .range(.number(12), .last),
        ])),
        ("$", SequenceSet(elements: [], isSavedResult: true)),
    ])
    func sequenceSets(text: String, expected: SequenceSet) {
        #expect(SequenceSet(Array(text.utf8)) == expected)
    }

    @Test("invalid sequence sets", arguments: ["0", "1:", "a", "1,,2", "", "4294967296"])
    func invalidSequenceSets(text: String) {
        #expect(SequenceSet(Array(text.utf8)) == nil)
    }

    @Test("sequence set membership with *")
    func membership() throws {
        let set = try #require(SequenceSet(Array("2,4:7,12:*".utf8)))
        #expect(set.contains(5, largest: 20))
        #expect(!set.contains(8, largest: 20))
        #expect(set.contains(20, largest: 20))
        #expect(!set.contains(3, largest: 20))
    }
}
