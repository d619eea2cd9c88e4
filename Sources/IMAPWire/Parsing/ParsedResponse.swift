/// A server response, parsed into one of its three shapes.
///
/// ```
/// response-tagged = tag SP resp-cond-state CRLF
/// response-data   = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data /
///                   message-data / capability-data / …) CRLF
/// continue-req    = "+" SP (resp-text / base64) CRLF
/// ```
/// (RFC 9051 §9.)
public enum ParsedResponse: Hashable, Sendable {
    case status(StatusResponse)
    case data(DataResponse)
    case continuation(ResponseText)
}

/// The status words of `resp-cond-state`, `resp-cond-bye` and `resp-cond-auth`.
public enum ResponseStatus: String, Hashable, Sendable {
    case ok = "OK", no = "NO", bad = "BAD", bye = "BYE", preauth = "PREAUTH"
}

/// A tagged or untagged OK / NO / BAD / BYE / PREAUTH.
public struct StatusResponse: Hashable, Sendable {
    /// The tag, or `nil` for an untagged status response.
    public var tag: String?
    public var status: ResponseStatus
    public var text: ResponseText

    public init(tag: String?, status: ResponseStatus, text: ResponseText) {
        self.tag = tag
        self.status = status
        self.text = text
    }
}

/// An untagged data response: `* NAME args` or `* n NAME args`.
public struct DataResponse: Hashable, Sendable {
    /// The response name, upper-cased (`LIST`, `FETCH`, `EXISTS`, …).
    public var name: String
    /// The message number of `* n NAME` responses.
    public var number: UInt32?
    public var arguments: [IMAPToken]

    public init(name: String, number: UInt32? = nil, arguments: [IMAPToken]) {
        self.name = name
        self.number = number
        self.arguments = arguments
    }
}

extension Frame {
    /// Parses a response frame into status, data or continuation form.
    public func response(limits: IMAPLimits = .server) throws(IMAPParseError) -> ParsedResponse {
        let text = FrameText(self)
        let bytes = text.bytes
        switch kind {
        case .continuationRequest:
            var start = 1
            if start < bytes.count && bytes[start] == 0x20 { start += 1 }
            return .continuation(ResponseText(parsing: bytes[min(start, bytes.count)...], limits: limits))
        case .taggedResponse, .untaggedResponse:
            var tokenizer = IMAPTokenizer(text: text, literals: literals, limits: limits, openBracketIsAtomByte: true)
            guard let tagBytes = tokenizer.word(), var word = tokenizer.word() else {
                throw IMAPParseError(.missingTagOrName, offset: tokenizer.position)
            }
            let tag = String(decoding: tagBytes, as: UTF8.self)
            var number: UInt32? = nil
            if kind == .untaggedResponse, let value = IMAPToken.atom(word).number {
                guard value <= UInt64(UInt32.max), let next = tokenizer.word() else {
                    throw IMAPParseError(.missingTagOrName, offset: tokenizer.position)
                }
                number = UInt32(value)
                word = next
            }
            guard word.allSatisfy(FrameHead.isNameByte) else {
                throw IMAPParseError(.missingTagOrName, offset: tokenizer.position)
            }
            let name = String(decoding: word.map(FrameHead.upper), as: UTF8.self)
            if number == nil, let status = ResponseStatus(rawValue: name) {
                var start = tokenizer.position
                if start < bytes.count && bytes[start] == 0x20 { start += 1 }
                let responseText = ResponseText(parsing: bytes[min(start, bytes.count)...], limits: limits)
                return .status(StatusResponse(tag: kind == .taggedResponse ? tag : nil, status: status, text: responseText))
            }
            guard kind == .untaggedResponse else { throw IMAPParseError(.missingTagOrName, offset: 0) }
            return .data(DataResponse(name: name, number: number, arguments: try tokenizer.tokens()))
        case .command, .idleDone, .saslResponse:
            throw IMAPParseError(.missingTagOrName, offset: 0)
        }
    }
}
