@testable import IMAPWire
import NIOCore
import Testing

/// `IMAPFramer.streamsLongLines`: a long untagged server line is handed out
/// in pieces as it arrives (review B.4: a session holds about
/// `IMAPLimits.streamedLinePiece` of it, not up to 16 MiB), and the stream
/// reads exactly as it does whole.
@Suite struct IMAPFramerLongLineTests {
    /// What a framer made of a stream, with a streamed line's pieces joined
    /// again: the lines, the literals, and the most bytes it held at once.
    struct Reading: Equatable, CustomStringConvertible {
        struct Line: Equatable {
            var kind: FrameKind
            var isFrameStart: Bool
            var literal: LiteralHeader?
            var bytes: [UInt8]
        }
        var lines: [Line] = []
        var literalBytes: [[UInt8]] = []
        var error: IMAPFramingError.Kind?
        var errorOffset: Int?
        var pieces = 0
        var mostHeld = 0

        /// Equal streams read the same; where the stream is broken, the
        /// same error at the same offset (pieces before it may have gone on).
        static func == (lhs: Reading, rhs: Reading) -> Bool {
            guard lhs.error == nil && rhs.error == nil else {
                return lhs.error == rhs.error && lhs.errorOffset == rhs.errorOffset
            }
            return lhs.lines == rhs.lines && lhs.literalBytes == rhs.literalBytes
        }

        var description: String {
            "lines \(lines.map { "\($0.kind) \($0.bytes.count)B literal \($0.literal?.size ?? 0)" }), "
                + "literals \(literalBytes.map(\.count)), error \(String(describing: error)) at \(errorOffset ?? -1), "
                + "pieces \(pieces)"
        }
    }

    static func read(_ input: [UInt8], reads: Int, streams: Bool, limits: IMAPLimits = .server) -> Reading {
        var framer = IMAPFramer(peer: .server, limits: limits)
        framer.streamsLongLines = streams
        var buffer = ByteBuffer()
        var reading = Reading()
        var lineOpen = false
        var start = 0
        do {
            while start < input.count {
                let end = min(input.count, start + reads)
                buffer.writeBytes(input[start..<end])
                start = end
                while let event = try framer.next(&buffer) {
                    switch event {
                    case .line(let segment):
                        let bytes = Array(segment.bytes.readableBytesView)
                        if lineOpen {
                            reading.lines[reading.lines.count - 1].bytes += bytes
                            reading.lines[reading.lines.count - 1].literal = segment.literal
                        } else {
                            reading.lines.append(.init(kind: segment.kind, isFrameStart: segment.isFrameStart,
                                                       literal: segment.literal, bytes: bytes))
                        }
                        if segment.continuesLine { reading.pieces += 1 }
                        if segment.literal != nil { reading.literalBytes.append([]) }
                        lineOpen = segment.continuesLine
                    case .literalBytes(let chunk, _):
                        reading.literalBytes[reading.literalBytes.count - 1] += Array(chunk.readableBytesView)
                    }
                }
                reading.mostHeld = max(reading.mostHeld, buffer.readableBytes)
                buffer.discardReadBytes()
            }
        } catch {
            reading.error = error.kind
            reading.errorOffset = error.offset
        }
        return reading
    }

    static let filler = String(repeating: "1234567 ", count: 20_000)  // 160,000 bytes of words

    static let inputs: [(String, String)] = [
        ("a long SEARCH", "* SEARCH \(filler)9\r\n* 1 EXISTS\r\n"),
        ("a literal after a long line", "* 1 FETCH (X-A \(filler)BODY[] {5}\r\nhello)\r\n"),
        ("a literal8 after a long line", "* 1 FETCH (X-A \(filler)BINARY[] ~{5}\r\nhe\0lo)\r\n"),
        ("an invalid announcement", "* 1 FETCH (X-A \(filler)BODY[] {abc}\r\n"),
        ("a last word with a brace far back", "* 1 X \(filler)b{\(String(repeating: "1", count: 40_000))}\r\n"),
        ("an overflowing size", "* 1 FETCH (X-A \(filler)BODY[] {\(String(repeating: "9", count: 40))}\r\n"),
        ("a giant word", "* 1 X \(String(repeating: "a", count: 150_000))\r\n* 2 EXISTS\r\n"),
        ("a NUL far in", "* SEARCH \(filler)\0 1\r\n"),
        ("a long status line", "* OK \(filler){5}\r\n* 1 EXISTS\r\n"),
        ("a long line after a literal", "* 1 FETCH (BODY[] {3}\r\nabc X-A \(filler))\r\n"),
        ("a long tagged line (held whole)", "a1 OK \(filler)\r\n"),
        // Red team B.4 #3: status or not is decided by the second word, so a first piece must hold it.
        ("a first word longer than a head (held whole)",
         "*({\(String(repeating: "a", count: 70_000)) OK x {28}\r\n* LIST () \".\" Secret\r\n* OK x\r\n"),
        ("a long continuation line (held whole)", "+ \(filler)\r\n"),
    ]

