import NIOCore

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`) for `proxy_protocol_trusted`.
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    let bytes: [UInt8]
    let prefixLength: Int

    /// Parses `ADDRESS/BITS` or a single address.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let address = try? SocketAddress(ipAddress: first, port: 0),
              let bytes = IPNetwork.bytes(of: address) else { return nil }
        let bits = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
        guard let bits, bits >= 0, bits <= bytes.count * 8, parts.count == 1 || parts[1].allSatisfy(\.isNumber) else {
            return nil
        }
        self.bytes = bytes
        self.prefixLength = bits
    }

    /// The address bytes, IPv4-mapped IPv6 addresses as IPv4.
    static func bytes(of address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4): return withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12...]) }
            return bytes
        case .unixDomainSocket: return nil
        }
    }

    public func contains(_ address: SocketAddress) -> Bool {
        guard let other = IPNetwork.bytes(of: address), other.count == bytes.count else { return false }
        var bits = prefixLength
        for (a, b) in zip(bytes, other) {
            if bits <= 0 { return true }
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if a & mask != b & mask { return false }
            bits -= 8
        }
        return true
    }

    public var description: String {
        let address = bytes.count == 4 ? bytes.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map { String(Int(bytes[$0]) << 8 | Int(bytes[$0 + 1]), radix: 16) }
                .joined(separator: ":")
        return "\(address)/\(prefixLength)"
    }
}
