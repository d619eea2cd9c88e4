import IMAPWire
import NIOCore
import Testing

/// Peer bytes never trap the tokenizer (review S1): an escape or a section
/// that runs into a literal's place is a parse error, and a frame of any
/// shape parses or fails without reading past its text.
@Suite("Tokens: no traps")
struct IMAPTokenizerTrapTests {
    @Test("an escape right before a literal is an error, not a trap", arguments: [
        "a NOOP \"\\{1}\r\nZ\"\"\r\n",
        "a FETCH 1 BODY[\"\\{1}\r\nZ\"\"]\r\n",
        "a LOGIN \"\\{1}\r\nZ {1}\r\nY\r\n",
        "a X \"\\",
    ])
    func escapeBeforeLiteral(text: String) throws {
        let wire = text.hasSuffix("\r\n") ? text : text + "\r\n"
        let frame = try singleFrame(wire, peer: .client)
        #expect(throws: IMAPParseError.self) { try frame.command() }
    }

    @Test("the same in a server response", arguments: [
        "* SEARCH \"\\{1}\r\nZ\"\"\r\n",
        "* 1 FETCH (BODY[\"\\{1}\r\nZ\"\"] NIL)\r\n",
    ])
    func escapeBeforeLiteralInResponse(text: String) throws {
        let frame = try singleFrame(text, peer: .server)
        _ = try? frame.response()  // parses or throws; must not trap
        _ = frame.isUnderstood()
    }

    @Test("a mailbox name with an unclosed [ is an atom in server output")
    func openBracketInListResponse() throws {
        let parsed = try data("* LIST (\\HasNoChildren) \".\" Secret[x\r\n")
        #expect(parsed.arguments.last == .atom(Array("Secret[x".utf8)))
        #expect(ListResponse(parsed)?.mailbox.bytes == Array("Secret[x".utf8))
    }

    @Test("an unclosed [ in a command is still an error (what a rule cannot read is refused)")
    func openBracketInCommand() throws {
        let frame = try singleFrame("a DELETE Secret x[\r\n", peer: .client)
        #expect(throws: IMAPParseError.self) { try frame.command() }
    }

    /// A small deterministic fuzzer over IMAP syntax: every generated frame
    /// is framed, then parsed as command and response; the test fails by
    /// trapping (the bug class it guards against), or by a framer error on
    /// text it built to be well framed.
    @Test("random frames over IMAP syntax never trap", arguments: [UInt64(1), 2, 3, 4])
    func randomFrames(seed: UInt64) throws {
        let pieces = ["\"", "\\", "[", "]", "(", ")", " ", "NIL", "x", "BODY[", "{0}\r\n", "{1}\r\nZ", "{2+}\r\nab",
                      "~{1}\r\nQ", "\\\"", "\\\\", "<0.1>", "*", "1:*", "%"]
        var generator = SeededGenerator(seed: seed)
        for _ in 0..<3_000 {
            var line = "a X "
            for _ in 0..<(generator.next() % 12) { line += pieces[Int(generator.next() % UInt64(pieces.count))] }
            line += "\r\n"
            for peer in [IMAPPeer.client, .server] {
                let text = peer == .server ? "* " + line.dropFirst(2) : Substring(line)
                guard let frames = try? decodeFrames(String(text), peer: peer) else { continue }
                for frame in frames {
                    _ = try? frame.command()
                    _ = try? frame.response()
                    _ = frame.isUnderstood()
                }
            }
        }
    }
}

