/// `AUTHENTICATE mechanism [initial-response]` (RFC 3501 §6.2.2, RFC 4959 SASL-IR).
///
/// ```
/// authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]
/// ```
public struct AuthenticateCommand: Hashable, Sendable {
    /// The mechanism, upper-cased (`PLAIN`, `LOGIN`, `XOAUTH2`, …).
    public var mechanism: String
    /// The SASL-IR initial response as sent (BASE64, or `=` for an empty one).
    public var initialResponse: [UInt8]?

    public init?(_ command: ParsedCommand) {
        guard command.name == "AUTHENTICATE", (1...2).contains(command.arguments.count),
              let mechanism = command.arguments[0].keyword
        else { return nil }
        self.mechanism = mechanism
        if command.arguments.count == 2 {
            guard case .atom(let response) = command.arguments[1] else { return nil }
            initialResponse = response
        }
    }
}

extension AuthenticateCommand: CustomStringConvertible {
    /// Never shows the initial response (it carries credentials).
    public var description: String {
        "AUTHENTICATE \(mechanism)" + (initialResponse == nil ? "" : " <initial response redacted>")
    }
}
