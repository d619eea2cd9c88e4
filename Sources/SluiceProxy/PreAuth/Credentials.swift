/// A user name and password taken from LOGIN or AUTHENTICATE.
///
/// Its description never shows the password.
public struct Credentials: Hashable, Sendable, CustomStringConvertible {
    public var user: [UInt8]
    /// The password, or the OAuth 2.0 bearer token when `bearer` is set.
    public var password: [UInt8]
    /// How a bearer token was given (AUTHENTICATE XOAUTH2 or OAUTHBEARER); `nil` for a password.
    public var bearer: BearerMechanism?

    public init(user: [UInt8], password: [UInt8], bearer: BearerMechanism? = nil) {
        self.user = user
        self.password = password
        self.bearer = bearer
    }

    public var userName: String { String(decoding: user, as: UTF8.self) }

    public var description: String {
        "Credentials(user: \(userName), \(bearer == nil ? "password" : "token"): <redacted>)"
    }
}

/// The SASL mechanisms that carry an OAuth 2.0 bearer token.
public enum BearerMechanism: String, Hashable, Sendable, CaseIterable {
    /// Google's and Microsoft's `user=…^Aauth=Bearer …^A^A`.
    case xoauth2 = "XOAUTH2"
    /// RFC 7628: a GS2 header with `a=USER`, then `auth=Bearer …`.
    case oauthbearer = "OAUTHBEARER"

    var loginMechanism: LoginMechanism { self == .xoauth2 ? .xoauth2 : .oauthbearer }

    /// The client's first response: `user` and `token`, or `nil` when it is not one.
    ///
    ///     ; XOAUTH2 (Google): "user=" user %x01 "auth=Bearer " token %x01 %x01
    ///     ; OAUTHBEARER, RFC 7628 §3.1:
    ///     client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
    ///     gs2-header  = gs2-cbind-flag "," [ authzid ] ","   ; RFC 5801, authzid = "a=" saslname
    ///     kvsep       = %x01
    ///     kvpair      = key "=" value kvsep                  ; auth=Bearer TOKEN, host=…, port=…
    static func parse(_ mechanism: BearerMechanism, _ message: [UInt8]) -> (user: [UInt8], token: [UInt8])? {
        var fields = message.split(separator: 0x01, omittingEmptySubsequences: true).map(Array.init)
        var user: [UInt8]?
        if mechanism == .oauthbearer {
            // gs2-header: ("n" / "y") "," ["a=" saslname] "," — channel binding ("p=") is not offered.
            guard let header = fields.first, let first = header.first, first == UInt8(ascii: "n") || first == UInt8(ascii: "y")
            else { return nil }
            fields.removeFirst()
            let parts = header.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            guard parts.count >= 2, parts[0].count == 1 else { return nil }
            if parts[1].starts(with: Array("a=".utf8)) { user = unescapeSASLName(Array(parts[1].dropFirst(2))) }
        }
        var token: [UInt8]?
        for field in fields {
            if mechanism == .xoauth2, field.starts(with: Array("user=".utf8)) { user = Array(field.dropFirst(5)) }
            if field.starts(with: Array("auth=".utf8)) {
                let value = field.dropFirst(5)
                let scheme = Array("Bearer ".utf8)
                guard value.count > scheme.count,
                      value.prefix(scheme.count).map({ $0 | 0x20 }) == scheme.map({ $0 | 0x20 }) else { return nil }
                token = Array(value.dropFirst(scheme.count))
            }
        }
        guard let user, !user.isEmpty, let token, !token.isEmpty else { return nil }
        return (user, token)
    }

    /// RFC 5801's saslname: `=2C` is a comma, `=3D` an equals sign; `nil` for any other `=`.
    static func unescapeSASLName(_ name: [UInt8]) -> [UInt8]? {
        var result: [UInt8] = []
        var index = 0
        while index < name.count {
            if name[index] == UInt8(ascii: "=") {
                guard index + 2 < name.count else { return nil }
                switch (name[index + 1], name[index + 2]) {
                case (UInt8(ascii: "2"), UInt8(ascii: "C")): result.append(UInt8(ascii: ","))
                case (UInt8(ascii: "3"), UInt8(ascii: "D")): result.append(UInt8(ascii: "="))
                default: return nil
                }
                index += 3
            } else {
                result.append(name[index])
                index += 1
            }
        }
        return result
    }

    /// What the proxy sends upstream for `user` and `token`.
    func initialResponse(user: [UInt8], token: [UInt8]) -> [UInt8] {
        switch self {
        case .xoauth2:
            return Array("user=".utf8) + user + [0x01] + Array("auth=Bearer ".utf8) + token + [0x01, 0x01]
        case .oauthbearer:
            var escaped: [UInt8] = []
            for byte in user {
                switch byte {
                case UInt8(ascii: ","): escaped += Array("=2C".utf8)
                case UInt8(ascii: "="): escaped += Array("=3D".utf8)
                default: escaped.append(byte)
                }
            }
            return Array("n,a=".utf8) + escaped + Array(",".utf8) + [0x01] + Array("auth=Bearer ".utf8) + token + [0x01, 0x01]
        }
    }
}
