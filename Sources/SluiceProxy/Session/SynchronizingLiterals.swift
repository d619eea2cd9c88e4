import IMAPWire
import NIOCore

/// Client literals as the upstream gets them when rules apply: every
/// `{n+}` (and `~{n+}`) is announced as `{n}`, so the server asks for the
/// bytes with `+` before they go on. A server reads only the arguments a
/// command takes; the bytes of a `{n+}` literal it does not take would be
/// read as commands that no rule saw (red team: `a NOOP {17+}` CRLF
/// `c DELETE Doomed` CRLF deleted a mailbox under `deny: [DELETE]`).
enum SynchronizingLiterals {
    /// `segment` with the `+` of its closing literal announcement removed,
    /// or `segment` itself when it announces no `{n+}`.
    static func synchronizing(_ segment: ByteBuffer) -> ByteBuffer {
        let view = segment.readableBytesView
        var end = view.endIndex
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end - view.startIndex >= 3, view[end - 1] == UInt8(ascii: "}"), view[end - 2] == UInt8(ascii: "+") else {
            return segment
        }
        var result = ByteBuffer()
        result.reserveCapacity(segment.readableBytes - 1)
        result.writeBytes(view[view.startIndex..<(end - 2)])
        result.writeBytes(view[(end - 1)...])
        return result
    }

    /// Whether `segment` has something a server would read as a literal
    /// announcement before its end: `{` digits (`+` or `-`) `}` anywhere but
    /// at the end of the line. Quoted strings are not told apart (a name
    /// like `"a{5}b"` is refused too, when rules apply): the point is to
    /// refuse whatever a server could read differently.
    static func announcesLiteralInside(_ segment: ByteBuffer) -> Bool {
        let view = segment.readableBytesView
        var end = view.endIndex
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > view.startIndex, view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        var index = view.startIndex
        while index < end {
            guard view[index] == UInt8(ascii: "{") else {
                index += 1
                continue
            }
            var cursor = index + 1
            let digitsStart = cursor
            while cursor < end, view[cursor] >= UInt8(ascii: "0"), view[cursor] <= UInt8(ascii: "9") { cursor += 1 }
            if cursor > digitsStart, cursor < end {
                if view[cursor] == UInt8(ascii: "+") || view[cursor] == UInt8(ascii: "-") { cursor += 1 }
                if cursor < end, view[cursor] == UInt8(ascii: "}"), cursor + 1 < end { return true }
            }
            index += 1
        }
        return false
    }

    /// Whether `frame` from segment `start` on announces a `{n+}` literal
    /// (collected or streamed as `streamed`).
    static func hasNonSynchronizing(_ frame: CollectedFrame, from start: Int = 0) -> Bool {
        frame.literals.indices.contains { $0 >= start && !frame.literals[$0].header.isSynchronizing }
    }

    /// The bytes of `frame` from segment `start` on, announced synchronizing
    /// and cut after each announcement: the first part goes now, each next
    /// one on the upstream's `+` (which the proxy consumes). The last part
    /// ends with the announcement of a literal that streams, if there is one.
    static func parts(of frame: CollectedFrame, from start: Int = 0) -> [ByteBuffer] {
        var parts: [ByteBuffer] = []
        var current = ByteBuffer()
        for index in start..<frame.segments.count {
            guard index < frame.literals.count else {
                var segment = frame.segments[index]
                current.writeBuffer(&segment)
                continue
            }
            var segment = synchronizing(frame.segments[index])
            current.writeBuffer(&segment)
            parts.append(current)
            current = ByteBuffer()
            for var chunk in frame.literals[index].chunks ?? [] { current.writeBuffer(&chunk) }
        }
        if current.readableBytes > 0 { parts.append(current) }
        return parts
    }
}
