import Dispatch
import Logging
import NIOCore
import NIOPosix
import Testing
@testable import SluiceProxy

#if canImport(Glibc)
import Glibc
#endif

/// A router like an HTTP auth service: checks the password itself
/// (asynchronously), then sends the user upstream through a master login,
/// so the upstream never sees the client's password.
private struct PasswordCheckingRouter: Router {
    let upstream: UpstreamEndpoint
    let passwords: [String: String]

    func route(_ request: RouteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RouteDecision> {
        let upstream = self.upstream
        let passwords = self.passwords
        return eventLoop.makeFutureWithTask {
            try await Task.sleep(nanoseconds: 1_000_000)  // a remote lookup
            let user = request.credentials.userName
            if user == "broken" { throw ProxyConfigurationError("auth service unreachable") }
            guard passwords[user] == String(decoding: request.credentials.password, as: UTF8.self) else {
                return .unknownUser
            }
            return .route(Route(upstream: upstream, login: .masterUser(
                user: user, masterUser: "sluice-master", masterPassword: Array("secret-master".utf8), separator: "*")))
        }
    }
}


@Suite("Pluggable router with master-user login (real Dovecot)", .enabled(if: dovecotPort != nil, "needs DOVECOT_PORT (scripts/test)"))
struct MasterUserRouterTests {
    private func withProxy(_ body: @escaping @Sendable (Int) throws -> Void) async throws {
        var configuration = ProxyConfiguration()
        configuration.listeners = [.init(host: "127.0.0.1", port: 0, security: .plain)]
        configuration.loginFailureDelay = .zero
        let upstream = try UpstreamEndpoint(.init(host: "127.0.0.1", port: dovecotPort!))
        let router = PasswordCheckingRouter(upstream: upstream, passwords: ["alice": "router-pw-alice", "bob": "router-pw-bob"])
        try await withLiveProxy(configuration: configuration, router: router, body)
    }

    @Test("the router's verdict logs the user in upstream as a master user, never with the client's password")
    func masterLogin() async throws {
        try await withProxy { port in
            let client = try LineClient(port: port)
            // Dovecot does not know this password; only the router does.
            let login = try client.login("alice", "router-pw-alice")
            #expect(login.contains("a OK [CAPABILITY"), "\(login)")
            client.send("b SELECT INBOX\r\nc LOGOUT\r\n")
            let select = try client.readUntil(lineStarting: "b ")
            #expect(select.contains("b OK [READ-WRITE]"), "\(select)")

            // The same mailbox as alice's own login, directly at Dovecot.
            let direct = try LineClient(port: dovecotPort!)
            _ = try direct.readUntil(lineStarting: "* OK")
            direct.send("a LOGIN alice secret-alice\r\nb SELECT INBOX\r\n")
            let directSelect = try direct.readUntil(lineStarting: "b ")
            func exists(_ text: String) -> Substring? {
                text.split(separator: "\r\n").first { $0.hasSuffix(" EXISTS") }
            }
            #expect(exists(select) != nil && exists(select) == exists(directSelect))
        }
    }

    @Test("a wrong password is refused by the router and no upstream login happens; a failing router gives UNAVAILABLE")
    func refusals() async throws {
        try await withProxy { port in
            let client = try LineClient(port: port)
            // Dovecot's password, not the router's
            #expect(try client.login("alice", "secret-alice").contains("a NO [AUTHENTICATIONFAILED]"))
            client.send("b LOGIN broken x\r\n")
            #expect(try client.readUntil(lineStarting: "b ").contains("b NO [UNAVAILABLE]"))
            client.send("c LOGIN bob router-pw-bob\r\n")
            #expect(try client.readUntil(lineStarting: "c ").contains("c OK [CAPABILITY"))
        }
    }
}
