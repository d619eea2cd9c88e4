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
    ///
    /// Tokenized from `rawArguments` when read, not when the code is parsed:
    /// most codes a proxy parses are never looked into, and a login's two
    /// capability lists were a large part of its cost (docs/performance.md).
    /// Set, the tokens replace what was parsed.
    public var arguments: [IMAPToken]? {
        get {
            if let assigned { return assigned }
            return ResponseCode.tokens(of: rawArguments, limits: limits)
        }
        set { assigned = .some(newValue) }
    }

    /// Arguments given by `init(name:…)` or the setter; `nil`: read from `rawArguments`.
    private var assigned: [IMAPToken]??
    /// The limits the arguments are tokenized under (a parsed code's).
    private let limits: IMAPLimits

    public init(name: String, rawArguments: [UInt8] = [], arguments: [IMAPToken]? = []) {
        self.name = name
        self.rawArguments = rawArguments
        self.assigned = .some(arguments)
        self.limits = .server
    }

    init(parsing bytes: ArraySlice<UInt8>, limits: IMAPLimits) {
        let space = bytes.firstIndex(of: 0x20) ?? bytes.endIndex
        name = String(decoding: bytes[bytes.startIndex..<space].map(FrameHead.upper), as: UTF8.self)
        rawArguments = space < bytes.endIndex ? Array(bytes[(space + 1)...]) : []
        assigned = nil
        self.limits = limits
    }

    private static func tokens(of raw: [UInt8], limits: IMAPLimits) -> [IMAPToken]? {
        if let atoms = ResponseCode.plainAtoms(raw, limits: limits) { return atoms }
        var tokenizer = IMAPTokenizer(text: FrameText(bytes: raw, literalPositions: []), literals: [], limits: limits)
        return try? tokenizer.tokens()
    }

    public static func == (lhs: ResponseCode, rhs: ResponseCode) -> Bool {
        lhs.name == rhs.name && lhs.rawArguments == rhs.rawArguments && lhs.arguments == rhs.arguments
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(rawArguments)
        hasher.combine(arguments)
    }

    /// The arguments as strings when they are all plain atoms (see
    /// `plainAtoms`), read straight from the bytes: a capability list without
    /// a token and an array per name. `nil` also when arguments were set
    /// (`rawArguments` may not be what they say).
    public var plainAtomStrings: [String]? {
        guard assigned == nil else { return nil }
        let maxWords = limits.maxTokensPerFrame
        return rawArguments.withUnsafeBufferPointer { bytes -> [String]? in
            var words: [String] = []
            words.reserveCapacity(min(bytes.count(where: { $0 == 0x20 }) + 1, maxWords))
            let plain = ResponseCode.forEachPlainAtom(in: bytes, maxWords: maxWords) { word in
                words.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[word]), as: UTF8.self))
            }
            return plain ? words : nil
        }
    }

    /// The arguments as atoms when they are nothing but words of plain atom
    /// bytes between spaces (`[CAPABILITY IMAP4rev1 SASL-IR …]`, `[UIDNEXT
    /// 5]`): what the tokenizer would make of them, without it. `nil` when a
    /// byte could start anything else (a list, a quoted string, a section), a
    /// word is `NIL`, or there are more words than a frame may have tokens;
    /// the tokenizer decides those. A server's capability list after login is
    /// ~40 words, and tokenizing it was ~25,000 instructions (issue 14).
    static func plainAtoms(_ bytes: [UInt8], limits: IMAPLimits) -> [IMAPToken]? {
        bytes.withUnsafeBufferPointer { bytes -> [IMAPToken]? in
            var atoms: [IMAPToken] = []
            let plain = forEachPlainAtom(in: bytes, maxWords: limits.maxTokensPerFrame) { word in
                atoms.append(.atom(Array(bytes[word])))
            }
            return plain ? atoms : nil
        }
    }

    /// Calls `word` with the bounds of each word between spaces while they
    /// are plain atoms; `false` (and no more calls) at the first that is not
    /// — a byte that could start anything else, `NIL` — or at word
    /// `maxWords + 1`.
    private static func forEachPlainAtom(in bytes: UnsafeBufferPointer<UInt8>, maxWords: Int,
                                         _ word: (Range<Int>) -> Void) -> Bool {
        var index = 0
        var words = 0
        while index < bytes.count {
            if bytes[index] == 0x20 {
                index += 1
                continue
            }
            let start = index
            while index < bytes.count, bytes[index] != 0x20 {
                guard plainAtomByte(bytes[index]) else { return false }
                index += 1
            }
            if index - start == 3, FrameHead.upper(bytes[start]) == UInt8(ascii: "N"),
               FrameHead.upper(bytes[start + 1]) == UInt8(ascii: "I"), FrameHead.upper(bytes[start + 2]) == UInt8(ascii: "L") {
                return false
            }
            guard words < maxWords else { return false }
            words += 1
            word(start..<index)
        }
        return true
    }

    private static func plainAtomByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "\""), UInt8(ascii: "["), UInt8(ascii: "]"),
             UInt8(ascii: "{"):
            return false
        default:
            return byte > 0x20 && byte < 0x7F
        }
    }

    /// The single numeric argument (`UIDNEXT`, `UIDVALIDITY`, `UNSEEN`, `HIGHESTMODSEQ`, …).
    public var number: UInt64? {
        guard let arguments, arguments.count == 1 else { return nil }
        return arguments[0].number
    }
}
