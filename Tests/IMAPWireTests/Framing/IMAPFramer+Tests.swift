import IMAPWire
import NIOCore
import Testing

/// The RFC 3501 §6.3.11 example message (310 bytes with CRLF line ends).
let rfc3501AppendMessage = [
    "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
    "From: Fred Foobar <foobar@Blurdybloop.COM>",
    "Subject: afternoon meeting",
    "To: mooch@owatagu.siam.edu",
    "Message-Id: <B27397-0100000@Blurdybloop.COM>",
    "MIME-Version: 1.0",
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
    "",
    "Hello Joe, do you think we can meet at 3:30 tomorrow?",
    "",
].joined(separator: "\r\n")

struct FramingVector: CustomStringConvertible, Sendable {
    var name: String
    var peer: IMAPPeer
    var input: String
    var expected: [FrameSummary]
    var description: String { name }
}

let clientVectors: [FramingVector] = [
    FramingVector(name: "RFC 3501 LOGIN", peer: .client, input: "a001 LOGIN SMITH SESAME\r\n", expected: [
        FrameSummary(.command, "a001", "LOGIN", bytes: "a001 LOGIN SMITH SESAME\r\n"),
    ]),
    FramingVector(
        name: "RFC 3501 §6.3.11 APPEND with a synchronizing literal", peer: .client,
        input: "A003 APPEND saved-messages (\\Seen) {310}\r\n\(rfc3501AppendMessage)\r\n",
        expected: [
            FrameSummary(.command, "A003", "APPEND", literals: [310],
                         bytes: "A003 APPEND saved-messages (\\Seen) {310}\r\n\(rfc3501AppendMessage)\r\n"),
        ]),
    FramingVector(name: "RFC 7888 LITERAL+", peer: .client, input: "A004 APPEND INBOX {5+}\r\nhello\r\nA005 NOOP\r\n", expected: [
        FrameSummary(.command, "A004", "APPEND", literals: [5], bytes: "A004 APPEND INBOX {5+}\r\nhello\r\n"),
        FrameSummary(.command, "A005", "NOOP", bytes: "A005 NOOP\r\n"),
    ]),
    FramingVector(name: "{n-} literal", peer: .client, input: "a LOGIN {3-}\r\nbob {6-}\r\nsecret\r\n", expected: [
        FrameSummary(.command, "a", "LOGIN", literals: [3, 6], bytes: "a LOGIN {3-}\r\nbob {6-}\r\nsecret\r\n"),
    ]),
    FramingVector(name: "{0} literal", peer: .client, input: "a APPEND box {0}\r\n\r\nb NOOP\r\n", expected: [
        FrameSummary(.command, "a", "APPEND", literals: [0], bytes: "a APPEND box {0}\r\n\r\n"),
        FrameSummary(.command, "b", "NOOP", bytes: "b NOOP\r\n"),
    ]),
    FramingVector(name: "RFC 3516 literal8 with NUL", peer: .client, input: "a APPEND INBOX ~{5}\r\nhe\0lo\r\n", expected: [
        FrameSummary(.command, "a", "APPEND", literals: [5], bytes: "a APPEND INBOX ~{5}\r\nhe\0lo\r\n"),
    ]),
    FramingVector(
        name: "RFC 3502 MULTIAPPEND", peer: .client,
        input: "A003 APPEND saved (\\Seen) {4}\r\nabcd (\\Seen) \" 7-Feb-1994 22:43:04 -0800\" {3}\r\nxyz\r\n",
        expected: [
            FrameSummary(.command, "A003", "APPEND", literals: [4, 3],
                         bytes: "A003 APPEND saved (\\Seen) {4}\r\nabcd (\\Seen) \" 7-Feb-1994 22:43:04 -0800\" {3}\r\nxyz\r\n"),
        ]),
    FramingVector(
        name: "literal inside a list", peer: .client,
        input: "a SETMETADATA INBOX (/private/comment {11}\r\nhello world)\r\n",
        expected: [
            FrameSummary(.command, "a", "SETMETADATA", literals: [11],
                         bytes: "a SETMETADATA INBOX (/private/comment {11}\r\nhello world)\r\n"),
        ]),
    FramingVector(name: "literal containing CRLF and braces", peer: .client, input: "a LOGIN {8}\r\n{1}\r\n\r\nx pw\r\n", expected: [
        FrameSummary(.command, "a", "LOGIN", literals: [8], bytes: "a LOGIN {8}\r\n{1}\r\n\r\nx pw\r\n"),
    ]),
    FramingVector(name: "RFC 2177 IDLE and DONE", peer: .client, input: "A001 IDLE\r\nDONE\r\nA002 NOOP\r\n", expected: [
        FrameSummary(.command, "A001", "IDLE", bytes: "A001 IDLE\r\n"),
        FrameSummary(.idleDone, nil, "DONE", bytes: "DONE\r\n"),
        FrameSummary(.command, "A002", "NOOP", bytes: "A002 NOOP\r\n"),
    ]),
    FramingVector(name: "IDLE refused, next command", peer: .client, input: "a idle\r\nb NOOP\r\n", expected: [
        FrameSummary(.command, "a", "IDLE", bytes: "a idle\r\n"),
        FrameSummary(.command, "b", "NOOP", bytes: "b NOOP\r\n"),
    ]),
    FramingVector(
        name: "AUTHENTICATE PLAIN with a SASL line", peer: .client,
        input: "a AUTHENTICATE PLAIN\r\nAGJvYgBzZWNyZXQ=\r\nb SELECT INBOX\r\n",
        expected: [
            FrameSummary(.command, "a", "AUTHENTICATE", bytes: "a AUTHENTICATE PLAIN\r\n"),
            FrameSummary(.saslResponse, nil, nil, bytes: "AGJvYgBzZWNyZXQ=\r\n"),
            FrameSummary(.command, "b", "SELECT", bytes: "b SELECT INBOX\r\n"),
        ]),
    FramingVector(
        name: "AUTHENTICATE LOGIN, two SASL lines, then a cancelled exchange", peer: .client,
        input: "a AUTHENTICATE LOGIN\r\nYm9i\r\nc2VjcmV0\r\nb AUTHENTICATE XOAUTH2\r\n*\r\nc NOOP\r\n",
        expected: [
            FrameSummary(.command, "a", "AUTHENTICATE", bytes: "a AUTHENTICATE LOGIN\r\n"),
            FrameSummary(.saslResponse, nil, nil, bytes: "Ym9i\r\n"),
            FrameSummary(.saslResponse, nil, nil, bytes: "c2VjcmV0\r\n"),
            FrameSummary(.command, "b", "AUTHENTICATE", bytes: "b AUTHENTICATE XOAUTH2\r\n"),
            FrameSummary(.saslResponse, nil, nil, bytes: "*\r\n"),
            FrameSummary(.command, "c", "NOOP", bytes: "c NOOP\r\n"),
        ]),
    FramingVector(name: "UID FETCH name", peer: .client, input: "a uid fetch 1:* (FLAGS)\r\n", expected: [
        FrameSummary(.command, "a", "UID FETCH", bytes: "a uid fetch 1:* (FLAGS)\r\n"),
    ]),
    FramingVector(name: "bare LF terminators", peer: .client, input: "a NOOP\nb LOGIN {2}\nab\n", expected: [
        FrameSummary(.command, "a", "NOOP", bytes: "a NOOP\n"),
        FrameSummary(.command, "b", "LOGIN", literals: [2], bytes: "b LOGIN {2}\nab\n"),
    ]),
    FramingVector(name: "an atom ending in } is not a literal", peer: .client, input: "a SEARCH KEYWORD x}\r\n", expected: [
        FrameSummary(.command, "a", "SEARCH", bytes: "a SEARCH KEYWORD x}\r\n"),
    ]),
    FramingVector(name: "{5} inside a quoted string at line end is not a literal", peer: .client,
                  input: "a LOGIN bob \"{5}\"\r\n", expected: [
        FrameSummary(.command, "a", "LOGIN", bytes: "a LOGIN bob \"{5}\"\r\n"),
    ]),
    FramingVector(name: "empty line and unknown command pass", peer: .client, input: "\r\nx XYZZY (((\r\n", expected: [
        FrameSummary(.command, nil, nil, bytes: "\r\n"),
        FrameSummary(.command, "x", "XYZZY", bytes: "x XYZZY (((\r\n"),
    ]),
]

