/// A user name and password taken from LOGIN or AUTHENTICATE.
///
/// Its description never shows the password.
public struct Credentials: Hashable, Sendable, CustomStringConvertible {
    public var user: [UInt8]
    public var password: [UInt8]

    public init(user: [UInt8], password: [UInt8]) {
        self.user = user
        self.password = password
    }

    public var userName: String { String(decoding: user, as: UTF8.self) }

    public var description: String { "Credentials(user: \(userName), password: <redacted>)" }
}
