import NIOCore
import Testing
@testable import SluiceConfig
@testable import SluiceProxy

private func issues(_ yaml: String) -> [String] {
    do {
        _ = try ProxyConfiguration.parse(yaml: yaml, file: "test.yaml")
        return []
    } catch {
        return error.issues.map(\.description)
    }
}

@Suite("Configuration file")
struct ConfigurationFileTests {
    @Test("a complete file decodes into typed settings")
    func decodes() throws {
        let configuration = try ProxyConfiguration.parse(yaml: """
            mode: proxy
            greeting: "Mail ready."
            listeners:
              - address: "[::1]:1143"
              - address: 127.0.0.1:1993
                tls: implicit
            upstream:
              address: imap.internal:993
              tls: implicit
              verify: false
              server_name: imap.example.org
            timeouts: { pre_auth: 45s, idle: 31m, connect: 1500ms, login_failure_delay: 0s, shutdown_grace: 1h }
            limits: { max_bad_commands: 3, write_buffer_high_water_mark: 1MiB, write_buffer_low_water_mark: 64KiB,
                      client_max_literal_size: 2MiB, server_max_literal_size: 8MiB }
            log: { format: json }
            threads: 1
            """)
        #expect(configuration.greeting == "Mail ready.")
        #expect(configuration.threads == 1)
        #expect(configuration.listeners.map { "\($0.host) \($0.port) \($0.security.rawValue)" }
                == ["::1 1143 plain", "127.0.0.1 1993 implicit"])
        let upstream = try #require(configuration.staticUpstream)
        #expect(upstream.host == "imap.internal" && upstream.port == 993 && upstream.security == .implicit)
        #expect(upstream.verifyCertificate == false && upstream.serverName == "imap.example.org")
        #expect(configuration.preAuthTimeout == .seconds(45))
        #expect(configuration.idleTimeout == .minutes(31))
        #expect(configuration.connectTimeout == .milliseconds(1500))
        #expect(configuration.loginFailureDelay == .zero)
        #expect(configuration.shutdownGracePeriod == .hours(1))
        #expect(configuration.maxBadCommands == 3)
        #expect(configuration.writeBufferHighWaterMark == 1 << 20)
        #expect(configuration.writeBufferLowWaterMark == 64 << 10)
        #expect(configuration.clientLimits.maxLiteralSize == 2 << 20)
        #expect(configuration.serverLimits.maxLiteralSize == 8 << 20)
        #expect(configuration.logFormat == .json)
    }

    @Test("defaults when a key is absent")
    func defaults() throws {
        let configuration = try ProxyConfiguration.parse(yaml: "listeners: [{address: '127.0.0.1:1'}]\nupstream: {address: 'h:2'}")
        #expect(configuration.idleTimeout == .minutes(30))
        #expect(configuration.maxBadCommands == 5)
        #expect(configuration.mode == .proxy)
        #expect(configuration.threads == nil)
        #expect(configuration.staticUpstream?.security == .plain)
        #expect(configuration.staticUpstream?.verifyCertificate == true)
        #expect(configuration.completenessIssues(file: nil).isEmpty)
    }

    @Test("every problem is reported with its key path and line, in file order")
    func problems() {
        let found = issues("""
            listeners:
              - address: 127.0.0.1
                tls: maybe
            upstream:
              address: "[::1:143"
              verfy: no
            timeouts:
              idle: 500ms
              connect: soon
            limits:
              max_bad_commands: 0
              write_buffer_high_water_mark: 12QB
            colour: blue
            threads: 0
            """)
        #expect(found == [
            "test.yaml:2: listeners[0].address: expected HOST:PORT, got 127.0.0.1",
            "test.yaml:5: upstream.address: an IPv6 address needs brackets, [ADDRESS]:PORT, got [::1:143",
            "test.yaml:6: upstream.verfy: unknown key (expected one of: address, ca, forward_client_address, proxy_protocol, server_name, tls, tls_min_version, verify)",
            "test.yaml:8: timeouts.idle: must be at least 1s (RFC 3501 asks for 30m)",
            "test.yaml:9: timeouts.connect: expected a duration such as 500ms, 30s, 10m or 1h, got soon",
            "test.yaml:11: limits.max_bad_commands: expected a whole number from 1 to 1000, got 0",
            "test.yaml:12: limits.write_buffer_high_water_mark: expected a size from 4096 to 67108864 bytes (e.g. 256KiB), got 12QB",
            "test.yaml:13: colour: unknown key (expected one of: admin, auth_mechanisms, greeting, limits, listeners, log, mode, routing, rules, threads, timeouts, tls, upstream)",
            "test.yaml:14: threads: expected a whole number from 1 to 256, got 0",
        ])
    }

    @Test("wrong types and YAML syntax errors name the line")
    func types() {
        #expect(issues("listeners: 127.0.0.1:1143\n") == ["test.yaml:1: listeners: expected a list, got \"127.0.0.1:1143\""])
        // Limits per direction: the key that set both is refused, naming the new ones.
        #expect(issues("limits:\n  max_literal_size: 1MiB\n") == [
            "test.yaml:2: limits.max_literal_size: set per direction: client_max_literal_size (commands) "
                + "and server_max_literal_size (responses)",
        ])
        // The admin listener serves metrics without authentication: loopback unless allowed.
        #expect(issues("admin:\n  listen: 0.0.0.0:9143\n").first?.hasPrefix("test.yaml:2: admin.listen: the admin listener") == true)
        #expect(issues("admin:\n  listen: 0.0.0.0:9143\n  allow_remote: true\n").allSatisfy { !$0.contains("admin") })
        #expect(issues("upstream:\n  - a\n") == ["test.yaml:2: upstream: expected a mapping (key: value), got a list"])
        #expect(issues("listeners: [\n").first?.hasPrefix("test.yaml:2: not valid YAML") == true)
        #expect(issues("greeting: \"two\\nlines\"\n") == ["test.yaml:1: greeting: must be one line of at most 200 bytes"])
        #expect(issues("tls:\n  certificates:\n    - cert: /nonexistent.pem\n      key: /nonexistent.key\n")
                == ["test.yaml:3: tls.certificates[0].cert: cannot read /nonexistent.pem"])
    }

    @Test("completeness: listeners, an upstream, certificates for TLS, transparent-mode constraints")
    func completeness() throws {
        var configuration = ProxyConfiguration()
        #expect(configuration.completenessIssues(file: nil).map(\.keyPath) == ["listeners", "upstream"])
        configuration.listeners = [.init(host: "::", port: 993, security: .implicit)]
        configuration.routing = .static(.init(host: "h", port: 143, security: .starttls))
        configuration.mode = .transparent
        #expect(configuration.completenessIssues(file: nil).map(\.keyPath) == ["tls.certificates", "upstream.tls"])
    }
}

