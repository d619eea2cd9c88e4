import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 client for an `http://` auth service: a `GET` per login
/// on a kept-alive connection of the session's own event loop, the answer's
/// head read and its body dropped.
///
/// It does what nginx's `auth_http` does and no more: no redirects, no
/// proxies, no TLS (an `https://` service goes through AsyncHTTPClient).
/// AsyncHTTPClient cost ~360,000 instructions per login here (its connection
/// pool's state machines, request bag, tracing hooks and a hop between
/// loops), about as much as the rest of the login (callgrind, issue 14).
///
/// Connections are kept per event loop and used by one request at a time;
/// a login that finds none idle opens another. A kept connection the
/// service closed meanwhile fails its request before any answer: that
/// request is sent again once on a new connection (a `GET` that got no
/// answer may be repeated).
final class AuthServiceClient: Sendable {
    struct Target: Sendable {
        var host: String
        var port: Int
        /// The path and query, as in the URL (`/auth?x=1`).
        var requestTarget: String
        /// The `Host` header: the URL's host, with its port when not 80.
        var hostHeader: String
    }

    let target: Target
    /// Idle connections per event loop, taken and given back on that loop.
    private let idle = NIOLockedValueBox<[ObjectIdentifier: [Channel]]>([:])
    /// Idle connections kept per event loop at most; others are closed.
    static let maxIdlePerLoop = 8

    init(target: Target) {
        self.target = target
    }

    /// The service's answer head for a `GET` with `headers`; fails on a
    /// connection error, a malformed answer, a body over `maxBodyBytes`, or
    /// when `deadline` passes first.
    func get(headers: HTTPHeaders, on eventLoop: any EventLoop, deadline: NIODeadline) -> EventLoopFuture<HTTPResponseHead> {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.requestTarget, headers: headers)
        head.headers.replaceOrAdd(name: "Host", value: target.hostHeader)
        let request = PendingAuthRequest(promise: eventLoop.makePromise(of: HTTPResponseHead.self))
        let timeout = eventLoop.scheduleTask(deadline: deadline) {
            request.fail(AuthServiceError("the auth service did not answer in time"))
        }
        request.promise.futureResult.whenComplete { _ in timeout.cancel() }
        send(head, on: eventLoop, request: request, retry: true)
        return request.promise.futureResult
    }

    private func send(_ head: HTTPRequestHead, on eventLoop: any EventLoop, request: PendingAuthRequest, retry: Bool) {
        if let channel = takeIdle(on: eventLoop) {
            exchange(head, on: channel, request: request, reused: true, retry: retry)
            return
        }
        connect(on: eventLoop).whenComplete { result in
            switch result {
            case .success(let channel):
                self.exchange(head, on: channel, request: request, reused: false, retry: false)
            case .failure(let error):
                request.fail(error)
            }
        }
    }

    /// One request and its answer on `channel`; the channel goes back to
    /// the idle list if the answer allows it.
    private func exchange(_ head: HTTPRequestHead, on channel: Channel, request: PendingAuthRequest,
                          reused: Bool, retry: Bool) {
        guard !request.isDone else {  // timed out while connecting
            channel.close(promise: nil)
            return
        }
        let exchange = channel.eventLoop.makePromise(of: AuthServiceResponseHandler.Answer.self)
        do {
            try channel.pipeline.syncOperations.handler(type: AuthServiceResponseHandler.self).expect(exchange)
        } catch {
            channel.close(promise: nil)
            request.fail(error)
            return
        }
        // A timeout fails the request from outside: the connection is then in
        // an unknown state and is closed, never given back.
        request.onFailure = { channel.close(promise: nil) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        exchange.futureResult.whenComplete { result in
            guard !request.isDone else { return }
            request.onFailure = nil
            switch result {
            case .success(let answer):
                if answer.keepAlive { self.giveBack(channel) } else { channel.close(promise: nil) }
                request.succeed(answer.head)
            case .failure(let error):
                channel.close(promise: nil)
                if reused, retry, error is AuthServiceResponseHandler.NoAnswer {
                    self.send(head, on: channel.eventLoop, request: request, retry: false)
                } else {
                    request.fail(error)
                }
            }
        }
    }

    private func connect(on eventLoop: any EventLoop) -> EventLoopFuture<Channel> {
        ClientBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(HTTPRequestEncoder())
                    try pipeline.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
                    try pipeline.addHandler(AuthServiceResponseHandler())
                }
            }
            .connect(host: target.host, port: target.port)
    }

    private func takeIdle(on eventLoop: any EventLoop) -> Channel? {
        let key = ObjectIdentifier(eventLoop)
        while let channel = idle.withLockedValue({ $0[key]?.popLast() }) {
            if channel.isActive { return channel }
        }
        return nil
    }

    private func giveBack(_ channel: Channel) {
        let key = ObjectIdentifier(channel.eventLoop)
        let kept = idle.withLockedValue { idle -> Bool in
            guard idle[key, default: []].count < AuthServiceClient.maxIdlePerLoop else { return false }
            idle[key, default: []].append(channel)
            return true
        }
        if !kept { channel.close(promise: nil) }
    }
}
