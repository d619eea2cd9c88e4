import NIOCore
import Testing
@testable import SluiceProxy

/// PROXY protocol headers (HAProxy's proxy-protocol.txt) read and written.
/// The v2 vectors are built by hand from the specification's layout, not
/// by the writer under test.
@Suite("PROXY protocol")
struct ProxyProtocolTests {
    private func parse(_ bytes: [UInt8]) -> ProxyProtocol.Parse {
        ProxyProtocol.parse(ByteBuffer(bytes: bytes).readableBytesView)
    }

    private func parse(_ text: String) -> ProxyProtocol.Parse { parse(Array(text.utf8)) }

    private func header(_ result: ProxyProtocol.Parse) -> ProxyProtocol.Header? {
        if case .header(let header) = result { return header }
        return nil
    }

    private static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    @Test("v1: TCP4, TCP6 and UNKNOWN; what follows the line is left")
    func v1() throws {
        let four = try #require(header(parse("PROXY TCP4 192.0.2.7 198.51.100.1 50000 143\r\na LOGIN")))
        #expect(four.source?.ipAddress == "192.0.2.7" && four.source?.port == 50000)
        #expect(four.destination?.ipAddress == "198.51.100.1" && four.destination?.port == 143)
        #expect(four.length == "PROXY TCP4 192.0.2.7 198.51.100.1 50000 143\r\n".utf8.count)
        let six = try #require(header(parse("PROXY TCP6 2001:db8::7 2001:db8::1 50000 993\r\n")))
        #expect(six.source?.ipAddress == "2001:db8::7")
        let unknown = try #require(header(parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")))
        #expect(unknown.source == nil)
        // An IPv4-mapped IPv6 client is the IPv4 client it is (limits and logs key it one way).
        let mapped = try #require(header(parse("PROXY TCP6 ::ffff:192.0.2.7 ::ffff:198.51.100.1 5 6\r\n")))
        #expect(mapped.source == (try SocketAddress(ipAddress: "192.0.2.7", port: 5)))
    }

    @Test("v1: partial lines wait, malformed ones are refused")
    func v1Errors() {
        #expect(parse("PROX") == .needMore)
        #expect(parse("PROXY TCP4 192.0.2.7") == .needMore)
        for bad in ["GET / HTTP/1.1\r\n", "a LOGIN x y\r\n", "PROXY TCP4 192.0.2.7 198.51.100.1 50000\r\n",
                    "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n", "PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
                    "PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n", "PROXY TCP4 192.0.2.300 198.51.100.1 1 2\r\n",
                    "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n", "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
                    "PROXY " + String(repeating: "9", count: 120)] {
            guard case .invalid = parse(bad) else {
                Issue.record("accepted: \(bad.debugDescription)")
                continue
            }
        }
    }

