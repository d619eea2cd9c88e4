import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore

/// Every metric the proxy exports, created once with its bounded labels
/// (names and meanings: docs/operations.md). Through swift-metrics: the
/// `sluice` command bootstraps the Prometheus backend when the admin
/// listener is on; otherwise the handlers are swift-metrics' no-ops.
///
/// Labels never carry a user name, an address or a mailbox: listeners and
/// upstreams are the configured ones, results and reasons fixed sets.
public final class ProxyMetrics: Sendable {
    /// The outcome of a client's login (`result` label).
    public enum LoginResult: String, Sendable, CaseIterable {
        /// Logged in upstream.
        case ok
        /// Bad credentials, or the router's refusal.
        case rejected
        /// The upstream or the routing could not be reached.
        case unavailable
        /// The client left before the login's answer.
        case aborted
    }

    /// Why a connection was refused before its session started (`reason` label).
    public enum RefusalReason: String, Sendable, CaseIterable {
        case limit
        case perIPLimit = "per_ip_limit"
        case proxyProtocol = "proxy_protocol"
        case descriptors
    }

    public enum Side: String, Sendable, CaseIterable { case client, upstream }

    struct ListenerMetrics: Sendable {
        let active: Meter
        let total: Counter
    }

    private let listeners: [String: ListenerMetrics]
    let bytesFromClient = Counter(label: "sluice_bytes_total", dimensions: [("direction", "client_to_upstream")])
    let bytesFromUpstream = Counter(label: "sluice_bytes_total", dimensions: [("direction", "upstream_to_client")])
    private let logins: [LoginResult: [LoginMechanism: Counter]]
    private let loginDurations: [LoginResult: Timer]
    private let framingErrors: [Side: Counter]
    private let tlsHandshakes: [Side: (ok: Counter, failed: Counter)]
    private let refusals: [RefusalReason: Counter]
    private let reloads: (ok: Counter, failed: Counter)
    /// Upstream names come from the configuration (a bounded set), created on first use.
    private let upstreamConnects = NIOLockedValueBox([String: Timer]())

    /// `listeners`: the configured listen addresses (`HOST:PORT`).
    public init(listeners: [String]) {
        self.listeners = Dictionary(listeners.map { name in
            (name, ListenerMetrics(active: Meter(label: "sluice_sessions_active", dimensions: [("listener", name)]),
                                   total: Counter(label: "sluice_sessions_total", dimensions: [("listener", name)])))
        }, uniquingKeysWith: { first, _ in first })
        logins = Dictionary(uniqueKeysWithValues: LoginResult.allCases.map { result in
            (result, Dictionary(uniqueKeysWithValues: LoginMechanism.allCases.map { mechanism in
                (mechanism, Counter(label: "sluice_logins_total",
                                    dimensions: [("result", result.rawValue), ("mechanism", mechanism.rawValue)]))
            }))
        })
        loginDurations = Dictionary(uniqueKeysWithValues: LoginResult.allCases.map {
            ($0, Timer(label: ProxyMetrics.loginDuration, dimensions: [("result", $0.rawValue)], preferredDisplayUnit: .seconds))
        })
        framingErrors = Dictionary(uniqueKeysWithValues: Side.allCases.map {
            ($0, Counter(label: "sluice_framing_errors_total", dimensions: [("side", $0.rawValue)]))
        })
        tlsHandshakes = Dictionary(uniqueKeysWithValues: Side.allCases.map { side in
            (side, (ok: Counter(label: "sluice_tls_handshakes_total", dimensions: [("side", side.rawValue), ("result", "ok")]),
                    failed: Counter(label: "sluice_tls_handshakes_total", dimensions: [("side", side.rawValue), ("result", "failed")])))
        })
        refusals = Dictionary(uniqueKeysWithValues: RefusalReason.allCases.map {
            ($0, Counter(label: "sluice_connections_refused_total", dimensions: [("reason", $0.rawValue)]))
        })
        reloads = (ok: Counter(label: "sluice_config_reloads_total", dimensions: [("result", "ok")]),
                   failed: Counter(label: "sluice_config_reloads_total", dimensions: [("result", "failed")]))
    }

    /// The Prometheus names of the two histograms (for their buckets).
    public static let loginDuration = "sluice_login_duration_seconds"
    public static let upstreamConnectDuration = "sluice_upstream_connect_duration_seconds"

    func listener(_ name: String) -> ListenerMetrics? { listeners[name] }

    func login(_ result: LoginResult, mechanism: LoginMechanism, duration: TimeAmount) {
        logins[result]?[mechanism]?.increment()
        loginDurations[result]?.recordNanoseconds(duration.nanoseconds)
    }

    func upstreamConnected(_ upstream: String, after duration: TimeAmount) {
        let timer = upstreamConnects.withLockedValue { timers in
            if let timer = timers[upstream] { return timer }
            let timer = Timer(label: ProxyMetrics.upstreamConnectDuration, dimensions: [("upstream", upstream)],
                              preferredDisplayUnit: .seconds)
            timers[upstream] = timer
            return timer
        }
        timer.recordNanoseconds(duration.nanoseconds)
    }

    func framingError(_ side: Side) { framingErrors[side]?.increment() }

    func tlsHandshake(_ side: Side, succeeded: Bool) {
        guard let counters = tlsHandshakes[side] else { return }
        (succeeded ? counters.ok : counters.failed).increment()
    }

    func connectionRefused(_ reason: RefusalReason) { refusals[reason]?.increment() }

    public func configReloaded(succeeded: Bool) { (succeeded ? reloads.ok : reloads.failed).increment() }
}