@Suite("Routing map")
struct RoutingMapTests {
    static let map = """
        upstreams:
          main: { address: "10.0.0.1:143" }
          legacy: { address: "10.0.0.2:143" }
        users:
          alice@old.example: { upstream: main, login: alice@new.example, groups: [staff, migrated] }
          bob: legacy
        patterns:
          - match: '^(.+)@legacy\\.example$'
            upstream: legacy
            login: '$1@example.org'
          - match: '(?i)^admin-(\\w+)$'
            upstream: main
        """

    @Test("exact names win, then patterns in order, with $n rewriting; unknown users have no route")
    func routes() throws {
        let map = try RoutingMap.parse(yaml: RoutingMapTests.map)
        func describe(_ user: String) -> String? {
            guard let route = map.route(user: user) else { return nil }
            return "\(route.upstreamName) \(route.upstream.host) \(route.login)"
        }
        #expect(describe("alice@old.example") == "main 10.0.0.1 asUser(\"alice@new.example\")")
        #expect(map.route(user: "alice@old.example")?.groups == ["staff", "migrated"])
        #expect(map.route(user: "bob")?.groups == [])
        #expect(describe("bob") == "legacy 10.0.0.2 asUser(\"bob\")")
        #expect(describe("carol@legacy.example") == "legacy 10.0.0.2 asUser(\"carol@example.org\")")
        #expect(describe("ADMIN-root") == "main 10.0.0.1 asUser(\"ADMIN-root\")")
        #expect(describe("xcarol@legacy.example.com") == nil, "a pattern must match the whole name")
        #expect(describe("carol") == nil)
        let withFallback = try RoutingMap.parse(yaml: RoutingMapTests.map + "\nfallback: main\n")
        #expect(withFallback.route(user: "carol")?.upstreamName == "main")
    }

    @Test("templates: $0, missing groups, $$ and a lone $")
    func substitution() {
        let groups: [Substring?] = ["whole", "one", nil]
        #expect(LoginRewrite.substitute("$1-$2-$0", groups: groups) == "one--whole")
        #expect(LoginRewrite.substitute("$$1 costs $", groups: groups) == "$1 costs $")
        #expect(LoginRewrite.substitute("$9$x", groups: groups) == "$x")
    }

    @Test("problems in a map name the key and line")
    func problems() {
        do {
            _ = try RoutingMap.parse(yaml: """
                upstreams:
                  main: { address: "10.0.0.1" }
                users:
                  alice: nowhere
                  bob: { login: x }
                patterns:
                  - match: '(['
                    upstream: main
                fallback: gone
                """, file: "map.yaml")
            Issue.record("a broken map parsed")
        } catch {
            let lines = error.issues.map(\.description)
            #expect(lines.count == 5)
            #expect(lines[0] == "map.yaml:2: upstreams.main.address: expected HOST:PORT, got 10.0.0.1")
            #expect(lines[1] == "map.yaml:4: users.alice: no upstream named nowhere under upstreams:")
            #expect(lines[2] == "map.yaml:5: users.bob: needs upstream: NAME")
            #expect(lines[3].hasPrefix("map.yaml:7: patterns[0].match: not a valid regular expression"))
            #expect(lines[4] == "map.yaml:9: fallback: no upstream named gone under upstreams:")
        }
    }
}

@Suite("Listener certificates")
struct CertificateNameTests {
    @Test("SNI names: exact and one-label wildcards")
    func names() throws {
        func serves(_ patterns: [String], _ name: String) -> Bool {
            patterns.contains { CertificateStore.matches(pattern: $0, name: name) }
        }
        #expect(serves(["mail.example.org"], "mail.example.org"))
        #expect(serves(["*.example.org"], "imap.example.org"))
        #expect(!serves(["*.example.org"], "example.org"))
        #expect(!serves(["*.example.org"], "a.b.example.org"))
        #expect(!serves(["mail.example.org"], "mail.example.org.evil"))
    }
}
