import NIOConcurrencyHelpers

/// Counts open client connections, in all and per client IP address, for
/// `limits.max_connections` and `limits.max_connections_per_ip` (review S12).
/// Shared by every listener and event loop, hence the lock; taken once per
/// connection, never on the relay path.
final class ConnectionLimiter: Sendable {
    enum Refusal: String, Sendable {
        case limit
        case perIPLimit = "per_ip_limit"
    }

    let maxConnections: Int?
    let maxPerIP: Int?
    private let state = NIOLockedValueBox<(total: Int, perIP: [String: Int])>((0, [:]))

    init(maxConnections: Int?, maxPerIP: Int?) {
        self.maxConnections = maxConnections
        self.maxPerIP = maxPerIP
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    /// Every successful call is paired with one `release(ip:)`.
    func acquire(ip: String?) -> Refusal? {
        state.withLockedValue { state in
            if let maxConnections, state.total >= maxConnections { return .limit }
            if let maxPerIP, let ip, state.perIP[ip, default: 0] >= maxPerIP { return .perIPLimit }
            state.total += 1
            if maxPerIP != nil, let ip { state.perIP[ip, default: 0] += 1 }
            return nil
        }
    }

    func release(ip: String?) {
        state.withLockedValue { state in
            state.total -= 1
            guard maxPerIP != nil, let ip, let count = state.perIP[ip] else { return }
            state.perIP[ip] = count > 1 ? count - 1 : nil
        }
    }

    var open: Int { state.withLockedValue { $0.total } }
}
