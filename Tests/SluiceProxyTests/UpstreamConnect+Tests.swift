import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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
@Suite("Client address forwarding (real Dovecot)", .serialized,
       .enabled(if: dovecotPort != nil && dovecotDirectory != nil, "needs DOVECOT_PORT and DOVECOT_DIR (scripts/test)"))
struct ClientAddressForwardingTests {
    /// Dovecot's login lines for `user` so far.
    private func loginLines(user: String) -> [String] {
        logLines(containing: "Login: user=<\(user)>")
    }

    /// Lines of Dovecot's log that contain `needle`.
    private func logLines(containing needle: String) -> [String] {
        guard let file = fopen(dovecotDirectory! + "/dovecot.log", "r") else { return [] }
        defer { fclose(file) }
        var lines: [String] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.contains(needle) { lines.append(text) }
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

    @Test("the client's own ID reaches Dovecot; its forged x-originating-ip does not")
    func forwardsClientID() async throws {
        let configuration = liveConfiguration(upstream: .init(host: "127.0.0.1", port: dovecotPort!))
        let marker = "LiveIDTest\(UInt32.random(in: 0...UInt32.max))"
        let before = loginLines(user: "carol").count
        try await withLiveProxy(configuration: configuration) { port in
            let client = try LineClient(port: port, from: "127.0.0.4")
            _ = try client.readUntil(lineStarting: "* OK")
            client.send("i ID (\"name\" \"\(marker)\" \"x-originating-ip\" \"198.51.100.66\")\r\n")
            _ = try client.readUntil(lineStarting: "i ")
            client.send("a LOGIN carol secret-carol\r\n")
            #expect(try client.readUntil(lineStarting: "a ").contains("a OK [CAPABILITY"))
            client.send("b LOGOUT\r\n")
            _ = try client.readUntil(lineStarting: "b ")
        }
        var idLine: String?
        for _ in 0..<50 where idLine == nil {  // Dovecot's log process writes asynchronously
            idLine = logLines(containing: marker).first
            if idLine == nil { usleep(100_000) }
        }
        // imap_id_log = * (scripts/test): Dovecot logs the ID fields it received.
        #expect(idLine != nil, "Dovecot did not log the client's ID name")
        #expect(idLine.map { !$0.contains("198.51.100.66") } ?? false, "the client's x-originating-ip was forwarded")
        let login = loginLines(user: "carol").dropFirst(before).first ?? ""
        #expect(login.contains("rip=127.0.0.4,"), "\(login)")
    }

    @Test("on by default: Dovecot logs the client's address, not the proxy's; off: the proxy's")
    func forwarded() async throws {
        #expect(try await login(from: "127.0.0.2", forward: true).contains("rip=127.0.0.2,"))
        let unforwarded = try await login(from: "127.0.0.3", forward: false)
        #expect(unforwarded.contains("rip=127.0.0.1,"))
        #expect(!unforwarded.contains("127.0.0.3"))
    }
}

@Suite("Resolver cache")
struct ResolverCacheTests {
    /// A lookup that counts its calls and answers with `answer` (or fails).
    final class CountingLookup: Sendable {
        let calls = NIOLockedValueBox(0)
        let fail = NIOLockedValueBox(false)
        func lookup(_ host: String, _ port: Int) throws -> [SocketAddress] {
            calls.withLockedValue { $0 += 1 }
            if fail.withLockedValue({ $0 }) { throw UpstreamResolutionError(host: host, reason: "test failure") }
            return [try SocketAddress(ipAddress: "::1", port: port), try SocketAddress(ipAddress: "127.0.0.1", port: port)]
        }
    }

    @Test("answers are kept for the TTL, per host and port; failures are not kept")
    func keepsAnswers() throws {
        let counter = CountingLookup()
        let cache = ResolverCache(ttl: .milliseconds(300), lookup: { try counter.lookup($0, $1) })
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let first = try cache.addresses(host: "imap.test", port: 143, on: loop).wait()
        #expect(first.map(\.port) == [143, 143])
        _ = try cache.addresses(host: "imap.test", port: 143, on: loop).wait()
        #expect(counter.calls.withLockedValue { $0 } == 1)
        _ = try cache.addresses(host: "imap.test", port: 993, on: loop).wait()
        #expect(counter.calls.withLockedValue { $0 } == 2)
        usleep(400_000)
        _ = try cache.addresses(host: "imap.test", port: 143, on: loop).wait()
        #expect(counter.calls.withLockedValue { $0 } == 3)

        counter.fail.withLockedValue { $0 = true }
        #expect(throws: UpstreamResolutionError.self) { try cache.addresses(host: "down.test", port: 143, on: loop).wait() }
        counter.fail.withLockedValue { $0 = false }
        #expect(try cache.addresses(host: "down.test", port: 143, on: loop).wait().count == 2)
        #expect(counter.calls.withLockedValue { $0 } == 5)
    }

    @Test("one lookup answers both the A and the AAAA question of a connection")
    func splitsFamilies() throws {
        let counter = CountingLookup()
        let cache = ResolverCache(ttl: .seconds(30), lookup: { try counter.lookup($0, $1) })
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let resolver = CachingResolver(cache: cache, eventLoop: loop)
        let v6 = try resolver.initiateAAAAQuery(host: "imap.test", port: 143).wait()
        let v4 = try resolver.initiateAQuery(host: "imap.test", port: 143).wait()
        #expect(v6.map(\.ipAddress) == ["::1"] && v4.map(\.ipAddress) == ["127.0.0.1"])
        #expect(counter.calls.withLockedValue { $0 } == 1)
    }

    @Test("getaddrinfo: localhost (from /etc/hosts, no DNS needed) resolves with the port")
    func realLookup() throws {
        let addresses = try ResolverCache.getaddrinfoLookup(host: "localhost", port: 143)
        #expect(!addresses.isEmpty && addresses.allSatisfy { $0.port == 143 })
        #expect(addresses.contains { $0.ipAddress == "127.0.0.1" || $0.ipAddress == "::1" })
    }
}
