import NIOCore
/// `HOST:PORT`, or `[IPv6]:PORT`.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// The address's IP and port, or `nil` for an address without them (a Unix socket).
    public init?(_ address: SocketAddress?) {
        guard let address, let ip = address.ipAddress, let port = address.port else { return nil }
        self.init(host: ip, port: port)
    }

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `text`; the error is a sentence saying what was expected.
    public init(_ text: String) throws(ConfigurationIssue) {
        func fail(_ message: String) -> ConfigurationIssue {
            ConfigurationIssue(file: nil, line: nil, keyPath: "", message: message)
        }
        var host: Substring
        var portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw fail("expected [HOST]:PORT, got \(text)") }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw fail("expected HOST:PORT, got \(text)") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw fail("an IPv6 address needs brackets, [ADDRESS]:PORT, got \(text)") }
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else {
            throw fail("expected HOST:PORT with a port from 0 to 65535, got \(text)")
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// 127.0.0.0/8, ::1 or `localhost`: reachable from this machine only.
    public var isLoopback: Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".")
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}
