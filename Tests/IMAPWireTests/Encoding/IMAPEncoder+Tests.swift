import IMAPWire
import NIOCore
import Testing

private func text(_ frame: EncodedFrame, original: Frame? = nil) -> String {
    frame.bytes(original: original).map { String(buffer: $0) } ?? "<missing literal>"
}

private func selectCommand(_ name: [UInt8], options: EncodingOptions) -> EncodedFrame {
    var encoder = IMAPEncoder(options: options)
    encoder.writeRaw("a SELECT ")
    encoder.writeMailbox(MailboxName(bytes: name))
    return encoder.finish()
}

@Suite("Encoder")
struct IMAPEncoderTests {
    @Test("strings take the cheapest form valid for the receiver", arguments: [
        ("Sent", EncodingOptions(receiver: .server), "a SELECT Sent\r\n"),
        ("Sent Items", EncodingOptions(receiver: .server), "a SELECT \"Sent Items\"\r\n"),
        ("say \"hi\\\"", EncodingOptions(receiver: .server), "a SELECT \"say \\\"hi\\\\\\\"\"\r\n"),
        ("NIL", EncodingOptions(receiver: .server), "a SELECT \"NIL\"\r\n"),
        ("", EncodingOptions(receiver: .server), "a SELECT \"\"\r\n"),
        ("a%b*", EncodingOptions(receiver: .server), "a SELECT \"a%b*\"\r\n"),
        ("Entw\u{FC}rfe", EncodingOptions(receiver: .server), "a SELECT {9}\r\nEntw\u{FC}rfe\r\n"),
        ("Entw\u{FC}rfe", EncodingOptions(receiver: .serverWithLiteralPlus), "a SELECT {9+}\r\nEntw\u{FC}rfe\r\n"),
        ("Entw\u{FC}rfe", EncodingOptions(receiver: .server, utf8Accepted: true), "a SELECT \"Entw\u{FC}rfe\"\r\n"),
        ("line\r\nbreak", EncodingOptions(receiver: .serverWithLiteralMinus), "a SELECT {11+}\r\nline\r\nbreak\r\n"),
    ])
    func stringForms(name: String, options: EncodingOptions, expected: String) {
        #expect(text(selectCommand(Array(name.utf8), options: options)) == expected)
    }

    @Test("LITERAL- allows non-synchronizing literals up to 4096 bytes only (RFC 7888)")
    func literalMinus() {
        let small = selectCommand(Array(repeating: 0x0A, count: 4096), options: EncodingOptions(receiver: .serverWithLiteralMinus))
        #expect(small.literals.first?.header.form == .nonSynchronizing)
        let large = selectCommand(Array(repeating: 0x0A, count: 4097), options: EncodingOptions(receiver: .serverWithLiteralMinus))
        #expect(large.literals.first?.header.form == .synchronizing)
        #expect(large.literals.first?.header.isSynchronizing == true)
    }

    @Test("a rewritten APPEND keeps its message literal by reference")
    func appendRewrite() throws {
        let original = try singleFrame("a APPEND \"Sent Items\" (\\Seen) {5}\r\nhello\r\n", peer: .client)
        var parsed = try original.command()
        parsed.arguments[0] = .atom(Array("Sent".utf8))
        let encoded = IMAPEncoder.encode(parsed, options: EncodingOptions(receiver: .serverWithLiteralPlus))
        guard case .original(let index) = encoded.literals.first?.payload else {
            Issue.record("literal was copied"); return
        }
        #expect(index == 0)
        #expect(text(encoded, original: original) == "a APPEND Sent (\\Seen) {5+}\r\nhello\r\n")
    }

    @Test("re-encoded frames parse back to the same tokens", arguments: [
        "a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)]<0.100>)\r\n",
        "a LOGIN \"fred \\\"x\\\"\" {3}\r\npw!\r\n",
        "a SEARCH CHARSET UTF-8 SUBJECT \"caf\u{E9}\" NOT (SEEN FLAGGED)\r\n",
        "a LIST (SUBSCRIBED) \"\" (\"INBOX\" \"%\") RETURN (CHILDREN)\r\n",
        "a ID NIL\r\n",
    ])
    func reencodeCommands(input: String) throws {
        let original = try singleFrame(input, peer: .client)
        let parsed = try original.command()
        let encoded = IMAPEncoder.encode(parsed, options: EncodingOptions(receiver: .server))
        let bytes = try #require(encoded.bytes(original: original))
        let again = try decodeFrames(Array(bytes.readableBytesView), peer: .client)
        #expect(again.count == 1)
        // The form may change (8-bit quoted becomes a literal for a server
        // without UTF8=ACCEPT); the values may not.
        #expect(try again[0].command().arguments.map(stringValues) == parsed.arguments.map(stringValues))
    }

    private func stringValues(_ token: IMAPToken) -> IMAPToken {
        switch token {
        case .literal(_, _, let bytes?): return .quoted(bytes)
        case .list(let elements): return .list(elements.map(stringValues))
        default: return token
        }
    }

    @Test("responses: data and status re-encode and parse back")
    func reencodeResponses() throws {
        let list = try data("* LIST (\\HasNoChildren) \".\" \"Sent Items\"\r\n")
        let listBytes = try #require(IMAPEncoder.encode(list, options: EncodingOptions(receiver: .client)).bytes())
        #expect(String(buffer: listBytes) == "* LIST (\\HasNoChildren) \".\" \"Sent Items\"\r\n")

        guard case .status(var ok) = try response("a OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n") else {
            Issue.record("not status"); return
        }
        ok.text.code = ResponseCode(name: "READ-ONLY")
        let okBytes = try #require(IMAPEncoder.encode(ok, options: EncodingOptions(receiver: .client)).bytes())
        #expect(String(buffer: okBytes) == "a OK [READ-ONLY] Select completed (0.001 + 0.000 secs).\r\n")

        let injected = StatusResponse(tag: "b", status: .no, text: ResponseText(
            code: ResponseCode(name: "NOPERM"), text: Array("no\r\n* OK injected".utf8)))
        let injectedBytes = try #require(IMAPEncoder.encode(injected, options: EncodingOptions(receiver: .client)).bytes())
        #expect(String(buffer: injectedBytes) == "b NO [NOPERM] no* OK injected\r\n")
    }

    @Test("unchanged frames re-emit their original bytes exactly")
    func byteExact() throws {
        let input = "a1  login   \"x\"  {2+}\r\nyz\r\n* 3 fetch (uid 1)\r\nDONE\r\n"
        let frames = try decodeFrames(input, peer: .client)
        var out = ByteBuffer()
        for frame in frames { frame.writeOriginal(to: &out) }
        #expect(String(buffer: out) == input)
    }
}
