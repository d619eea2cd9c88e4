import NIOCore

/// Answers a connection over the connection limits with `* BYE` and closes
/// it (through TLS on an implicit-TLS listener, so the client can read why).
/// A client that never completes the handshake or never reads is cut after
/// `limit`: a refused connection must not hold a descriptor for long.
final class ConnectionRefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    static let bye = "* BYE [UNAVAILABLE] Too many connections, try again later.\r\n"
    static let limit: TimeAmount = .seconds(5)

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let cutoff = context.eventLoop.scheduleTask(in: ConnectionRefusalHandler.limit) { channel.close(promise: nil) }
        context.writeAndFlush(NIOAny(ByteBuffer(string: ConnectionRefusalHandler.bye))).whenComplete { _ in
            cutoff.cancel()
            channel.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@available(*, unavailable)
extension ConnectionRefusalHandler: Sendable {}
