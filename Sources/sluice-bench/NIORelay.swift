import NIOCore
import NIOPosix

/// `sluice-bench nio-relay`: the smallest proxy SwiftNIO makes — accept,
/// connect upstream on the same event loop, copy each read to the other
/// side and flush when the read is done. No parsing, no state. bench-compare
/// runs it next to socat as a reference: it shows what NIO's event loop
/// costs per hop, so that Sluice's own cost is what remains.
enum NIORelay {
    static func run(listenHost: String, listenPort: Int, upstream: SocketAddress) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { client in
                client.eventLoop.makeCompletedFuture {
                    let clientSide = RelayHandler()
                    try client.pipeline.syncOperations.addHandler(clientSide)
                    let bound = NIOLoopBound(clientSide, eventLoop: client.eventLoop)
                    ClientBootstrap(group: client.eventLoop)
                        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                        .channelInitializer { server in
                            server.eventLoop.makeCompletedFuture {
                                let serverSide = RelayHandler()
                                try server.pipeline.syncOperations.addHandler(serverSide)
                                serverSide.pair(with: bound.value)
                            }
                        }
                        .connect(to: upstream)
                        .whenFailure { _ in client.close(promise: nil) }
                }
            }
            .bind(host: listenHost, port: listenPort).get()
        try await server.closeFuture.get()
    }
}

/// One side of the relay: reads go to the partner's channel, flushed at the
/// end of each read; closing one side closes the other. Bytes that arrive
/// before the partner exists (the client speaks first) wait in `early`.
private final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var partner: RelayHandler?
    private var early: [ByteBuffer] = []

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil; partner = nil }

    func pair(with other: RelayHandler) {
        partner = other
        other.partner = self
        for buffer in other.early { context?.write(wrapOutboundOut(buffer), promise: nil) }
        other.early = []
        context?.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let target = partner?.context {
            target.write(wrapOutboundOut(buffer), promise: nil)
        } else {
            early.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.context?.close(promise: nil)
        partner = nil
    }
}
