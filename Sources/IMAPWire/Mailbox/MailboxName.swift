/// A mailbox name as it travels on the wire.
///
/// Before `ENABLE UTF8=ACCEPT` names are modified UTF-7 (RFC 3501 §5.1.3);
/// after it, UTF-8 (RFC 6855 §3). The bytes are kept exactly as sent, so an
/// unchanged name is re-encoded identically; `displayName` decodes them.
public struct MailboxName: Hashable, Sendable {
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Encodes a Unicode name for the wire: UTF-8 when `utf8` (UTF8=ACCEPT
    /// enabled), modified UTF-7 otherwise.
    public init(_ displayName: String, utf8: Bool) {
        self.bytes = utf8 ? Array(displayName.utf8) : ModifiedUTF7.encode(displayName)
    }

    public static let inbox = MailboxName(bytes: Array("INBOX".utf8))

    /// A name the proxy could not read (a literal whose bytes streamed past
    /// it). Its bytes decode in neither encoding, so every rule that matches
    /// names treats it as matching: it fails closed.
    public static let unreadable = MailboxName(bytes: [0xFF])

    /// The Unicode name, or `nil` if the bytes are not valid in that encoding.
    public func displayName(utf8: Bool) -> String? {
        if utf8 { return String(validating: bytes, as: UTF8.self) }
        return try? ModifiedUTF7.decode(bytes)
    }

    /// The same name in the other encoding (for a peer that has, or has not,
    /// enabled UTF8=ACCEPT); `nil` if the bytes do not decode.
    public func converted(fromUTF8: Bool) -> MailboxName? {
        guard let name = displayName(utf8: fromUTF8) else { return nil }
        return MailboxName(name, utf8: !fromUTF8)
    }

    /// `INBOX` is case-insensitive (RFC 3501 §5.1); every other name is not.
    public var isInbox: Bool {
        bytes.count == 5 && bytes.map(FrameHead.upper) == Array("INBOX".utf8)
    }

    /// The name with a leading `INBOX` component spelled in upper case.
    /// Servers treat INBOX's hierarchy case-insensitively too (Dovecot opens
    /// `inbox.Private` as `INBOX.Private`), so rules must compare names in
    /// this form (review S6). With an unknown delimiter both `.` and `/` count.
    public func canonicalInbox(delimiter: UInt8?) -> MailboxName {
        guard bytes.count >= 5, bytes[0..<5].map(FrameHead.upper) == Array("INBOX".utf8) else { return self }
        if bytes.count > 5 {
            let next = bytes[5]
            let isDelimiter = delimiter.map { next == $0 } ?? (next == UInt8(ascii: ".") || next == UInt8(ascii: "/"))
            guard isDelimiter else { return self }
        }
        return MailboxName(bytes: Array("INBOX".utf8) + bytes[5...])
    }
}

extension MailboxName: CustomStringConvertible {
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}
