import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// Keeps the response head; the body is read and dropped, at most 64 KiB.
final class HeadOnly: HTTPClientResponseDelegate, @unchecked Sendable {
    // @unchecked: AsyncHTTPClient calls a delegate on the task's event loop only.
    typealias Response = HTTPResponseHead

    private var head: HTTPResponseHead?
    private var bodyBytes = 0

    func didReceiveHead(task: HTTPClient.Task<HTTPResponseHead>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<HTTPResponseHead>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        bodyBytes += buffer.readableBytes
        guard bodyBytes <= HTTPAuthRouter.maxBodyBytes else {
            return task.eventLoop.makeFailedFuture(AuthServiceError("the auth service's answer body is over 64 KiB"))
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<HTTPResponseHead>) throws -> HTTPResponseHead {
        guard let head else { throw AuthServiceError("the auth service sent no answer") }
        return head
    }
}
