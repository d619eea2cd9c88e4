import NIOCore
import NIOSSL
import NIOTLS

/// Passes the upstream channel's events to its `ProxySession`, and holds
/// back reads while the client cannot take more (back-pressure).
///
/// Only while its connection is the session's (`generation`): one made for
/// a login that has failed since is closed, and its events — its greeting,
/// its close, its errors — never reach the session, which may be in
/// another login or in the relay by then.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: ProxySession
    private let generation: UInt32

    init(session: ProxySession, generation: UInt32) {
        self.session = session
        self.generation = generation
    }

    private var isCurrent: Bool { session.upstreamGeneration == generation }

    func channelActive(context: ChannelHandlerContext) {
        guard isCurrent else {
            context.close(promise: nil)
            return
        }
        session.upstreamActive(context.channel)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard isCurrent else { return }
        session.upstreamRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard isCurrent else { return }
        session.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if isCurrent { session.upstreamClosed() }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if isCurrent { session.resumeReads() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if isCurrent, let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            session.upstreamTLSEstablished()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if isCurrent { session.upstreamError(error) }
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        guard isCurrent else {
            context.read()  // nothing holds it back: it is closing
            return
        }
        if session.mayReadFromUpstream {
            context.read()
        } else {
            session.deferUpstreamRead()
        }
    }
}
