/// The human-readable part of a status response or continuation request,
/// with its optional response code.
///
/// ```
/// resp-text      = ["[" resp-text-code "]" SP] [text]     ; RFC 9051 §9
/// resp-text-code = atom [SP 1*<any TEXT-CHAR except "]">] / …
/// ```
/// A `[` is a code only right at the start of the text: `* OK see [this]`
/// has no code.
public struct ResponseText: Hashable, Sendable {
    public var code: ResponseCode?
    /// The free text after the code, as sent.
    public var text: [UInt8]

    public init(code: ResponseCode? = nil, text: [UInt8]) {
        self.code = code
        self.text = text
    }

    /// Parses response text starting at `start` in `bytes`.
    init(parsing bytes: ArraySlice<UInt8>, limits: IMAPLimits) {
        var rest = bytes
        var code: ResponseCode? = nil
        if rest.first == UInt8(ascii: "["),
           let close = ResponseText.closingBracket(in: rest) ?? rest.firstIndex(of: UInt8(ascii: "]")) {
            let inner = rest[(rest.startIndex + 1)..<close]
            code = ResponseCode(parsing: inner, limits: limits)
            rest = rest[(close + 1)...]
            if rest.first == 0x20 { rest = rest.dropFirst() }
        }
        self.init(code: code, text: Array(rest))
    }

    /// The `]` closing a response code, skipping quoted strings (BADCHARSET may
    /// quote a charset); `nil` if a quote is left open, since the generic
    /// `1*<TEXT-CHAR except "]">` form may contain a lone `"`.
    private static func closingBracket(in bytes: ArraySlice<UInt8>) -> Int? {
        var inQuote = false
        var index = bytes.startIndex + 1
        while index < bytes.endIndex {
            let byte = bytes[index]
            if inQuote {
                if byte == UInt8(ascii: "\\") { index += 1 } else if byte == UInt8(ascii: "\"") { inQuote = false }
            } else if byte == UInt8(ascii: "\"") {
                inQuote = true
            } else if byte == UInt8(ascii: "]") {
                return index
            }
            index += 1
        }
        return nil
    }
}

/// A response code (`[CAPABILITY …]`, `[UIDNEXT 5]`, `[READ-ONLY]`, …).
public struct ResponseCode: Hashable, Sendable {
    /// The code's name, upper-cased.
    public var name: String
    /// The bytes after the name (and its space), as sent; empty when none.
    public var rawArguments: [UInt8]
    /// The arguments as tokens, when they tokenize (`nil` for free-form text).
    public var arguments: [IMAPToken]?

    public init(name: String, rawArguments: [UInt8] = [], arguments: [IMAPToken]? = []) {
        self.name = name
        self.rawArguments = rawArguments
        self.arguments = arguments
    }

    init(parsing bytes: ArraySlice<UInt8>, limits: IMAPLimits) {
        let space = bytes.firstIndex(of: 0x20) ?? bytes.endIndex
        name = String(decoding: bytes[bytes.startIndex..<space].map(FrameHead.upper), as: UTF8.self)
        rawArguments = space < bytes.endIndex ? Array(bytes[(space + 1)...]) : []
        var tokenizer = IMAPTokenizer(
            text: FrameText(bytes: rawArguments, literalPositions: []), literals: [], limits: limits)
        arguments = try? tokenizer.tokens()
    }

    /// The single numeric argument (`UIDNEXT`, `UIDVALIDITY`, `UNSEEN`, `HIGHESTMODSEQ`, …).
    public var number: UInt64? {
        guard let arguments, arguments.count == 1 else { return nil }
        return arguments[0].number
    }
}
