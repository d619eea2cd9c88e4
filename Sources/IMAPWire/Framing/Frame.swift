import NIOCore

/// A literal carried by a frame.
public struct FrameLiteral: Sendable {
    public var header: LiteralHeader
    /// The literal's bytes, as the slices they arrived in, when the decoder was
    /// asked to capture literals of this size; `nil` otherwise.
    public var chunks: [ByteBuffer]?

    public init(header: LiteralHeader, chunks: [ByteBuffer]?) {
        self.header = header
        self.chunks = chunks
    }

    /// The captured bytes in one array (a copy), or `nil` when not captured.
    public var bytes: [UInt8]? {
        guard let chunks else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(Int(header.size))
        for chunk in chunks { result.append(contentsOf: chunk.readableBytesView) }
        return result
    }
}

/// One whole command or response: its line segments and the literals between them.
///
/// Nothing is parsed until asked: `tag` and `name` look at the first line only;
/// `tokens()`, `command()` and `response()` parse on demand.
public struct Frame: Sendable {
    public var kind: FrameKind
    /// Line segments in order; segment `i` announces `literals[i]` (all but the last).
    public var segments: [ByteBuffer]
    public var literals: [FrameLiteral]
    /// Offset of the frame's first byte in its stream.
    public var offset: Int
    /// Bytes of the frame in its stream, literals included.
    public var length: Int

    public init(kind: FrameKind, segments: [ByteBuffer], literals: [FrameLiteral], offset: Int, length: Int) {
        self.kind = kind
        self.segments = segments
        self.literals = literals
        self.offset = offset
        self.length = length
    }

    /// The tag: a command's or tagged response's tag, `*` for untagged
    /// responses, `+` for continuation requests, `nil` for IDLE's `DONE` and SASL lines.
    public var tag: String? {
        switch kind {
        case .untaggedResponse: return "*"
        case .continuationRequest: return "+"
        case .idleDone, .saslResponse: return nil
        case .command, .taggedResponse:
            return segments.first?.withUnsafeReadableBytes { FrameHead.tag(in: $0) }
        }
    }

    /// The command or response name, upper-cased: `UID FETCH`, `FETCH` (for
    /// `* 5 FETCH`), `OK`, `LIST`, `DONE`; `nil` for continuation requests,
    /// SASL lines and lines without a recognizable name.
    /// A frame of one line (no literals), e.g. a line segment read on its own.
    public init(kind: FrameKind, line: ByteBuffer) {
        self.init(kind: kind, segments: [line], literals: [], offset: 0, length: line.readableBytes)
    }

    public var name: String? {
        switch kind {
        case .idleDone: return "DONE"
        case .saslResponse, .continuationRequest: return nil
        case .command, .taggedResponse, .untaggedResponse:
            guard let first = segments.first else { return nil }
            return first.withUnsafeReadableBytes { bytes -> String? in
                guard let space = bytes.firstIndex(of: 0x20) else { return nil }
                let words = FrameHead.words(in: bytes, after: space + 1, count: 2)
                guard let word = words.first else { return nil }
                if kind == .command, word == "UID", words.count == 2 { return "UID " + words[1] }
                if kind == .untaggedResponse, word.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    return words.count == 2 ? words[1] : nil
                }
                return word
            }
        }
    }

    /// The message number of a numbered untagged response (`* 5 FETCH` → 5).
    public var messageNumber: UInt32? {
        guard kind == .untaggedResponse, let first = segments.first else { return nil }
        return first.withUnsafeReadableBytes { bytes -> UInt32? in
            var i = 2
            var value: UInt64 = 0
            let start = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, i - start < 10 {
                value = value * 10 + UInt64(bytes[i] - 0x30)
                i += 1
            }
            guard i > start, i < bytes.count, bytes[i] == 0x20, value <= UInt32.max else { return nil }
            return UInt32(value)
        }
    }

    /// Whether every literal's bytes were captured (so `originalBytes()` works).
    public var hasAllLiteralBytes: Bool { literals.allSatisfy { $0.chunks != nil } }

    /// The frame's bytes exactly as received, or `nil` if a literal was not captured.
    public func originalBytes() -> ByteBuffer? {
        guard hasAllLiteralBytes else { return nil }
        var out = ByteBufferAllocator().buffer(capacity: length)
        writeOriginal(to: &out)
        return out
    }

    /// Appends the frame's bytes exactly as received; literals not captured are skipped.
    public func writeOriginal(to out: inout ByteBuffer) {
        for (index, segment) in segments.enumerated() {
            var segment = segment
            out.writeBuffer(&segment)
            if index < literals.count, let chunks = literals[index].chunks {
                for chunk in chunks {
                    var chunk = chunk
                    out.writeBuffer(&chunk)
                }
            }
        }
    }
}
