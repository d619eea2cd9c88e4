import NIOCore

/// First handler of an upstream connection with `proxy_protocol`: sends the
/// header before anything else (before TLS), then steps aside.
final class ProxyHeaderWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let header: ByteBuffer

    init(header: ByteBuffer) { self.header = header }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(header), promise: nil)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
