import IMAPWire
import NIOCore

/// A command or response collected for the filters: its lines and the
/// literals between them, as the slices they arrived in (no copies).
struct CollectedFrame {
    var kind: FrameKind
    var segments: [ByteBuffer] = []
    var literals: [FrameLiteral] = []

    init(kind: FrameKind) { self.kind = kind }

    /// Bytes held: lines and collected literal bytes (see `IMAPLimits.maxCollectedBytes`).
    private(set) var collectedBytes = 0

    mutating func append(segment: ByteBuffer) {
        segments.append(segment)
        collectedBytes += segment.readableBytes
    }

    mutating func appendLiteralBytes(_ chunk: ByteBuffer) {
        guard !literals.isEmpty else { return }
        literals[literals.count - 1].chunks?.append(chunk)
        collectedBytes += chunk.readableBytes
    }

    var frame: Frame {
        let length = segments.reduce(0) { $0 + $1.readableBytes }
            + literals.reduce(0) { $0 + ($1.chunks?.reduce(0) { $0 + $1.readableBytes } ?? 0) }
        return Frame(kind: kind, segments: segments, literals: literals, offset: 0, length: length)
    }

    /// Writes the bytes as they arrived, from segment `start` on (each
    /// segment followed by the literal it announces, where it was held).
    func write(to channel: Channel, from start: Int = 0) {
        for index in start..<segments.count {
            channel.write(segments[index], promise: nil)
            guard index < literals.count else { continue }
            for chunk in literals[index].chunks ?? [] { channel.write(chunk, promise: nil) }
        }
    }
}
