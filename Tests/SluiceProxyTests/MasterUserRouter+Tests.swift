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

/// A blocking line-oriented client for the test (loopback only).
private final class LineClient {
    private let fd: Int32
    private var received: [UInt8] = []

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw ProxyConfigurationError("connect failed") }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads until a line starting with `prefix` has arrived; returns everything up to it.
    func readUntil(lineStarting prefix: String) throws -> String {
        while true {
            let text = String(decoding: received, as: UTF8.self)
            if let range = text.range(of: "\r\n" + prefix) ?? (text.hasPrefix(prefix) ? text.startIndex..<text.startIndex : nil),
               let end = text[range.upperBound...].range(of: "\r\n") {
                received = Array(text[end.upperBound...].utf8)
                return String(text[..<end.upperBound])
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { throw ProxyConfigurationError("connection closed or timed out; got \(text.suffix(300))") }
            received += chunk[0..<count]
        }
    }
}

private let dovecotPort = getenv("DOVECOT_PORT").flatMap { Int(String(cString: $0)) }

@Suite("Pluggable router with master-user login (real Dovecot)", .enabled(if: dovecotPort != nil, "needs DOVECOT_PORT (scripts/test)"))
struct MasterUserRouterTests {
    /// Runs `body` (a blocking client) on a thread of its own: blocking a
    /// Swift concurrency thread would starve the router's task.
    private func withProxy(_ body: @escaping @Sendable (Int) throws -> Void) async throws {
        var configuration = ProxyConfiguration()
        configuration.listeners = [.init(host: "127.0.0.1", port: 0, security: .plain)]
        configuration.loginFailureDelay = .zero
        let upstream = try UpstreamEndpoint(.init(host: "127.0.0.1", port: dovecotPort!))
        let router = PasswordCheckingRouter(upstream: upstream, passwords: ["alice": "router-pw-alice", "bob": "router-pw-bob"])
        let server = try ProxyServer(configuration: configuration, router: router, logger: Logger(label: "test"))
        let addresses = try await server.start()
        let port = try #require(addresses.first?.port)
        let result: Result<Void, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: Result { try body(port) }) }
        }
        await server.shutdown(gracePeriod: .seconds(1))
        try result.get()
    }

    @Test("the router's verdict logs the user in upstream as a master user, never with the client's password")
    func masterLogin() async throws {
        try await withProxy { port in
            let client = try LineClient(port: port)
            _ = try client.readUntil(lineStarting: "* OK")
            // Dovecot does not know this password; only the router does.
            client.send("a LOGIN alice router-pw-alice\r\n")
            let login = try client.readUntil(lineStarting: "a ")
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
            _ = try client.readUntil(lineStarting: "* OK")
            client.send("a LOGIN alice secret-alice\r\n")  // Dovecot's password, not the router's
            #expect(try client.readUntil(lineStarting: "a ").contains("a NO [AUTHENTICATIONFAILED]"))
            client.send("b LOGIN broken x\r\n")
            #expect(try client.readUntil(lineStarting: "b ").contains("b NO [UNAVAILABLE]"))
            client.send("c LOGIN bob router-pw-bob\r\n")
            #expect(try client.readUntil(lineStarting: "c ").contains("c OK [CAPABILITY"))
        }
    }
}
