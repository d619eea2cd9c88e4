import NIOCore

/// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
/// 2): a load balancer in front of Sluice sends it first on each
/// connection to say who the client is, and Sluice sends it to an upstream
/// (Dovecot's `haproxy = yes` listeners) for the same reason.
///
/// Parsing is a pure function of the bytes so far, without I/O.
public enum ProxyProtocol {
    /// What the header says.
    public struct Header: Equatable, Sendable {
        /// The client's address, or `nil` for `LOCAL` / `UNKNOWN` (the
        /// balancer's own health check: the connection's address stands).
        public var source: SocketAddress?
        public var destination: SocketAddress?
        /// Bytes the header took.
        public var length: Int
    }

    public enum Parse: Equatable, Sendable {
        case needMore
        case header(Header)
        case invalid(String)
    }

    /// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// A v1 line is at most 107 bytes with its CRLF.
    static let maxV1Length = 107
    /// The longest v2 header accepted (16 bytes, addresses and TLVs). The
    /// format allows 64 KiB of TLVs; balancers send a few dozen bytes.
    public static let maxV2Length = 16 + 4096

    /// Reads a header at the start of `bytes`.
    public static func parse(_ bytes: ByteBufferView) -> Parse {
        let prefix = Array(bytes.prefix(16))
        if prefix.first == 0x0D {
            let known = min(prefix.count, signature.count)
            guard prefix[0..<known].elementsEqual(signature[0..<known]) else { return .invalid("not a PROXY header") }
            return prefix.count < 16 ? .needMore : parseV2(bytes)
        }
        let v1 = Array("PROXY ".utf8)
        let known = min(prefix.count, v1.count)
        guard prefix[0..<known].elementsEqual(v1[0..<known]) else { return .invalid("not a PROXY header") }
        return parseV1(bytes)
    }

