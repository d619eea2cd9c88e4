import Testing
@testable import SluiceProxy

@Suite("Upstream address")
struct UpstreamAddressTests {
    @Test("IP addresses are connected to directly; host names are resolved at connect time")
    func numericAddresses() throws {
        let v4 = try UpstreamEndpoint(.init(host: "127.0.0.1", port: 143))
        #expect(v4.address?.ipAddress == "127.0.0.1" && v4.address?.port == 143)
        let v6 = try UpstreamEndpoint(.init(host: "::1", port: 993))
        #expect(v6.address?.ipAddress == "::1" && v6.address?.port == 993)
        #expect(try UpstreamEndpoint(.init(host: "localhost", port: 143)).address == nil)
        #expect(try UpstreamEndpoint(.init(host: "imap.example.org", port: 143)).address == nil)
    }
}

/// Both ways of connecting, through a real proxy against Dovecot.
@Suite("Upstream connect (real Dovecot)", .enabled(if: dovecotPort != nil, "needs DOVECOT_PORT (scripts/test)"))
struct UpstreamConnectTests {
    @Test("an upstream given by name (resolved) and by IP address both log in", arguments: ["localhost", "127.0.0.1"])
    func loginByNameAndAddress(host: String) async throws {
        var configuration = ProxyConfiguration()
        configuration.listeners = [.init(host: "127.0.0.1", port: 0, security: .plain)]
        configuration.routing = .static(.init(host: host, port: dovecotPort!))
        try await withLiveProxy(configuration: configuration) { port in
            let client = try LineClient(port: port)
            _ = try client.readUntil(lineStarting: "* OK")
            client.send("a LOGIN bob secret-bob\r\n")
            #expect(try client.readUntil(lineStarting: "a ").contains("a OK [CAPABILITY"))
            client.send("b SELECT INBOX\r\n")
            #expect(try client.readUntil(lineStarting: "b ").contains("b OK [READ-WRITE]"))
            client.send("c LOGOUT\r\n")
            #expect(try client.readUntil(lineStarting: "c ").contains("c OK"))
        }
    }
}