    @Test(arguments: inputs.indices)
    func readsAsWhole(_ index: Int) {
        let (name, text) = IMAPFramerLongLineTests.inputs[index]
        let input = Array(text.utf8)
        let whole = IMAPFramerLongLineTests.read(input, reads: input.count, streams: false)
        for reads in [1_000, 4_096, 65_543, 68_000, 100_000] {
            let streamed = IMAPFramerLongLineTests.read(input, reads: reads, streams: true)
            #expect(streamed == whole, "\(name), reads of \(reads)")
            // The vectors are long enough that pieces went out (the test can fail).
            #expect((streamed.pieces > 0) == !name.contains("held whole"), "\(name), reads of \(reads)")
        }
    }

    @Test func holdsAPieceNotTheLine() {
        let input = Array("* SEARCH \(String(repeating: "1234567 ", count: 1_000_000))9\r\n".utf8)  // 8 MB
        let streamed = IMAPFramerLongLineTests.read(input, reads: 16_384, streams: true)
        #expect(streamed.error == nil)
        #expect(streamed.lines.count == 1)
        #expect(streamed.lines.first?.bytes == input)
        #expect(streamed.pieces > 100)
        #expect(streamed.mostHeld <= IMAPLimits.streamedLinePiece + 16_384)
        // Without streaming the framer holds the whole line (the control).
        let held = IMAPFramerLongLineTests.read(input, reads: 16_384, streams: false)
        #expect(held.mostHeld >= input.count - 16_384)
    }

    @Test func firstPieceNamesTheResponse() throws {
        var framer = IMAPFramer(peer: .server)
        framer.streamsLongLines = true
        var buffer = ByteBuffer(string: "* 12 FETCH (UID 5 X-A \(IMAPFramerLongLineTests.filler)")
        guard case .line(let first) = try framer.next(&buffer) else {
            Issue.record("no piece")
            return
        }
        #expect(first.isFrameStart && first.continuesLine && !first.endsFrame)
        #expect(first.kind == .untaggedResponse)
        #expect(first.secondWord == "12")
        #expect(Frame(kind: first.kind, segments: [first.bytes], literals: [], offset: 0, length: 0).name == "FETCH")
        #expect(!framer.isAtFrameBoundary)
    }

    /// Red team B.4 #1: a line that cannot be cut (one giant word holding a
    /// `{`, a tagged line) was looked at again from its start on every read.
    @Test(arguments: ["* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"name\" \"{", "* SEARCH {", "a1 OK {", "+ {"])
    func uncuttableLinesAreLookedAtOnce(head: String) {
        var framer = IMAPFramer(peer: .server)
        framer.streamsLongLines = true
        var buffer = ByteBuffer()
        let word = [UInt8](repeating: UInt8(ascii: "a"), count: 4_096)
        var sent = 0
        while sent < 4 << 20 {
            if sent == 0 { buffer.writeString(head) }
            buffer.writeBytes(word)
            sent += word.count
            // At most the part before the giant word goes out; the word waits for its line feed.
            while case .line(let piece)? = try? framer.next(&buffer) { #expect(piece.continuesLine) }
        }
        #expect(buffer.readableBytes >= sent)
        #expect(framer.pieceBytesExamined <= 2 * sent, "\(framer.pieceBytesExamined) bytes examined for a \(sent)-byte line")
    }

    @Test func lineLimitCountsEveryPiece() {
        var limits = IMAPLimits.server
        limits.maxLineLength = 100_000
        let input = Array("* SEARCH \(IMAPFramerLongLineTests.filler)\r\n".utf8)
        let streamed = IMAPFramerLongLineTests.read(input, reads: 4_096, streams: true, limits: limits)
        guard case .lineTooLong = streamed.error else {
            Issue.record("expected lineTooLong, got \(String(describing: streamed.error))")
            return
        }
    }
}
