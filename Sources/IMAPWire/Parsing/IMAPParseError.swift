/// Why a frame's text could not be parsed into tokens or a typed view.
///
/// Parse errors never end a session. A frame no rule selected is forwarded
/// from its original bytes (it is just not "understood"); a frame a rule
/// selected and that does not parse is refused (DESIGN principle 5).
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
        /// The text ends where a token must follow.
        case unexpectedEnd
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

    /// A short phrase for a `BAD` answer: what could not be read, never the peer's bytes.
    public var hint: String {
        switch kind {
        case .nestingTooDeep(let limit): return "Lists nested deeper than \(limit) levels"
        case .tooManyTokens(let limit): return "More than \(limit) arguments"
        case .unterminatedQuotedString: return "Unterminated quoted string"
        case .unbalancedParenthesis: return "Unbalanced parenthesis"
        case .unterminatedBracket: return "Unterminated ["
        case .unexpectedByte: return "Unexpected character"
        case .unexpectedEnd: return "Missing argument"
        case .missingTagOrName: return "Missing tag or command name"
        case .unexpectedArguments: return "Invalid arguments"
        }
    }
}
