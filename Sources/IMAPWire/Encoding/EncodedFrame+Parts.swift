import NIOCore

extension EncodedFrame {
    /// The frame cut where the receiver must answer `+` first: each
    /// synchronizing literal's announcement ends a part, and its bytes start
    /// the next. The sender writes the first part at once and each next one
    /// on a `+`. Original literals come from `original` (an index it does not
    /// have, or a literal it did not capture, yields no bytes: the caller
    /// chose the frame, review S16).
    public func synchronizingParts(original: Frame? = nil) -> [ByteBuffer] {
        var parts: [ByteBuffer] = []
        var current = ByteBuffer()
        for (index, segment) in segments.enumerated() {
            var segment = segment
            current.writeBuffer(&segment)
            guard index < literals.count else { continue }
            let literal = literals[index]
            if literal.header.isSynchronizing {
                parts.append(current)
                current = ByteBuffer()
            }
            switch literal.payload {
            case .bytes(var bytes):
                current.writeBuffer(&bytes)
            case .original(let literalIndex):
                guard let original, literalIndex < original.literals.count else { continue }
                for var chunk in original.literals[literalIndex].chunks ?? [] { current.writeBuffer(&chunk) }
            }
        }
        parts.append(current)
        return parts
    }
}