    private static func parseV1(_ bytes: ByteBufferView) -> Parse {
        guard let lineFeed = bytes.prefix(maxV1Length).firstIndex(of: 0x0A) else {
            return bytes.count >= maxV1Length ? .invalid("PROXY v1 line longer than 107 bytes") : .needMore
        }
        let line = Array(bytes[bytes.startIndex..<lineFeed])
        guard line.last == 0x0D else { return .invalid("PROXY v1 line not ended by CRLF") }
        let fields = line.dropLast().split(separator: 0x20, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        let length = line.count + 1
        guard fields.count >= 2 else { return .invalid("PROXY v1 line without a protocol") }
        if fields[1] == "UNKNOWN" { return .header(Header(source: nil, destination: nil, length: length)) }
        guard fields[1] == "TCP4" || fields[1] == "TCP6", fields.count == 6 else {
            return .invalid("PROXY v1: expected TCP4, TCP6 or UNKNOWN with two addresses and two ports")
        }
        guard let sourcePort = port(fields[4]), let destinationPort = port(fields[5]),
              let source = try? SocketAddress(ipAddress: fields[2], port: sourcePort),
              let destination = try? SocketAddress(ipAddress: fields[3], port: destinationPort),
              isV4(source) == (fields[1] == "TCP4"), isV4(destination) == (fields[1] == "TCP4")
        else { return .invalid("PROXY v1: an address or port does not read") }
        return .header(Header(source: unmapped(source), destination: unmapped(destination), length: length))
    }

    /// A decimal port without sign or leading zeros, 0–65535.
    private static func port(_ text: String) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber),
              text == "0" || !text.hasPrefix("0"), let value = Int(text), value <= 65535 else { return nil }
        return value
    }

    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) as the IPv4 address
    /// it is, so limits, logs and the auth service see one client one way.
    static func unmapped(_ address: SocketAddress?) -> SocketAddress? {
        guard let address, case .v6 = address, let bytes = IPNetwork.bytes(of: address), bytes.count == 4 else { return address }
        return ipv4(bytes, port: address.port ?? 0)
    }

    private static func isV4(_ address: SocketAddress) -> Bool {
        if case .v4 = address { return true }
        return false
    }

    private static func parseV2(_ bytes: ByteBufferView) -> Parse {
        let head = Array(bytes.prefix(16))
        let versionCommand = head[12], family = head[13]
        let length = Int(head[14]) << 8 | Int(head[15])
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2: version \(versionCommand >> 4)") }
        guard 16 + length <= maxV2Length else { return .invalid("PROXY v2 header over \(maxV2Length) bytes") }
        guard bytes.count >= 16 + length else { return .needMore }
        let body = Array(bytes.dropFirst(16).prefix(length))
        switch versionCommand & 0x0F {
        case 0x0:  // LOCAL: the balancer's own connection
            return .header(Header(source: nil, destination: nil, length: 16 + length))
        case 0x1:  // PROXY
            break
        default:
            return .invalid("PROXY v2: unknown command \(versionCommand & 0x0F)")
        }
        func port(_ offset: Int) -> Int { Int(body[offset]) << 8 | Int(body[offset + 1]) }
        switch family {
        case 0x11:  // TCP over IPv4
            guard body.count >= 12 else { return .invalid("PROXY v2: IPv4 addresses cut short") }
            let source = ipv4(Array(body[0..<4]), port: port(8)), destination = ipv4(Array(body[4..<8]), port: port(10))
            return .header(Header(source: source, destination: destination, length: 16 + length))
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("PROXY v2: IPv6 addresses cut short") }
            let source = unmapped(ipv6(Array(body[0..<16]), port: port(32)))
            let destination = unmapped(ipv6(Array(body[16..<32]), port: port(34)))
            return .header(Header(source: source, destination: destination, length: 16 + length))
        case 0x00:  // UNSPEC: the connection's own address stands
            return .header(Header(source: nil, destination: nil, length: 16 + length))
        default:
            return .invalid("PROXY v2: address family \(family) is not TCP")
        }
        // TLVs after the addresses are skipped: none changes what Sluice does.
    }

    private static func ipv4(_ bytes: [UInt8], port: Int) -> SocketAddress? {
        try? SocketAddress(ipAddress: bytes.map(String.init).joined(separator: "."), port: port)
    }

    private static func ipv6(_ bytes: [UInt8], port: Int) -> SocketAddress? {
        let groups = stride(from: 0, to: 16, by: 2).map { String(Int(bytes[$0]) << 8 | Int(bytes[$0 + 1]), radix: 16) }
        return try? SocketAddress(ipAddress: groups.joined(separator: ":"), port: port)
    }

    // MARK: - Writing

    public enum Version: String, Sendable, CaseIterable {
        case v1, v2
    }

    /// The header for a connection from `source` to `destination`; `UNKNOWN`
    /// / `LOCAL` when either is not an IP address of the same family.
    public static func header(_ version: Version, source: SocketAddress?, destination: SocketAddress?) -> ByteBuffer {
        var buffer = ByteBuffer()
        let addresses = source.flatMap { source in destination.map { (source, $0) } }
        let bytes = addresses.flatMap { pair in rawBytes(pair.0).flatMap { from in rawBytes(pair.1).map { (from, $0) } } }
        guard let (source, destination) = addresses, let (from, to) = bytes, from.count == to.count else {
            if version == .v1 {
                buffer.writeString("PROXY UNKNOWN\r\n")
            } else {
                buffer.writeBytes(signature)
                buffer.writeBytes([0x20, 0x00, 0x00, 0x00])  // LOCAL
            }
            return buffer
        }
        let four = from.count == 4
        switch version {
        case .v1:
            buffer.writeString("PROXY \(four ? "TCP4" : "TCP6") \(source.ipAddress ?? "") \(destination.ipAddress ?? "") "
                + "\(source.port ?? 0) \(destination.port ?? 0)\r\n")
        case .v2:
            buffer.writeBytes(signature)
            buffer.writeBytes([0x21, four ? 0x11 : 0x21, 0x00, four ? 12 : 36])
            buffer.writeBytes(from)
            buffer.writeBytes(to)
            buffer.writeInteger(UInt16(source.port ?? 0))
            buffer.writeInteger(UInt16(destination.port ?? 0))
        }
        return buffer
    }

    /// An IP address's bytes as it is (4 for IPv4, 16 for IPv6); `nil` for a socket path.
    private static func rawBytes(_ address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4): return withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): return withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        case .unixDomainSocket: return nil
        }
    }
}