let serverVectors: [FramingVector] = [
    FramingVector(name: "greeting with CAPABILITY code", peer: .server,
                  input: "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] Dovecot ready.\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "OK", bytes: "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] Dovecot ready.\r\n"),
    ]),
    FramingVector(
        name: "FETCH with a body literal", peer: .server,
        input: "* 12 FETCH (FLAGS (\\Seen) BODY[HEADER] {5}\r\nab\r\nc UID 7)\r\na OK done\r\n",
        expected: [
            FrameSummary(.untaggedResponse, "*", "FETCH", literals: [5],
                         bytes: "* 12 FETCH (FLAGS (\\Seen) BODY[HEADER] {5}\r\nab\r\nc UID 7)\r\n"),
            FrameSummary(.taggedResponse, "a", "OK", bytes: "a OK done\r\n"),
        ]),
    FramingVector(name: "FETCH with {0}", peer: .server, input: "* 1 FETCH (BODY[] {0}\r\n)\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "FETCH", literals: [0], bytes: "* 1 FETCH (BODY[] {0}\r\n)\r\n"),
    ]),
    FramingVector(name: "RFC 3516 BINARY literal8", peer: .server, input: "* 3 FETCH (BINARY[] ~{5}\r\nab\0cd)\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "FETCH", literals: [5], bytes: "* 3 FETCH (BINARY[] ~{5}\r\nab\0cd)\r\n"),
    ]),
    FramingVector(name: "continuation requests", peer: .server, input: "+ idling\r\n+ \r\n+\r\n+ YGgGCSqGSIb3EgECAgIAb1kwV6A=\r\n", expected: [
        FrameSummary(.continuationRequest, "+", nil, bytes: "+ idling\r\n"),
        FrameSummary(.continuationRequest, "+", nil, bytes: "+ \r\n"),
        FrameSummary(.continuationRequest, "+", nil, bytes: "+\r\n"),
        FrameSummary(.continuationRequest, "+", nil, bytes: "+ YGgGCSqGSIb3EgECAgIAb1kwV6A=\r\n"),
    ]),
    FramingVector(name: "{n} at the end of status text is text", peer: .server,
                  input: "* OK text ending with {5}\r\na1 NO failed {3}\r\n* BYE going {3}\r\n+ send {4}\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "OK", bytes: "* OK text ending with {5}\r\n"),
        FrameSummary(.taggedResponse, "a1", "NO", bytes: "a1 NO failed {3}\r\n"),
        FrameSummary(.untaggedResponse, "*", "BYE", bytes: "* BYE going {3}\r\n"),
        FrameSummary(.continuationRequest, "+", nil, bytes: "+ send {4}\r\n"),
    ]),
    FramingVector(name: "LIST with a literal mailbox name", peer: .server, input: "* LIST () \"/\" {6}\r\nfoo\"ba\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "LIST", literals: [6], bytes: "* LIST () \"/\" {6}\r\nfoo\"ba\r\n"),
    ]),
    FramingVector(name: "[ inside response text", peer: .server, input: "* OK see [this] here\r\n* 5 EXISTS\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "OK", bytes: "* OK see [this] here\r\n"),
        FrameSummary(.untaggedResponse, "*", "EXISTS", bytes: "* 5 EXISTS\r\n"),
    ]),
    FramingVector(name: "unknown untagged response passes", peer: .server, input: "* XWEIRD ((( \"unbalanced\r\n", expected: [
        FrameSummary(.untaggedResponse, "*", "XWEIRD", bytes: "* XWEIRD ((( \"unbalanced\r\n"),
    ]),
]

