import NIOCore
import NIOSSL
import NIOTLS

/// Passes the upstream channel's events to its `ProxySession`, and holds
/// back reads while the client cannot take more (back-pressure).
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: ProxySession

    init(session: ProxySession) {
        self.session = session
    }

    func channelActive(context: ChannelHandlerContext) {
        session.upstreamActive(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        session.upstreamRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        session.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        session.resumeReads()
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            session.upstreamTLSEstablished()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        session.upstreamError(error)
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if session.mayReadFromUpstream {
            context.read()
        } else {
            session.deferUpstreamRead()
        }
    }
}
