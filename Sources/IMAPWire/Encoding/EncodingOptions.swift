/// What the receiver of an encoded frame can take, which decides how strings
/// are written.
public struct EncodingOptions: Hashable, Sendable {
    public enum Receiver: Hashable, Sendable {
        /// A server that has announced none of LITERAL+/LITERAL-: literals are
        /// `{n}` and the sender must wait for `+` before their bytes.
        case server
        /// A server with LITERAL+ (RFC 7888): `{n+}` of any size.
        case serverWithLiteralPlus
        /// A server with LITERAL- (RFC 7888): `{n+}` up to 4096 bytes, `{n}` above.
        case serverWithLiteralMinus
        /// A client: responses carry `{n}` literals without waiting.
        case client
    }

    public var receiver: Receiver
    /// The receiver's session has UTF8=ACCEPT enabled (RFC 6855): quoted
    /// strings may carry UTF-8.
    public var utf8Accepted: Bool

    public init(receiver: Receiver, utf8Accepted: Bool = false) {
        self.receiver = receiver
        self.utf8Accepted = utf8Accepted
    }

    /// The literal form to announce for `size` bytes.
    func literalForm(size: UInt64) -> LiteralHeader.Form {
        switch receiver {
        case .server, .client: return .synchronizing
        case .serverWithLiteralPlus: return .nonSynchronizing
        case .serverWithLiteralMinus: return size <= 4096 ? .nonSynchronizing : .synchronizing
        }
    }
}
