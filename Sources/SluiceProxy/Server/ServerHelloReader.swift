import NIOCore

/// Sits on the network side of the client's TLS handler, reads the cipher
/// suite from the first record the TLS server writes (its ServerHello), passes
/// it to the session as an inbound user event and leaves the pipeline at the
/// next flush: the relay never goes through it.
///
/// It leaves on `flush`, not on `write`: the TLS handler writes with
/// `writeAndFlush`, whose flush is delivered to this handler's context right
/// after the write, and a context already out of the pipeline would drop it.
final class ServerHelloReader: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var done = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let suite = done ? nil : TLSCipherSuite(serverHello: unwrapOutboundIn(data))
        done = true
        context.write(data, promise: promise)
        if let suite { context.fireUserInboundEventTriggered(suite) }
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        if done { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }
}