@Suite("IMAPFramer")
struct IMAPFramerTests {
    @Test("client vectors frame identically under every split", arguments: clientVectors, Split.standard)
    func clientVector(vector: FramingVector, split: Split) throws {
        let frames = try decodeFrames(Array(vector.input.utf8), peer: vector.peer, split: split)
        #expect(frames.map(FrameSummary.init) == vector.expected)
    }

    @Test("server vectors frame identically under every split", arguments: serverVectors, Split.standard)
    func serverVector(vector: FramingVector, split: Split) throws {
        let frames = try decodeFrames(Array(vector.input.utf8), peer: vector.peer, split: split)
        #expect(frames.map(FrameSummary.init) == vector.expected)
    }

    @Test("CRLF split between reads, at every position")
    func crlfSplits() throws {
        let input = bytes("a LOGIN {3}\r\nbob pw\r\nb NOOP\r\n")
        let reference = try decodeFrames(input, peer: .client).map(FrameSummary.init)
        for point in 1..<input.count {
            let frames = try decodeFrames(input, peer: .client, split: .at([point]))
            #expect(frames.map(FrameSummary.init) == reference, "split at \(point)")
        }
    }

    @Test("offsets and lengths cover the stream")
    func offsetsAndLengths() throws {
        let input = bytes("a LOGIN {3}\r\nbob pw\r\nb IDLE\r\nDONE\r\n")
        let frames = try decodeFrames(input, peer: .client, split: .bytewise)
        #expect(frames.map(\.offset) == [0, 21, 29])
        #expect(frames.map(\.length).reduce(0, +) == input.count)
    }

