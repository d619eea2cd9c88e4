/// Turns a frame's flat text into tokens, within the nesting and token limits.
///
/// Tolerant by design: it follows the shapes common to every IMAP command and
/// data response (RFC 9051 §9) without knowing which command it reads, so an
/// unknown extension still yields a tree.
struct IMAPTokenizer {
    private let text: [UInt8]
    private let literalPositions: [Int]
    private let literals: [FrameLiteral]
    private let limits: IMAPLimits
    /// A `[` with no closing `]` is an ordinary atom byte (server output:
    /// Dovecot writes a mailbox `Secret[x` as an atom). Commands stay strict:
    /// what the proxy cannot read there is refused (DESIGN principle 5).
    private let openBracketIsAtomByte: Bool
    /// The text is the first part of a frame that goes on after its last
    /// literal (a command whose literal streams): lists still open at the
    /// end are closed there instead of being an error.
    private let endsInsideFrame: Bool
    private(set) var position: Int
    private var nextLiteral = 0
    private var tokenCount = 0

    init(text: FrameText, literals: [FrameLiteral], limits: IMAPLimits, start: Int = 0,
         openBracketIsAtomByte: Bool = false, endsInsideFrame: Bool = false) {
        self.endsInsideFrame = endsInsideFrame
        self.text = text.bytes
        self.literalPositions = text.literalPositions
        self.literals = literals
        self.limits = limits
        self.openBracketIsAtomByte = openBracketIsAtomByte
        self.position = start
        while nextLiteral < literalPositions.count && literalPositions[nextLiteral] < start { nextLiteral += 1 }
    }

    var isAtEnd: Bool { position >= text.count && nextLiteral >= literalPositions.count }

    /// All remaining tokens, separated by spaces.
    mutating func tokens() throws(IMAPParseError) -> [IMAPToken] {
        var result: [IMAPToken] = []
        while true {
            skipSpaces()
            if isAtEnd { return result }
            if !atLiteral && position < text.count && text[position] == UInt8(ascii: ")") {
                throw IMAPParseError(.unbalancedParenthesis, offset: position)
            }
            result.append(try token(depth: 0))
        }
    }

    /// The next space-delimited word as raw bytes (for tags and names).
    mutating func word() -> [UInt8]? {
        skipSpaces()
        let start = position
        while position < text.count && text[position] != 0x20 && !atLiteral { position += 1 }
        return position > start ? Array(text[start..<position]) : nil
    }

    private var atLiteral: Bool { isLiteral(at: position) }

    /// Whether the next literal sits at `offset`. The position never steps
    /// over a literal's place: every skip of more than the current byte asks
    /// this first, or `nextLiteral` would never be consumed and the text would
    /// be read past its end (the trap of `a NOOP "\{1}` CRLF `Z""`).
    private func isLiteral(at offset: Int) -> Bool {
        nextLiteral < literalPositions.count && literalPositions[nextLiteral] == offset
    }

    /// Skips the byte after a backslash inside a quoted string, or `false`
    /// when there is none to skip (end of text, or a literal's place).
    private mutating func skipEscaped() -> Bool {
        guard position + 1 < text.count, !isLiteral(at: position + 1) else { return false }
        position += 1
        return true
    }

    private mutating func skipSpaces() {
        while position < text.count && text[position] == 0x20 && !atLiteral { position += 1 }
    }

    private mutating func countToken() throws(IMAPParseError) {
        tokenCount += 1
        if tokenCount > limits.maxTokensPerFrame {
            throw IMAPParseError(.tooManyTokens(limit: limits.maxTokensPerFrame), offset: position)
        }
    }

