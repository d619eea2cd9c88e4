/// A framing violation or a limit breach: the stream cannot be followed further.
///
/// It carries what the caller needs to answer the peer: the tag of the frame
/// being read (when it was already known) for `tag BAD`, and the byte offset in
/// the stream for logs and for `sluice parse`.
public struct IMAPFramingError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// A line segment exceeded `IMAPLimits.maxLineLength`.
        case lineTooLong(limit: Int)
        /// The text of one frame exceeded `IMAPLimits.maxFrameTextLength`.
        case frameTooLong(limit: Int)
        /// A literal was announced larger than `IMAPLimits.maxLiteralSize`.
        case literalTooLarge(size: UInt64, limit: UInt64)
        /// A literal size does not fit in 32 bits (RFC 3501 `number`).
        case literalSizeOverflow
        /// `{…}` at the end of a line that is not `{digits}`, `{digits+}` or `{digits-}`.
        case invalidLiteralHeader
        /// More literals in one frame than `IMAPLimits.maxLiteralsPerFrame`.
        case tooManyLiterals(limit: Int)
        /// A NUL byte in line text (RFC 3501 `CHAR` excludes it outside literals);
        /// passed on, it truncates strings in C servers.
        case nulByte
        /// The stream ended inside a frame (a partial line or literal).
        case incompleteFrame
    }

    public var kind: Kind
    /// The tag of the frame in which the problem was found, when known.
    public var tag: String?
    /// Offset in the stream (bytes since the framer started) of the problem.
    public var offset: Int

    public init(_ kind: Kind, tag: String?, offset: Int) {
        self.kind = kind
        self.tag = tag
        self.offset = offset
    }

    /// A short text suitable for `tag BAD <hint>` or `* BYE <hint>`; names the
    /// problem, never echoes peer bytes.
    public var hint: String {
        switch kind {
        case .lineTooLong(let limit): return "Line too long (limit \(limit) bytes)"
        case .frameTooLong(let limit): return "Command too long (limit \(limit) bytes)"
        case .literalTooLarge(_, let limit): return "Literal too large (limit \(limit) bytes)"
        case .literalSizeOverflow: return "Literal size out of range"
        case .invalidLiteralHeader: return "Invalid literal size"
        case .tooManyLiterals(let limit): return "Too many literals (limit \(limit))"
        case .nulByte: return "NUL byte outside a literal"
        case .incompleteFrame: return "Connection ended inside a command or response"
        }
    }

    public var description: String {
        "\(hint) at byte offset \(offset)" + (tag.map { " (tag \($0))" } ?? "")
    }
}
