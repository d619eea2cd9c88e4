import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-name answers for upstream connections, kept for `ttl`.
///
/// NIO's own resolver runs `getaddrinfo` on a dispatch queue for every
/// connection and hops back to the event loop (the cost is measured in
/// docs/performance.md). Upstreams are
/// a handful of names, so their answers are kept for a short while (DNS
/// changes still take effect within `ttl`). Lookups run on NIO's thread
/// pool; failures are not kept. Upstreams given as IP addresses never come
/// here (see `UpstreamEndpoint.address`).
final class ResolverCache: Sendable {
    typealias Lookup = @Sendable (_ host: String, _ port: Int) throws -> [SocketAddress]

    /// The cache every session uses.
    static let shared = ResolverCache(ttl: .seconds(30), lookup: ResolverCache.getaddrinfoLookup)

    let ttl: TimeAmount
    private let lookup: Lookup
    private let pool: NIOThreadPool
    private let entries = NIOLockedValueBox<[Key: Entry]>([:])
    /// More names than any routing map names; past it the cache starts over.
    private static let maxEntries = 1024

    private struct Key: Hashable {
        var host: String
        var port: Int
    }

    private struct Entry {
        var addresses: [SocketAddress]
        var expires: NIODeadline
    }

    init(ttl: TimeAmount, lookup: @escaping Lookup, pool: NIOThreadPool = .singleton) {
        self.ttl = ttl
        self.lookup = lookup
        self.pool = pool
    }

    /// Every address of `host` (IPv6 and IPv4), from the cache or a fresh lookup.
    func addresses(host: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<[SocketAddress]> {
        let key = Key(host: host, port: port)
        let now = NIODeadline.now()
        if let entry = entries.withLockedValue({ $0[key] }), entry.expires > now {
            return eventLoop.makeSucceededFuture(entry.addresses)
        }
        let lookup = self.lookup
        return pool.runIfActive(eventLoop: eventLoop) { try lookup(host, port) }.map { addresses in
            if !addresses.isEmpty {
                let entry = Entry(addresses: addresses, expires: .now() + self.ttl)
                self.entries.withLockedValue { entries in
                    if entries.count >= ResolverCache.maxEntries { entries.removeAll() }
                    entries[key] = entry
                }
            }
            return addresses
        }
    }

    /// `getaddrinfo` for TCP, IPv6 and IPv4 (blocking: runs on the thread pool).
    @Sendable static func getaddrinfoLookup(host: String, port: Int) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw UpstreamResolutionError(host: host, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var current: UnsafeMutablePointer<addrinfo>? = first
        while let info = current {
            if let address = info.pointee.ai_addr {
                switch info.pointee.ai_family {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        addresses.append(SocketAddress($0.pointee, host: host))
                    }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        addresses.append(SocketAddress($0.pointee, host: host))
                    }
                default:
                    break
                }
            }
            current = info.pointee.ai_next
        }
        return addresses
    }
}

struct UpstreamResolutionError: Error, CustomStringConvertible {
    var host: String
    var reason: String
    var description: String { "cannot resolve \(host): \(reason)" }
}

/// One connection's resolver for NIO's connector (which asks for AAAA and A
/// records and tries them "happy eyeballs" style): both questions are
/// answered from one `ResolverCache` lookup.
final class CachingResolver: Resolver, Sendable {
    private let cache: ResolverCache
    private let eventLoop: any EventLoop
    private let answer = NIOLockedValueBox<EventLoopFuture<[SocketAddress]>?>(nil)

    init(cache: ResolverCache, eventLoop: any EventLoop) {
        self.cache = cache
        self.eventLoop = eventLoop
    }

    private func addresses(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        answer.withLockedValue { answer in
            if let answer { return answer }
            let future = cache.addresses(host: host, port: port, on: eventLoop)
            answer = future
            return future
        }
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        addresses(host: host, port: port).map { $0.filter { $0.protocol == .inet } }
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        addresses(host: host, port: port).map { $0.filter { $0.protocol == .inet6 } }
    }

    func cancelQueries() {}
}
