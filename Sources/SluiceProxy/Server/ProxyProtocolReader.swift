import NIOCore

/// First handler of a connection on a `proxy_protocol: true` listener:
/// reads the PROXY header, then lets `setUp` build the session with the
/// address it gave, and hands on what followed the header. Until then the
/// client gets nothing (no greeting); a connection whose header is not
/// valid, or does not arrive within `timeout`, is closed.
final class ProxyProtocolReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// How long a balancer has to send the header (it sends it at once).
    static let timeout: TimeAmount = .seconds(5)

    private var buffer = ByteBuffer()
    private var deadline: Scheduled<Void>?
    private var done = false
    private let setUp: (Channel, ProxyProtocol.Header) throws -> Void
    private let refused: (String) -> Void

    init(setUp: @escaping (Channel, ProxyProtocol.Header) throws -> Void, refused: @escaping (String) -> Void) {
        self.setUp = setUp
        self.refused = refused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: ProxyProtocolReader.timeout) {
            bound.value.0.fail(context: bound.value.1, reason: "no PROXY header within \(ProxyProtocolReader.timeout.nanoseconds / 1_000_000_000) s")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    /// The session starts once the header is read: this event is given to it then.
    func channelActive(context: ChannelHandlerContext) {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        switch ProxyProtocol.parse(buffer.readableBytesView) {
        case .needMore:
            if buffer.readableBytes > ProxyProtocol.maxV2Length { fail(context: context, reason: "PROXY header too long") }
        case .invalid(let reason):
            fail(context: context, reason: reason)
        case .header(let header):
            done = true
            deadline?.cancel()
            buffer.moveReaderIndex(forwardBy: header.length)
            do {
                try setUp(context.channel, header)
            } catch {
                context.close(promise: nil)
                return
            }
            context.fireChannelActive()
            if buffer.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffer))
                context.fireChannelReadComplete()
            }
            buffer = ByteBuffer()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before a header: no session ever started, nothing to tell.
        if done { context.fireChannelInactive() }
    }

    private func fail(context: ChannelHandlerContext, reason: String) {
        guard !done else { return }
        done = true
        refused(reason)
        context.close(promise: nil)
    }
}
