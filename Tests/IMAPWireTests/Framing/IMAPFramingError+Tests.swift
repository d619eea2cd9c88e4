import IMAPWire
import NIOCore
import Testing

struct ErrorVector: CustomStringConvertible, Sendable {
    var name: String
    var peer: IMAPPeer
    var input: [UInt8]
    var limits: IMAPLimits?
    var kind: IMAPFramingError.Kind
    var tag: String?
    var offset: Int?
    var description: String { name }
}

private var tightLimits: IMAPLimits {
    var limits = IMAPLimits.client
    limits.maxLineLength = 64
    limits.maxLiteralSize = 1000
    limits.maxLiteralsPerFrame = 3
    limits.maxFrameTextLength = 200
    return limits
}

let errorVectors: [ErrorVector] = [
    ErrorVector(name: "over-long line with its tag", peer: .client,
                input: bytes("t7 LOGIN " + String(repeating: "a", count: 100) + "\r\n"),
                limits: tightLimits, kind: .lineTooLong(limit: 64), tag: "t7", offset: 64),
    ErrorVector(name: "over-long line never terminated", peer: .client,
                input: bytes("t8 " + String(repeating: "a", count: 100)),
                limits: tightLimits, kind: .lineTooLong(limit: 64), tag: "t8"),
    ErrorVector(name: "literal over the configured limit", peer: .client, input: bytes("t1 APPEND x {1001}\r\n"),
                limits: tightLimits, kind: .literalTooLarge(size: 1001, limit: 1000), tag: "t1", offset: 12),
    ErrorVector(name: "literal over 2^32", peer: .client, input: bytes("t2 APPEND x {4294967296}\r\n"),
                kind: .literalSizeOverflow, tag: "t2", offset: 12),
    ErrorVector(name: "literal with 20 digits", peer: .server, input: bytes("* 1 FETCH (BODY[] {99999999999999999999}\r\n"),
                kind: .literalSizeOverflow, tag: "*"),
    ErrorVector(name: "{abc}", peer: .client, input: bytes("t3 LOGIN {abc}\r\n"),
                kind: .invalidLiteralHeader, tag: "t3", offset: 9),
    ErrorVector(name: "{}", peer: .client, input: bytes("t4 LOGIN {}\r\n"), kind: .invalidLiteralHeader, tag: "t4"),
    ErrorVector(name: "{12a+}", peer: .client, input: bytes("t4 LOGIN x {12a+}\r\n"), kind: .invalidLiteralHeader, tag: "t4"),
    ErrorVector(name: "unterminated literal at EOF", peer: .client, input: bytes("t5 APPEND x {10}\r\nabc"),
                kind: .incompleteFrame, tag: "t5"),
    ErrorVector(name: "partial line at EOF", peer: .server, input: bytes("* OK half a li"), kind: .incompleteFrame, tag: "*"),
    ErrorVector(name: "line missing after a literal at EOF", peer: .client, input: bytes("t6 LOGIN {2}\r\nab"),
                kind: .incompleteFrame, tag: "t6"),
    ErrorVector(name: "NUL byte in a line", peer: .client, input: bytes("t9 LOGIN a\0b c\r\n"),
                kind: .nulByte, tag: "t9", offset: 10),
    ErrorVector(name: "NUL byte in a server line", peer: .server, input: bytes("* OK \0\r\n"), kind: .nulByte, tag: "*", offset: 5),
    ErrorVector(name: "too many literals in one frame", peer: .client,
                input: bytes("t0 X {1}\r\na {1}\r\nb {1}\r\nc {1}\r\nd\r\n"),
                limits: tightLimits, kind: .tooManyLiterals(limit: 3), tag: "t0"),
    ErrorVector(name: "frame text over its limit through many literals", peer: .client,
                input: bytes("ta X {1}\r\n" + String(repeating: "a \(String(repeating: "b", count: 40)) {1}\r\n", count: 6)),
                limits: { var l = tightLimits; l.maxLiteralsPerFrame = 100; return l }(),
                kind: .frameTooLong(limit: 200), tag: "ta"),
]

@Suite("IMAPFramer errors")
struct IMAPFramingErrorTests {
    @Test("bad input yields its specific error under every split", arguments: errorVectors, [Split.whole, .bytewise, .random(seed: 5)])
    func errorVector(vector: ErrorVector, split: Split) {
        do {
            _ = try decodeFrames(vector.input, peer: vector.peer, split: split, limits: vector.limits)
            Issue.record("no error for \(vector.name)")
        } catch let error as IMAPFramingError {
            #expect(error.kind == vector.kind)
            #expect(error.tag == vector.tag)
            if let offset = vector.offset { #expect(error.offset == offset) }
            #expect(!error.hint.isEmpty)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("an endless line without a terminator is refused at the limit, not buffered")
    func endlessLine() throws {
        var framer = IMAPFramer(peer: .client, limits: tightLimits)
        var buffer = ByteBuffer()
        var thrown: IMAPFramingError?
        for _ in 0..<100 {
            buffer.writeString("aaaaaaaaaa")
            do {
                while try framer.next(&buffer) != nil {}
            } catch {
                thrown = error
                break
            }
        }
        #expect(thrown?.kind == .lineTooLong(limit: 64))
        #expect(buffer.readableBytes < 80)
    }
}
