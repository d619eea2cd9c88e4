import NIOCore

/// A frame's text as one byte array, with the places where its literals sit.
///
/// Line terminators and literal announcements (`{5}`, `~{5+}`) are removed;
/// literal `i` sits at `literalPositions[i]`. Tokenizing this flat text is
/// simpler and faster than walking buffers segment by segment, and it is
/// built only when a caller asks for tokens.
struct FrameText {
    var bytes: [UInt8]
    var literalPositions: [Int]

    init(bytes: [UInt8], literalPositions: [Int]) {
        self.bytes = bytes
        self.literalPositions = literalPositions
    }

    init(_ frame: Frame) {
        var bytes: [UInt8] = []
        var positions: [Int] = []
        bytes.reserveCapacity(frame.segments.reduce(0) { $0 + $1.readableBytes })
        for (index, segment) in frame.segments.enumerated() {
            segment.withUnsafeReadableBytes { raw in
                var end = raw.count
                if end > 0 && raw[end - 1] == 0x0A { end -= 1 }
                if end > 0 && raw[end - 1] == 0x0D { end -= 1 }
                if index < frame.literals.count {
                    // Strip the announcement: back to its `{`, and a `~` before it.
                    var open = end - 1
                    while open > 0 && raw[open] != UInt8(ascii: "{") { open -= 1 }
                    if open > 0 && raw[open - 1] == UInt8(ascii: "~") { open -= 1 }
                    end = max(open, 0)
                }
                bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<end]))
            }
            if index < frame.literals.count { positions.append(bytes.count) }
        }
        self.bytes = bytes
        self.literalPositions = positions
    }
}
