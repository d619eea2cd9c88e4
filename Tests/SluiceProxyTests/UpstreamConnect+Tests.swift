import Testing
#if canImport(Glibc)
import Glibc
#endif
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
        let configuration = liveConfiguration(upstream: .init(host: host, port: dovecotPort!))
        try await withLiveProxy(configuration: configuration) { port in
            let client = try LineClient(port: port)
            #expect(try client.login("bob", "secret-bob").contains("a OK [CAPABILITY"))
            client.send("b SELECT INBOX\r\n")
            #expect(try client.readUntil(lineStarting: "b ").contains("b OK [READ-WRITE]"))
            client.send("c LOGOUT\r\n")
            #expect(try client.readUntil(lineStarting: "c ").contains("c OK"))
        }
    }
}

/// The client's address reaches Dovecot (which trusts loopback, see
/// scripts/dovecot-instance) through the ID command before login.
@Suite("Client address forwarding (real Dovecot)",
       .enabled(if: dovecotPort != nil && dovecotDirectory != nil, "needs DOVECOT_PORT and DOVECOT_DIR (scripts/test)"))
struct ClientAddressForwardingTests {
    /// Dovecot's login lines for `user` so far.
    private func loginLines(user: String) -> [String] {
        guard let file = fopen(dovecotDirectory! + "/dovecot.log", "r") else { return [] }
        defer { fclose(file) }
        var lines: [String] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            let text = String(cString: line!)
            if text.contains("Login: user=<\(user)>") { lines.append(text) }
        }
        free(line)
        return lines
    }

    /// Logs in as carol from `source` through a proxy with forwarding on or off;
    /// returns Dovecot's new login line.
    private func login(from source: String, forward: Bool) async throws -> String {
        let configuration = liveConfiguration(upstream: .init(host: "127.0.0.1", port: dovecotPort!,
                                                              forwardClientAddress: forward))
        let before = loginLines(user: "carol").count
        try await withLiveProxy(configuration: configuration) { port in
            let client = try LineClient(port: port, from: source)
            #expect(try client.login("carol", "secret-carol").contains("a OK [CAPABILITY"))
            client.send("b LOGOUT\r\n")
            _ = try client.readUntil(lineStarting: "b ")
        }
        for _ in 0..<50 {  // Dovecot's log process writes asynchronously
            let lines = loginLines(user: "carol")
            if lines.count > before { return lines[before] }
            usleep(100_000)
        }
        Issue.record("no login line for carol in dovecot.log")
        return ""
    }

    @Test("on by default: Dovecot logs the client's address, not the proxy's; off: the proxy's")
    func forwarded() async throws {
        #expect(try await login(from: "127.0.0.2", forward: true).contains("rip=127.0.0.2,"))
        let unforwarded = try await login(from: "127.0.0.3", forward: false)
        #expect(unforwarded.contains("rip=127.0.0.1,"))
        #expect(!unforwarded.contains("127.0.0.3"))
    }
}
