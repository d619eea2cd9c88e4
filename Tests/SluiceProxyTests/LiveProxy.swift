import Dispatch
import Logging
import NIOCore
@testable import SluiceConfig
@testable import SluiceProxy

#if canImport(Glibc)
import Glibc
#endif

/// The private Dovecot that scripts/test starts; tests that need it are
/// disabled (reported as skipped) without it.
let dovecotPort = getenv("DOVECOT_PORT").flatMap { Int(String(cString: $0)) }
/// Its directory (its log is `dovecot.log` there).
let dovecotDirectory = getenv("DOVECOT_DIR").map { String(cString: $0) }

/// Runs a real proxy on a free port with `configuration` (and `router`),
/// and `body` — a blocking client — on a thread of its own (blocking a
/// Swift concurrency thread could starve the proxy's tasks).
func withLiveProxy(configuration: ProxyConfiguration, router: (any Router)? = nil,
                   _ body: @escaping @Sendable (Int) throws -> Void) async throws {
    let server = try ProxyServer(configuration: configuration, router: router, logger: Logger(label: "test"))
    let addresses = try await server.start()
    guard let port = addresses.first?.port else { throw ProxyConfigurationError("no listener") }
    let result: Result<Void, any Error> = await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: Result { try body(port) }) }
    }
    await server.shutdown(gracePeriod: .seconds(1))
    try result.get()
}

/// A proxy configuration with one plain loopback listener on a free port and
/// `upstream` as the static route.
func liveConfiguration(upstream: ProxyConfiguration.Upstream) -> ProxyConfiguration {
    var configuration = ProxyConfiguration()
    configuration.listeners = [.init(host: "127.0.0.1", port: 0, security: .plain)]
    configuration.routing = .static(upstream)
    return configuration
}

/// A blocking line-oriented client for the test (loopback only).
final class LineClient {
    private let fd: Int32
    private var received: [UInt8] = []

    /// `from`: the loopback address to connect from (any of 127.0.0.0/8).
    init(port: Int, from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw ProxyConfigurationError("bind to \(source) failed") }
        }
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

    /// Reads the greeting and sends `a LOGIN user password`; returns the tagged reply.
    func login(_ user: String, _ password: String) throws -> String {
        _ = try readUntil(lineStarting: "* OK")
        send("a LOGIN \(user) \(password)\r\n")
        return try readUntil(lineStarting: "a ")
    }

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

