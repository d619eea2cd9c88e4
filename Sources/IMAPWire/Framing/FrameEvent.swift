import NIOCore

/// What a frame is, decided from its first line and the framer's state.
public enum FrameKind: Hashable, Sendable {
    /// A client command (`tag SP name …`).
    case command
    /// The `DONE` line that ends IDLE (RFC 2177).
    case idleDone
    /// A client line answering a SASL challenge during AUTHENTICATE (RFC 3501 §6.2.2).
    case saslResponse
    /// A server response starting with a tag (`tag OK …`).
    case taggedResponse
    /// A server response starting with `*`.
    case untaggedResponse
    /// A server continuation request (`+ …`).
    case continuationRequest
}

/// The announcement of a literal at the end of a line segment.
///
/// ```
/// literal  = "{" number ["+"] "}" CRLF *CHAR8     ; RFC 3501 §9, RFC 7888
/// literal8 = "~{" number ["+"] "}" CRLF *OCTET    ; RFC 3516 §4.2
/// ```
public struct LiteralHeader: Hashable, Sendable {
    public enum Form: Hashable, Sendable {
        /// `{n}`: the client waits for a continuation request before sending the bytes.
        case synchronizing
        /// `{n+}`: LITERAL+ / LITERAL- (RFC 7888), sent without waiting.
        case nonSynchronizing
        /// `{n-}`: not in any RFC but seen in the wild; framed as a literal and,
        /// being unknown to servers, treated as synchronizing (the safe reading).
        case minus
    }

    public var size: UInt64
    public var form: Form
    /// `~{n}`: a BINARY literal8 (RFC 3516), which may contain NUL.
    public var isBinary: Bool

    public init(size: UInt64, form: Form = .synchronizing, isBinary: Bool = false) {
        self.size = size
        self.form = form
        self.isBinary = isBinary
    }

    /// Whether the sender must wait for the receiver's `+` before the bytes.
    public var isSynchronizing: Bool { form != .nonSynchronizing }
}

/// One line of a frame: the text up to and including its line terminator.
///
/// A frame with literals is several segments: each but the last ends with a
/// literal announcement, whose bytes follow as `FrameEvent.literalBytes`.
public struct LineSegment: Sendable {
    /// The segment's bytes, terminator included; a slice of the input.
    public var bytes: ByteBuffer
    /// The kind of the frame this segment belongs to.
    public var kind: FrameKind
    /// Whether this segment starts a new frame.
    public var isFrameStart: Bool
    /// The literal announced at the end of this segment; `nil` when the
    /// segment ends the frame or `continuesLine`.
    public var literal: LiteralHeader?
    /// The line goes on in the next segment: a long untagged server line
    /// streamed in pieces (`IMAPFramer.streamsLongLines`). Such a piece never
    /// ends inside the word a literal announcement could be in.
    public var continuesLine: Bool = false
    /// Offsets (in `bytes`) of the first and second space: for a frame's first
    /// segment, the tag is `0..<firstSpace` and the next word (command name,
    /// status, or message number) `firstSpace+1..<secondSpace` — found during
    /// the framer's single scan, so a relay gets them without rescanning.
    public var firstSpace: Int?
    public var secondSpace: Int?

    /// Whether this segment is the last of its frame.
    public var endsFrame: Bool { literal == nil && !continuesLine }

    /// For a frame's first segment: its tag (the bytes before the first space).
    public var tag: String? {
        guard isFrameStart else { return nil }
        return bytes.withUnsafeReadableBytes { FrameHead.tag(in: $0) }
    }

    /// For a frame's first segment: the word after the tag, upper-cased (a
    /// command name, a status, or a message number), or `nil`.
    public var secondWord: String? {
        guard isFrameStart, let firstSpace else { return nil }
        let end = secondSpace ?? max(firstSpace + 1, bytes.readableBytes - 2)
        return bytes.withUnsafeReadableBytes { raw -> String? in
            var stop = min(end, raw.count)
            while stop > firstSpace + 1 && (raw[stop - 1] == 0x0A || raw[stop - 1] == 0x0D) { stop -= 1 }
            guard stop > firstSpace + 1, stop - firstSpace <= 33 else { return nil }
            var word = ""
            for index in (firstSpace + 1)..<stop {
                guard FrameHead.isNameByte(raw[index]) else { return nil }
                word.unicodeScalars.append(Unicode.Scalar(FrameHead.upper(raw[index])))
            }
            return word
        }
    }

    /// Whether `secondWord` is `word` (given in upper case), compared in
    /// place: no string is made, so a relay can ask this of every frame.
    public func secondWordIs(_ word: StaticString) -> Bool {
        guard isFrameStart, let firstSpace else { return false }
        return bytes.withUnsafeReadableBytes { raw -> Bool in
            var stop = min(secondSpace ?? raw.count, raw.count)
            while stop > firstSpace + 1 && (raw[stop - 1] == 0x0A || raw[stop - 1] == 0x0D) { stop -= 1 }
            let start = firstSpace + 1
            guard stop - start == word.utf8CodeUnitCount else { return false }
            return word.withUTF8Buffer { expected -> Bool in
                for index in 0..<expected.count where FrameHead.upper(raw[start + index]) != expected[index] {
                    return false
                }
                return true
            }
        }
    }
}

/// What the framer hands out, in stream order.
public enum FrameEvent: Sendable {
    /// A line segment (see `LineSegment`).
    case line(LineSegment)
    /// Bytes of the literal announced by the previous segment: a zero-copy slice
    /// of the input, and how many bytes of that literal are still to come.
    case literalBytes(ByteBuffer, remaining: UInt64)
}