    @Test("literal bytes stream as slices, one per read, without waiting for the whole literal")
    func literalStreams() throws {
        var framer = IMAPFramer(peer: .server)
        var buffer = ByteBuffer(string: "* 1 FETCH (BODY[] {10}\r\n0123")
        guard case .line(let line) = try framer.next(&buffer) else { Issue.record("no line"); return }
        #expect(line.literal == LiteralHeader(size: 10))
        guard case .literalBytes(let first, let remaining) = try framer.next(&buffer) else {
            Issue.record("no literal chunk"); return
        }
        #expect(String(buffer: first) == "0123")
        #expect(remaining == 6)
        #expect(try framer.next(&buffer) == nil)
        buffer.writeString("456789)\r\n")
        guard case .literalBytes(let second, 0) = try framer.next(&buffer) else { Issue.record("no chunk"); return }
        #expect(String(buffer: second) == "456789")
        guard case .line(let last) = try framer.next(&buffer) else { Issue.record("no line"); return }
        #expect(last.endsFrame && String(buffer: last.bytes) == ")\r\n")
    }

    @Test("secondWordIs matches the second word in place, in any case, and nothing longer or shorter")
    func secondWordInPlace() throws {
        let cases: [(String, IMAPPeer, StaticString, Bool)] = [
            ("* bye Logging out\r\n", .server, "BYE", true),
            ("* BYE\r\n", .server, "BYE", true),
            ("* BYEX now\r\n", .server, "BYE", false),
            ("* BY now\r\n", .server, "BYE", false),
            ("a1 OK done\r\n", .server, "OK", true),
            ("a1 Compress DEFLATE\r\n", .client, "COMPRESS", true),
            ("a1 COMPRESS\r\n", .client, "COMPRESS", true),
            ("a1 NOOP\r\n", .client, "COMPRESS", false),
            ("+ go ahead\r\n", .server, "GO", true),
        ]
        for (line, peer, word, expected) in cases {
            var framer = IMAPFramer(peer: peer)
            var buffer = ByteBuffer(string: line)
            guard case .line(let segment) = try framer.next(&buffer) else { Issue.record("no line: \(line)"); continue }
            #expect(segment.secondWordIs(word) == expected, "\(line)")
            #expect(segment.secondWordIs(word) == (segment.secondWord == "\(word)"), "\(line): agrees with secondWord")
        }
    }

    @Test("a large literal is not captured by the decoder beyond its limit")
    func uncapturedLiteral() throws {
        let body = String(repeating: "x", count: 100_000)
        let frames = try decodeFrames(
            bytes("* 1 FETCH (BODY[] {100000}\r\n\(body))\r\n"), peer: .server, split: .random(seed: 9), captureLimit: 1024)
        #expect(frames.count == 1)
        #expect(frames[0].literals.first?.chunks == nil)
        #expect(frames[0].literals.first?.header.size == 100_000)
        #expect(frames[0].length == 100_000 + 31)
    }

    @Test("a refused synchronizing literal ends the frame; the next line is a command")
    func abandonedLiteral() throws {
        var decoder = IMAPFrameDecoder(peer: .client)
        var buffer = ByteBuffer(string: "a APPEND nosuch {5}\r\n")
        #expect(try decoder.next(&buffer) == nil)
        let partial = decoder.abandonLiteral()
        #expect(partial?.name == "APPEND")
        buffer.writeString("b NOOP\r\n")
        let next = try decoder.next(&buffer)
        #expect(next?.name == "NOOP" && next?.tag == "b")
    }

    @Test("the session can end a SASL exchange explicitly")
    func authenticationEnded() throws {
        var framer = IMAPFramer(peer: .client)
        var buffer = ByteBuffer(string: "a AUTHENTICATE PLAIN\r\n")
        _ = try framer.next(&buffer)
        #expect(framer.clientExpectation == .saslResponse)
        framer.authenticationEnded()
        #expect(framer.clientExpectation == .command)
    }
}