    // token = atom / quoted / literal / "(" [token *(SP token)] ")"
    private mutating func token(depth: Int) throws(IMAPParseError) -> IMAPToken {
        try countToken()
        if atLiteral {
            let index = nextLiteral
            nextLiteral += 1
            let literal = literals[index]
            return .literal(index: index, size: literal.header.size, bytes: literal.bytes)
        }
        guard position < text.count else { throw IMAPParseError(.unexpectedEnd, offset: position) }
        switch text[position] {
        case UInt8(ascii: "("):
            return try list(depth: depth + 1)
        case UInt8(ascii: "\""):
            return try quoted()
        default:
            return try atom()
        }
    }

    private mutating func list(depth: Int) throws(IMAPParseError) -> IMAPToken {
        if depth > limits.maxNestingDepth {
            throw IMAPParseError(.nestingTooDeep(limit: limits.maxNestingDepth), offset: position)
        }
        position += 1  // "("
        var elements: [IMAPToken] = []
        while true {
            skipSpaces()
            if atLiteral {
                elements.append(try token(depth: depth))
                continue
            }
            guard position < text.count else {
                if endsInsideFrame && isAtEnd { return .list(elements) }
                throw IMAPParseError(.unbalancedParenthesis, offset: position)
            }
            if text[position] == UInt8(ascii: ")") {
                position += 1
                return .list(elements)
            }
            elements.append(try token(depth: depth))
        }
    }

    // quoted = DQUOTE *QUOTED-CHAR DQUOTE
    // QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2..4
    // Tolerant: a backslash before any byte yields that byte.
    private mutating func quoted() throws(IMAPParseError) -> IMAPToken {
        let start = position
        position += 1
        var value: [UInt8] = []
        while position < text.count && !atLiteral {
            let byte = text[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                return .quoted(value)
            }
            if byte == UInt8(ascii: "\\") && !skipEscaped() { break }
            value.append(text[position])
            position += 1
        }
        throw IMAPParseError(.unterminatedQuotedString, offset: start)
    }

    // atom, extended with a bracketed section and a partial, as in
    // fetch-att = "BODY" section ["<" number "." nz-number ">"]   (RFC 3501 §9)
    // section   = "[" [section-spec] "]"   -- may contain spaces, lists and quotes
    private mutating func atom() throws(IMAPParseError) -> IMAPToken {
        let start = position
        while position < text.count && !atLiteral {
            let byte = text[position]
            if byte == 0x20 || byte == UInt8(ascii: "(") || byte == UInt8(ascii: ")") { break }
            if byte == UInt8(ascii: "\"") && position > start { break }
            if byte == UInt8(ascii: "[") {
                let open = position
                do {
                    try skipSection()
                } catch {
                    guard openBracketIsAtomByte else { throw error }
                    position = open + 1
                }
                continue
            }
            if byte < 0x20 || byte == 0x7F {
                throw IMAPParseError(.unexpectedByte(byte), offset: position)
            }
            position += 1
        }
        if position == start {
            guard position < text.count else { throw IMAPParseError(.unexpectedEnd, offset: position) }
            throw IMAPParseError(.unexpectedByte(text[position]), offset: position)
        }
        let bytes = Array(text[start..<position])
        if bytes.count == 3, FrameHead.upper(bytes[0]) == UInt8(ascii: "N"),
           FrameHead.upper(bytes[1]) == UInt8(ascii: "I"), FrameHead.upper(bytes[2]) == UInt8(ascii: "L") {
            return .nilValue
        }
        return .atom(bytes)
    }

    /// Skips a `[…]` section, nested brackets and quoted strings included.
    private mutating func skipSection() throws(IMAPParseError) {
        let start = position
        var depth = 0
        var inQuote = false
        while position < text.count && !atLiteral {
            let byte = text[position]
            position += 1
            if inQuote {
                if byte == UInt8(ascii: "\\") {
                    position -= 1
                    guard skipEscaped() else { break }
                    position += 1
                } else if byte == UInt8(ascii: "\"") {
                    inQuote = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inQuote = true
            case UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return }
            default: break
            }
        }
        throw IMAPParseError(.unterminatedBracket, offset: start)
    }
}
