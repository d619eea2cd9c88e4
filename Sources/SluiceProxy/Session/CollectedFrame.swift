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

    /// The last segment is a piece of a line that goes on (`LineSegment.continuesLine`).
    private var lineOpen = false

    /// Adds a line segment; the pieces of a streamed long line become one
    /// segment again (copied: bounded by `IMAPLimits.maxCollectedBytes`).
    mutating func append(_ segment: LineSegment) {
        if lineOpen, var last = segments.popLast() {
            var bytes = segment.bytes
            last.writeBuffer(&bytes)
            segments.append(last)
        } else {
            segments.append(segment.bytes)
        }
        lineOpen = segment.continuesLine
        collectedBytes += segment.bytes.readableBytes
    }

    /// The collected frame's last line is complete (not waiting for more pieces).
    var isLineComplete: Bool { !lineOpen }

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
