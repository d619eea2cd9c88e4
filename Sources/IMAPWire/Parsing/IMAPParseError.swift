/// Why a frame's text could not be parsed into tokens or a typed view.
///
/// Parse errors never end a session: the frame is still forwarded from its
/// original bytes; it is just not "understood".
public struct IMAPParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// Lists nested deeper than `IMAPLimits.maxNestingDepth`.
        case nestingTooDeep(limit: Int)
        /// More tokens than `IMAPLimits.maxTokensPerFrame`.
        case tooManyTokens(limit: Int)
        case unterminatedQuotedString
        case unbalancedParenthesis
        case unterminatedBracket
        /// A byte that cannot start or continue a token here.
        case unexpectedByte(UInt8)
        /// The line has no tag, or no command or response name.
        case missingTagOrName
        /// Tokens are well-formed but do not match the command's or response's grammar.
        case unexpectedArguments
    }

    public var kind: Kind
    /// Offset in the frame's flattened text (line terminators and literal
    /// announcements removed) where the problem was found.
    public var offset: Int

    public init(_ kind: Kind, offset: Int) {
        self.kind = kind
        self.offset = offset
    }

    public var description: String { "\(kind) at text offset \(offset)" }
}