    @Test("v2: PROXY over IPv4 and IPv6 with TLVs skipped, LOCAL, and the bytes after")
    func v2() throws {
        var four = ProxyProtocolTests.signature + [0x21, 0x11, 0x00, 12 + 7]
        four += [192, 0, 2, 7, 198, 51, 100, 1, 0xC3, 0x50, 0x00, 0x8F]  // 50000, 143
        four += [0x04, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]               // a TLV (PP2_TYPE_NOOP)
        let parsed = try #require(header(parse(four + Array("rest".utf8))))
        #expect(parsed.source?.ipAddress == "192.0.2.7" && parsed.source?.port == 50000)
        #expect(parsed.destination?.port == 143)
        #expect(parsed.length == four.count)
        var six = ProxyProtocolTests.signature + [0x21, 0x21, 0x00, 36]
        six += [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [7]
        six += [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        six += [0xC3, 0x50, 0x03, 0xE1]
        #expect(try #require(header(parse(six))).source?.ipAddress == "2001:db8::7")
        let local = try #require(header(parse(ProxyProtocolTests.signature + [0x20, 0x00, 0x00, 0x00])))
        #expect(local.source == nil && local.length == 16)
    }

    @Test("v2: cut short waits; wrong version, command, family or size is refused")
    func v2Errors() {
        #expect(parse(Array(ProxyProtocolTests.signature.prefix(7))) == .needMore)
        #expect(parse(ProxyProtocolTests.signature + [0x21, 0x11, 0x00, 12, 192, 0, 2]) == .needMore)
        let bad: [[UInt8]] = [
            ProxyProtocolTests.signature + [0x11, 0x11, 0x00, 0x00],      // version 1 in a v2 header
            ProxyProtocolTests.signature + [0x22, 0x11, 0x00, 0x00],      // command 2
            ProxyProtocolTests.signature + [0x21, 0x12, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // UDP
            ProxyProtocolTests.signature + [0x21, 0x11, 0x00, 4, 1, 2, 3, 4],                          // short addresses
            ProxyProtocolTests.signature + [0x21, 0x11, 0xFF, 0xFF],      // 64 KiB of TLVs
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B] + [0x21, 0x11, 0, 0],
        ]
        for bytes in bad {
            guard case .invalid = parse(bytes) else {
                Issue.record("accepted: \(bytes)")
                continue
            }
        }
    }

    @Test("every prefix of a valid header waits for more; none is refused (the reader gets bytes as they come)")
    func bytewise() throws {
        var v2 = ProxyProtocolTests.signature + [0x21, 0x11, 0x00, 12 + 7]
        v2 += [192, 0, 2, 7, 198, 51, 100, 1, 0xC3, 0x50, 0x00, 0x8F, 0x04, 0x00, 0x04, 0xDE, 0xAD, 0xBE, 0xEF]
        for bytes in [Array("PROXY TCP4 192.0.2.7 198.51.100.1 50000 143\r\n".utf8), v2] {
            for length in 0..<bytes.count {
                #expect(parse(Array(bytes.prefix(length))) == .needMore, "prefix of \(length) bytes")
            }
            #expect(header(parse(bytes))?.length == bytes.count)
        }
    }

    @Test("what the writer sends, the reader reads back (v1 and v2, IPv4 and IPv6)")
    func roundTrip() throws {
        let pairs: [(SocketAddress, SocketAddress)] = [
            (try SocketAddress(ipAddress: "192.0.2.7", port: 50000), try SocketAddress(ipAddress: "198.51.100.1", port: 143)),
            (try SocketAddress(ipAddress: "2001:db8::7", port: 1), try SocketAddress(ipAddress: "2001:db8::1", port: 993)),
        ]
        for version in ProxyProtocol.Version.allCases {
            for (source, destination) in pairs {
                let written = ProxyProtocol.header(version, source: source, destination: destination)
                let read = try #require(header(ProxyProtocol.parse(written.readableBytesView)))
                #expect(read.source == source && read.destination == destination && read.length == written.readableBytes)
            }
            // Mixed families or no address: the receiver keeps the connection's own.
            let unknown = ProxyProtocol.header(version, source: pairs[0].0, destination: pairs[1].1)
            #expect(try #require(header(ProxyProtocol.parse(unknown.readableBytesView))).source == nil)
        }
        #expect(String(buffer: ProxyProtocol.header(.v1, source: pairs[0].0, destination: pairs[0].1))
            == "PROXY TCP4 192.0.2.7 198.51.100.1 50000 143\r\n")
    }

    @Test("trusted networks: prefixes, single addresses, IPv4-mapped IPv6")
    func networks() throws {
        let loopback = try #require(IPNetwork("127.0.0.0/8"))
        #expect(loopback.contains(try SocketAddress(ipAddress: "127.0.0.9", port: 1)))
        #expect(!loopback.contains(try SocketAddress(ipAddress: "128.0.0.1", port: 1)))
        #expect(loopback.contains(try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 1)))
        let one = try #require(IPNetwork("192.0.2.7"))
        #expect(one.contains(try SocketAddress(ipAddress: "192.0.2.7", port: 1)))
        #expect(!one.contains(try SocketAddress(ipAddress: "192.0.2.8", port: 1)))
        let six = try #require(IPNetwork("2001:db8::/33"))
        #expect(six.contains(try SocketAddress(ipAddress: "2001:db8:7fff::1", port: 1)))
        #expect(!six.contains(try SocketAddress(ipAddress: "2001:db8:8000::1", port: 1)))
        #expect(IPNetwork("10.0.0.0/33") == nil && IPNetwork("nonsense") == nil && IPNetwork("10.0.0.0/-1") == nil)
        #expect(IPNetwork("0.0.0.0/0")?.contains(try SocketAddress(ipAddress: "203.0.113.1", port: 1)) == true)
    }
}
