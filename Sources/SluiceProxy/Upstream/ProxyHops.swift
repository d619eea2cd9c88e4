import IMAPWire

/// How many proxies a login may still pass, carried from proxy to proxy as
/// `x-proxy-ttl` in the `ID` sent before login (Dovecot's proxy does the same,
/// with the same start of 5). A route that leads back to a proxy in the chain
/// (an auth service answering with the proxy's own address) would otherwise
/// open connection after connection until the login timeout (red team 3):
/// each hop forwards one less, and a proxy given 1 or less refuses the login.
///
/// The value is taken from any client, not only from trusted proxies: a
/// client can only lower it, which harms nobody but its own login, since a
/// value above the start counts as the start.
enum ProxyHops {
    static let initial = 5

    /// The hops left for this proxy: the client's `x-proxy-ttl`, at most
    /// `initial`; `initial` when there is none or it is not a number.
    static func left(after clientID: IDParameters?) -> Int {
        guard let field = clientID?.fields.last(where: { $0.key.lowercased() == "x-proxy-ttl" }),
              let text = field.value, (1...4).contains(text.utf8.count),
              text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let value = Int(text) else { return initial }
        return min(value, initial)
    }

    /// Whether a login with these hops left must not be proxied further.
    static func exhausted(after clientID: IDParameters?) -> Bool { left(after: clientID) <= 1 }

    static let refusal = "NO [UNAVAILABLE] Too many proxy hops: the route leads back to a proxy."
}
