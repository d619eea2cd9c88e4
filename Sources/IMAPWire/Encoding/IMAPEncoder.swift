import NIOCore

/// Writes commands and responses, choosing for every string the form the
/// receiver can take.
///
/// ```
/// astring = 1*ASTRING-CHAR / string        ; RFC 3501 §9
/// string  = quoted / literal
/// ```
/// A string is written as an atom when every byte is an ASTRING-CHAR (and it
/// would not read as NIL), quoted when every byte may appear in a quoted string
/// for this receiver (7-bit without CR, LF and NUL; UTF-8 too after
/// UTF8=ACCEPT), and as a literal otherwise.
public struct IMAPEncoder {
    public var options: EncodingOptions
    private var segments: [ByteBuffer] = []
    private var literals: [EncodedFrame.Literal] = []
    private var current: ByteBuffer

    public init(options: EncodingOptions) {
        self.options = options
        current = ByteBufferAllocator().buffer(capacity: 128)
    }

    public mutating func writeRaw(_ text: String) {
        current.writeString(text)
    }

    public mutating func writeBytes(_ bytes: [UInt8]) {
        current.writeBytes(bytes)
    }

    public mutating func writeSpace() {
        current.writeInteger(UInt8(ascii: " "))
    }

    /// Writes a string value (astring) in the cheapest valid form.
    public mutating func writeAString(_ bytes: [UInt8]) {
        if IMAPEncoder.isAtom(bytes) {
            current.writeBytes(bytes)
        } else {
            writeString(bytes)
        }
    }

    /// Writes a string (quoted or literal, never an atom).
    public mutating func writeString(_ bytes: [UInt8]) {
        if IMAPEncoder.isQuotable(bytes, utf8: options.utf8Accepted) {
            current.writeInteger(UInt8(ascii: "\""))
            for byte in bytes {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { current.writeInteger(UInt8(ascii: "\\")) }
                current.writeInteger(byte)
            }
            current.writeInteger(UInt8(ascii: "\""))
        } else {
            var payload = ByteBufferAllocator().buffer(capacity: bytes.count)
            payload.writeBytes(bytes)
            writeLiteral(size: UInt64(bytes.count), isBinary: false, payload: .bytes(payload))
        }
    }

    /// Writes a mailbox name (an astring).
    public mutating func writeMailbox(_ name: MailboxName) {
        writeAString(name.bytes)
    }

    /// Announces a literal and ends the current segment.
    public mutating func writeLiteral(size: UInt64, isBinary: Bool, payload: EncodedFrame.Payload) {
        let header = LiteralHeader(size: size, form: options.literalForm(size: size), isBinary: isBinary)
        if isBinary { current.writeInteger(UInt8(ascii: "~")) }
        current.writeString("{\(size)" + (header.form == .nonSynchronizing ? "+}\r\n" : "}\r\n"))
        segments.append(current)
        current = ByteBufferAllocator().buffer(capacity: 64)
        literals.append(EncodedFrame.Literal(header: header, payload: payload))
    }

    /// Writes a token; literals of the original frame stay references.
    public mutating func writeToken(_ token: IMAPToken) {
        switch token {
        case .atom(let bytes):
            current.writeBytes(bytes)
        case .quoted(let bytes):
            writeString(bytes)
        case .literal(let index, let size, _):
            writeLiteral(size: size, isBinary: false, payload: .original(index: index))
        case .nilValue:
            current.writeString("NIL")
        case .list(let elements):
            current.writeInteger(UInt8(ascii: "("))
            writeTokens(elements)
            current.writeInteger(UInt8(ascii: ")"))
        }
    }

    public mutating func writeTokens(_ tokens: [IMAPToken]) {
        for (index, token) in tokens.enumerated() {
            if index > 0 { writeSpace() }
            writeToken(token)
        }
    }

    /// Ends the frame with CRLF and returns it.
    public mutating func finish() -> EncodedFrame {
        current.writeString("\r\n")
        segments.append(current)
        defer {
            segments = []
            literals = []
            current = ByteBufferAllocator().buffer(capacity: 128)
        }
        return EncodedFrame(segments: segments, literals: literals)
    }

    // MARK: - Whole frames

    /// Encodes a command; literals of `command`'s frame are kept by reference.
    public static func encode(_ command: ParsedCommand, options: EncodingOptions) -> EncodedFrame {
        encode(head: command.tag + " " + command.name, arguments: command.arguments, options: options)
    }

    /// Encodes an untagged data response.
    public static func encode(_ data: DataResponse, options: EncodingOptions) -> EncodedFrame {
        let head = "* " + (data.number.map { "\($0) " } ?? "") + data.name
        return encode(head: head, arguments: data.arguments, options: options)
    }

    private static func encode(head: String, arguments: [IMAPToken], options: EncodingOptions) -> EncodedFrame {
        var encoder = IMAPEncoder(options: options)
        encoder.writeRaw(head)
        if !arguments.isEmpty {
            encoder.writeSpace()
            encoder.writeTokens(arguments)
        }
        return encoder.finish()
    }

    /// Encodes a status response (tagged when `tag` is set, untagged otherwise).
    public static func encode(_ status: StatusResponse, options: EncodingOptions) -> EncodedFrame {
        var encoder = IMAPEncoder(options: options)
        encoder.writeRaw((status.tag ?? "*") + " " + status.status.rawValue)
        if let code = status.text.code {
            encoder.writeRaw(" [" + code.name)
            if let arguments = code.arguments, !arguments.isEmpty {
                encoder.writeSpace()
                encoder.writeTokens(arguments)
            } else if !code.rawArguments.isEmpty {
                encoder.writeSpace()
                encoder.writeBytes(code.rawArguments)
            }
            encoder.writeRaw("]")
        }
        // resp-text is TEXT-CHARs: drop any CR/LF a filter may have put in.
        let text = status.text.text.filter { $0 != 0x0D && $0 != 0x0A && $0 != 0 }
        if !text.isEmpty || status.text.code == nil {
            encoder.writeSpace()
            encoder.writeBytes(text)
        }
        return encoder.finish()
    }

    // MARK: - Character classes

    /// ASTRING-CHAR = ATOM-CHAR / resp-specials; ATOM-CHAR = any CHAR except atom-specials
    /// atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
    static func isAtom(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty else { return false }
        if bytes.count == 3, bytes.map(FrameHead.upper) == Array("NIL".utf8) { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case 0...0x20, 0x7F...0xFF: return false
            case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "{"), UInt8(ascii: "%"), UInt8(ascii: "*"),
                 UInt8(ascii: "\""), UInt8(ascii: "\\"):
                return false
            default: return true
            }
        }
    }

    /// Whether `bytes` can be a quoted string: TEXT-CHARs (no CR, LF, NUL), and
    /// 8-bit bytes only as valid UTF-8 to a receiver that accepts it.
    static func isQuotable(_ bytes: [UInt8], utf8: Bool) -> Bool {
        var hasEightBit = false
        for byte in bytes {
            if byte == 0 || byte == 0x0D || byte == 0x0A { return false }
            if byte >= 0x80 { hasEightBit = true }
        }
        if !hasEightBit { return true }
        return utf8 && String(validating: bytes, as: UTF8.self) != nil
    }
}
