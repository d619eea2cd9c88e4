import NIOCore
import NIOHTTP1

/// The end of an auth-service connection (`AuthServiceClient`): completes the
/// current request's promise with the answer's head once the whole answer
/// is read, its body counted and dropped.
final class AuthServiceResponseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    struct Answer {
        var head: HTTPResponseHead
        /// The connection may carry the next request.
        var keepAlive: Bool
    }

    /// The connection ended, or failed, before any of the answer arrived.
    struct NoAnswer: Error, CustomStringConvertible {
        var description: String { "the auth service closed the connection without an answer" }
    }

    private var current: EventLoopPromise<Answer>?
    private var head: HTTPResponseHead?
    private var bodyBytes = 0

    /// The next answer completes `promise`.
    func expect(_ promise: EventLoopPromise<Answer>) throws {
        guard current == nil else { throw AuthServiceError("the auth service connection is busy") }
        current = promise
        head = nil
        bodyBytes = 0
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let received):
            head = received
        case .body(let buffer):
            bodyBytes += buffer.readableBytes
            if bodyBytes > HTTPAuthRouter.maxBodyBytes {
                fail(AuthServiceError("the auth service's answer body is over 64 KiB"))
                context.close(promise: nil)
            }
        case .end:
            guard let head, let promise = current else {
                fail(AuthServiceError("the auth service answered what was not asked"))
                context.close(promise: nil)
                return
            }
            current = nil
            promise.succeed(Answer(head: head, keepAlive: head.isKeepAlive))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(head == nil ? NoAnswer() : AuthServiceError("the auth service closed the connection mid-answer"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(head == nil && bodyBytes == 0 ? NoAnswer() as Error : error)
        context.close(promise: nil)
    }

    private func fail(_ error: Error) {
        let promise = current
        current = nil
        promise?.fail(error)
    }
}
