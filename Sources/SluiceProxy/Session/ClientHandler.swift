import NIOCore
import NIOSSL
import NIOTLS

/// Passes the client channel's events to its `ProxySession`, and holds back
/// reads while the session says so (back-pressure, login in progress).
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: ProxySession

    init(session: ProxySession) {
        self.session = session
    }

    func channelActive(context: ChannelHandlerContext) {
        session.clientActive()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        session.clientRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        session.clientReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.clientClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        session.resumeReads()
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            session.clientTLSEstablished()
        } else if let suite = event as? TLSCipherSuite {
            session.clientTLSCipher = suite.name
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        session.clientError(error)
    }

    func read(context: ChannelHandlerContext) {
        if session.mayReadFromClient {
            context.read()
        } else {
            session.deferClientRead()
        }
    }
}
