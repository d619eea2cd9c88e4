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

    private struct State {
        var maxConnections: Int?
        var maxPerIP: Int?
        var total = 0
        /// Counted whether or not there is a per-address limit, so that a
        /// reload that sets one starts from the right counts.
        var perIP: [String: Int] = [:]
    }

    private let state: NIOLockedValueBox<State>

    init(maxConnections: Int?, maxPerIP: Int?) {
        state = NIOLockedValueBox(State(maxConnections: maxConnections, maxPerIP: maxPerIP))
    }

    /// New limits (a reload); connections already open stay open.
    func update(maxConnections: Int?, maxPerIP: Int?) {
        state.withLockedValue {
            $0.maxConnections = maxConnections
            $0.maxPerIP = maxPerIP
        }
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    /// Every successful call is paired with one `release(ip:)` with the same
    /// arguments.
    ///
    /// A connection whose address comes later (from a PROXY header) takes its
    /// place in the total first, with `ip` `nil`, and its address's place once
    /// known, with `countingTotal` false: waiting for a header holds a
    /// descriptor too (red team 3).
    func acquire(ip: String?, countingTotal: Bool = true) -> Refusal? {
        state.withLockedValue { state in
            if countingTotal, let maxConnections = state.maxConnections, state.total >= maxConnections { return .limit }
            if let maxPerIP = state.maxPerIP, let ip, state.perIP[ip, default: 0] >= maxPerIP { return .perIPLimit }
            if countingTotal { state.total += 1 }
            if let ip { state.perIP[ip, default: 0] += 1 }
            return nil
        }
    }

    func release(ip: String?, countingTotal: Bool = true) {
        state.withLockedValue { state in
            if countingTotal { state.total -= 1 }
            guard let ip, let count = state.perIP[ip] else { return }
            state.perIP[ip] = count > 1 ? count - 1 : nil
        }
    }

    var open: Int { state.withLockedValue { $0.total } }
}
