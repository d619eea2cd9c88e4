import NIOCore

/// A frame written by the encoder: line segments and the literals between them.
///
/// Segment `i` ends with the announcement of literal `i`; the last segment
/// ends with CRLF. A literal's payload is either new bytes or a reference to
/// a literal of the frame that was rewritten, so its bytes can stream from
/// the peer instead of being copied.
public struct EncodedFrame: Sendable {
    public enum Payload: Sendable {
        case bytes(ByteBuffer)
        /// The `index`-th literal of the original frame.
        case original(index: Int)
    }

    public struct Literal: Sendable {
        public var header: LiteralHeader
        public var payload: Payload
    }

    public var segments: [ByteBuffer]
    public var literals: [Literal]

    /// The frame's bytes, taking original literals from `original` (which must
    /// have captured them); for tests and small frames.
    public func bytes(original: Frame? = nil) -> ByteBuffer? {
        var out = ByteBufferAllocator().buffer(capacity: segments.reduce(0) { $0 + $1.readableBytes })
        for (index, segment) in segments.enumerated() {
            var segment = segment
            out.writeBuffer(&segment)
            guard index < literals.count else { continue }
            switch literals[index].payload {
            case .bytes(var bytes):
                out.writeBuffer(&bytes)
            case .original(let literalIndex):
                guard let original, literalIndex < original.literals.count,
                      let chunks = original.literals[literalIndex].chunks
                else { return nil }
                for var chunk in chunks { out.writeBuffer(&chunk) }
            }
        }
        return out
    }
}
