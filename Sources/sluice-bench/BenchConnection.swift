import IMAPWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One IMAP client connection for the benchmark: sends commands and
/// completes each when its tagged response arrives. Server output goes
/// through the IMAPWire framer, so literals of any size are counted, never
/// buffered or searched.
final class BenchConnection: @unchecked Sendable {
    // All state is touched on the channel's event loop only.
    let channel: Channel
    private let handler: BenchHandler
    private var tagCounter = 0

    private init(channel: Channel, handler: BenchHandler) {
        self.channel = channel
        self.handler = handler
    }

    struct Reply {
        var status: String
        var bytes: Int
    }

    static func connect(host: String, port: Int, tls: NIOSSLContext?, group: EventLoopGroup) async throws -> BenchConnection {
        let handlerBox = NIOLockedBox()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    }
                    let handler = BenchHandler(eventLoop: channel.eventLoop)
                    handlerBox.set(handler)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
        guard let handler = handlerBox.get() else { throw BenchError("no handler") }
        let connection = BenchConnection(channel: channel, handler: handler)
        _ = try await handler.greeting.futureResult.get()
        return connection
    }

    /// Sends `command` with a fresh tag; returns the tagged status and the bytes received for it.
    func run(_ command: String) async throws -> Reply {
        try await send(command).get()
    }

    func send(_ command: String) -> EventLoopFuture<Reply> {
        let promise = channel.eventLoop.makePromise(of: Reply.self)
        channel.eventLoop.execute { [self] in
            tagCounter += 1
            let tag = "b\(tagCounter)"
            handler.expect(tag: tag, promise: promise)
            channel.writeAndFlush(ByteBuffer(string: "\(tag) \(command)\r\n"), promise: nil)
        }
        return promise.futureResult
    }

    /// Sends `text` (e.g. `i IDLE`) and completes when the server answers
    /// with a continuation request (`+`). The promise is in place before the
    /// bytes go out, so a fast `+` cannot be missed.
    func sendAwaitingContinuation(_ text: String) -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute { [self] in
            handler.continuationPromise = promise
            channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
        }
        return promise.futureResult
    }

    var isActive: Bool { channel.isActive }

    func close() async {
        try? await channel.close()
    }
}

/// A thread-safe box for handing the handler out of the initializer.
final class NIOLockedBox: @unchecked Sendable {
    private var value: BenchHandler?
    private let lock = NIOLock()
    func set(_ handler: BenchHandler) { lock.withLock { value = handler } }
    func get() -> BenchHandler? { lock.withLock { value } }
}

final class BenchHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let greeting: EventLoopPromise<Void>
    var continuationPromise: EventLoopPromise<Void>?
    private var framer = IMAPFramer(peer: .server, limits: .server)
    private var buffer = ByteBuffer()
    private var pending: [(tag: String, promise: EventLoopPromise<BenchConnection.Reply>, bytes: Int)] = []
    private var greeted = false
    private var received = 0
    /// `received` when the last tagged reply completed.
    private var accounted = 0

    init(eventLoop: EventLoop) {
        greeting = eventLoop.makePromise()
    }

    func expect(tag: String, promise: EventLoopPromise<BenchConnection.Reply>) {
        pending.append((tag, promise, received))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var data = unwrapInboundIn(data)
        received += data.readableBytes
        if buffer.readableBytes == 0 { buffer = data } else { buffer.writeBuffer(&data) }
        do {
            while let event = try framer.next(&buffer) {
                guard case .line(let segment) = event, segment.isFrameStart else { continue }
                switch segment.kind {
                case .untaggedResponse where !greeted:
                    greeted = true
                    greeting.succeed(())
                case .continuationRequest:
                    continuationPromise?.succeed(())
                    continuationPromise = nil
                case .taggedResponse:
                    guard let tag = segment.tag, let index = pending.firstIndex(where: { $0.tag == tag }) else { continue }
                    let entry = pending.remove(at: index)
                    // Bytes since it was sent, less what earlier replies already
                    // counted: pipelined replies do not count the same bytes twice.
                    let counted = received - max(entry.bytes, accounted)
                    accounted = received
                    entry.promise.succeed(.init(status: segment.secondWord ?? "?", bytes: counted))
                default:
                    break
                }
            }
        } catch {
            fail(BenchError("protocol error from the server: \(error)"))
            context.close(promise: nil)
        }
        if buffer.readableBytes == 0 { buffer = ByteBuffer() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(BenchError("connection closed"))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: Error) {
        if !greeted {
            greeted = true
            greeting.fail(error)
        }
        for entry in pending { entry.promise.fail(error) }
        pending.removeAll()
        continuationPromise?.fail(error)
        continuationPromise = nil
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
