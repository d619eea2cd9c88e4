/// `LOGIN userid password` (RFC 3501 §6.2.3).
///
/// ```
/// login = "LOGIN" SP userid SP password
/// ```
/// Either argument may be an atom, a quoted string or a literal; a literal
/// the frame did not capture leaves the view unparsed.
public struct LoginCommand: Hashable, Sendable {
    public var user: [UInt8]
    public var password: [UInt8]

    public init?(_ command: ParsedCommand) {
        guard command.name == "LOGIN", command.arguments.count == 2,
              let user = command.arguments[0].stringBytes, let password = command.arguments[1].stringBytes
        else { return nil }
        self.user = user
        self.password = password
    }
}

extension LoginCommand: CustomStringConvertible {
    /// Never shows the password.
    public var description: String { "LOGIN \(String(decoding: user, as: UTF8.self)) <password redacted>" }
}
