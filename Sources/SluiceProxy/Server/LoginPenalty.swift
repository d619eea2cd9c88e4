import IMAPWire
import NIOConcurrencyHelpers
import NIOCore

/// Slows failed logins per client address across connections, like
/// Dovecot's auth penalty: each failure within `window` adds one more
/// `timeouts.login_failure_delay` to the next failure's answer, up to
/// `limits.max_login_penalty`. The per-connection delay alone let an
/// attacker guess in parallel over many connections (review S12).
final class LoginPenalty: Sendable {
    private let delays: NIOLockedValueBox<(base: TimeAmount, maximum: TimeAmount)>
    let window: TimeAmount
    /// Addresses remembered at most (`IMAPLimits.maxPenalizedAddresses`).
    static let maxAddresses = IMAPLimits.maxPenalizedAddresses

    private let failures = NIOLockedValueBox<[String: (count: Int, last: NIODeadline)]>([:])

    init(baseDelay: TimeAmount, maximum: TimeAmount, window: TimeAmount = .minutes(5)) {
        delays = NIOLockedValueBox((baseDelay, maximum))
        self.window = window
    }

    var baseDelay: TimeAmount { delays.withLockedValue { $0.base } }

    /// New delays (a reload); penalties already counted are kept.
    func update(baseDelay: TimeAmount, maximum: TimeAmount) {
        delays.withLockedValue { $0 = (baseDelay, maximum) }
    }

    /// How long a failed login's answer waits. Only a refused password
    /// counts toward the address's penalty: a login that could not be
    /// checked (`unavailable`: the router or the server failed, a proxy loop)
    /// waits the base delay and is not held against the address (red team 3:
    /// an auth-service outage stretched every client's next answers).
    func failed(ip: String?, unavailable: Bool, now: NIODeadline = .now()) -> TimeAmount {
        unavailable ? baseDelay : failed(ip: ip, now: now)
    }

    /// Records a failed login from `ip` and returns how long its answer waits.
    func failed(ip: String?, now: NIODeadline = .now()) -> TimeAmount {
        let (baseDelay, maximum) = delays.withLockedValue { $0 }
        guard let ip else { return baseDelay }
        let count = failures.withLockedValue { failures -> Int in
            var entry = failures[ip] ?? (0, now)
            if now - entry.last > window { entry.count = 0 }
            entry.count += 1
            entry.last = now
            if failures[ip] == nil, failures.count >= LoginPenalty.maxAddresses {
                let cutoff = now - window
                failures = failures.filter { $0.value.last > cutoff }
                if failures.count >= LoginPenalty.maxAddresses { failures.removeAll(keepingCapacity: true) }
            }
            failures[ip] = entry
            return entry.count
        }
        let product = baseDelay.nanoseconds.multipliedReportingOverflow(by: Int64(count))
        let ceiling = max(maximum, baseDelay)
        if product.overflow { return ceiling }
        return max(baseDelay, min(.nanoseconds(product.partialValue), ceiling))
    }

    /// The key failures are counted under: an IPv4 address, or the /64 of an
    /// IPv6 address (one host usually has a whole /64, so counting single
    /// IPv6 addresses would let it start afresh with every login, and fill
    /// the table). IPv4-mapped IPv6 addresses count as their IPv4 address.
    static func key(for address: SocketAddress?) -> String? {
        guard let address else { return nil }
        switch address {
        case .v4:
            return address.ipAddress
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            guard bytes.count == 16 else { return address.ipAddress }
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
                return bytes[12...].map(String.init).joined(separator: ".")
            }
            return bytes[0..<8].map { String($0, radix: 16) }.joined(separator: ":") + "::/64"
        case .unixDomainSocket:
            return nil
        }
    }

    /// A successful login clears the address's record.
    func succeeded(ip: String?) {
        guard let ip else { return }
        _ = failures.withLockedValue { $0.removeValue(forKey: ip) }
    }
}
