import NIOCore
import Testing
@testable import SluiceProxy

@Suite("Connection limits and login penalty")
struct ConnectionLimitsTests {
    @Test("the global and per-address caps refuse with their reason and free on release")
    func limiter() {
        let limiter = ConnectionLimiter(maxConnections: 3, maxPerIP: 2)
        #expect(limiter.acquire(ip: "10.0.0.1") == nil)
        #expect(limiter.acquire(ip: "10.0.0.1") == nil)
        #expect(limiter.acquire(ip: "10.0.0.1") == .perIPLimit)
        #expect(limiter.acquire(ip: "10.0.0.2") == nil)
        #expect(limiter.acquire(ip: "10.0.0.3") == .limit)
        limiter.release(ip: "10.0.0.1")
        #expect(limiter.acquire(ip: "10.0.0.1") == nil)
        #expect(limiter.open == 3)
    }

    @Test("a connection waiting for its PROXY header holds a place in the total; its address's place comes later")
    func limiterBeforeAddress() {
        let limiter = ConnectionLimiter(maxConnections: 2, maxPerIP: 1)
        #expect(limiter.acquire(ip: nil) == nil)
        #expect(limiter.acquire(ip: nil) == nil)
        #expect(limiter.acquire(ip: nil) == .limit, "two waiting connections fill the proxy")
        #expect(limiter.acquire(ip: "10.0.0.1", countingTotal: false) == nil, "the header does not count twice")
        #expect(limiter.acquire(ip: "10.0.0.1", countingTotal: false) == .perIPLimit)
        #expect(limiter.open == 2)
        limiter.release(ip: "10.0.0.1", countingTotal: false)
        #expect(limiter.acquire(ip: "10.0.0.1", countingTotal: false) == nil)
        limiter.release(ip: nil)
        limiter.release(ip: nil)
        #expect(limiter.open == 0)
    }

    @Test("no limits configured: nothing is refused")
    func unlimited() {
        let limiter = ConnectionLimiter(maxConnections: nil, maxPerIP: nil)
        for _ in 0..<10_000 { #expect(limiter.acquire(ip: "10.0.0.1") == nil) }
    }

    @Test("each failure from an address adds the base delay, up to the maximum, across connections")
    func penaltyGrows() {
        let penalty = LoginPenalty(baseDelay: .seconds(2), maximum: .seconds(5))
        let now = NIODeadline.now()
        #expect(penalty.failed(ip: "10.0.0.1", now: now) == .seconds(2))
        #expect(penalty.failed(ip: "10.0.0.1", now: now) == .seconds(4))
        #expect(penalty.failed(ip: "10.0.0.1", now: now) == .seconds(5))
        #expect(penalty.failed(ip: "10.0.0.2", now: now) == .seconds(2), "another address starts afresh")
    }

    @Test("a login that could not be checked waits the base delay and does not count")
    func unavailableNotCounted() {
        let penalty = LoginPenalty(baseDelay: .seconds(2), maximum: .seconds(10))
        let now = NIODeadline.now()
        for _ in 0..<3 { #expect(penalty.failed(ip: "10.0.0.1", unavailable: true, now: now) == .seconds(2)) }
        #expect(penalty.failed(ip: "10.0.0.1", unavailable: false, now: now) == .seconds(2), "the first counted failure")
        #expect(penalty.failed(ip: "10.0.0.1", unavailable: false, now: now) == .seconds(4))
    }

    @Test("the penalty is forgotten after its window and on a successful login")
    func penaltyForgotten() {
        let penalty = LoginPenalty(baseDelay: .seconds(1), maximum: .seconds(10), window: .minutes(5))
        let start = NIODeadline.now()
        _ = penalty.failed(ip: "10.0.0.1", now: start)
        #expect(penalty.failed(ip: "10.0.0.1", now: start) == .seconds(2))
        #expect(penalty.failed(ip: "10.0.0.1", now: start + .minutes(6)) == .seconds(1))
        _ = penalty.failed(ip: "10.0.0.1", now: start + .minutes(6))
        penalty.succeeded(ip: "10.0.0.1")
        #expect(penalty.failed(ip: "10.0.0.1", now: start + .minutes(6)) == .seconds(1))
    }

    @Test("penalties count per IPv4 address and per IPv6 /64; IPv4-mapped IPv6 is its IPv4 address")
    func penaltyKeys() throws {
        func key(_ ip: String) throws -> String? { LoginPenalty.key(for: try SocketAddress(ipAddress: ip, port: 143)) }
        #expect(try key("192.0.2.7") == "192.0.2.7")
        #expect(try key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9"))
        #expect(try key("2001:db8:1:2::1") != key("2001:db8:1:3::1"))
        #expect(try key("::ffff:192.0.2.7") == "192.0.2.7")
    }

    @Test("the address map stays bounded")
    func penaltyBounded() {
        let penalty = LoginPenalty(baseDelay: .milliseconds(1), maximum: .seconds(1))
        let now = NIODeadline.now()
        for index in 0..<(LoginPenalty.maxAddresses + 10) { _ = penalty.failed(ip: "ip\(index)", now: now) }
        #expect(penalty.failed(ip: "ip0", now: now) == .milliseconds(1), "the oldest entries were dropped")
        #expect(LoginPenalty(baseDelay: .seconds(Int64.max / 1_000_000_000), maximum: .seconds(15))
            .failed(ip: "x", now: now) >= .seconds(15), "an overflowing delay is the ceiling, not the base")
    }
}
