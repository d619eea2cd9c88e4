import NIOCore
import NIOHTTP1

/// One login's request to the auth service, completed once: by the answer,
/// by a failure, or by its deadline, whichever comes first; what comes
/// later is ignored (completing a promise twice would stop the process).
///
/// `@unchecked Sendable`: created and used on the session's event loop only
/// (`AuthServiceClient` runs everything there).
final class PendingAuthRequest: @unchecked Sendable {
    let promise: EventLoopPromise<HTTPResponseHead>
    private(set) var isDone = false
    /// Runs if the request fails while a connection carries it (closes that connection).
    var onFailure: (() -> Void)?

    init(promise: EventLoopPromise<HTTPResponseHead>) {
        self.promise = promise
    }

    func succeed(_ head: HTTPResponseHead) {
        promise.futureResult.eventLoop.assertInEventLoop()
        guard !isDone else { return }
        isDone = true
        onFailure = nil
        promise.succeed(head)
    }

    func fail(_ error: Error) {
        promise.futureResult.eventLoop.assertInEventLoop()
        guard !isDone else { return }
        isDone = true
        let cleanup = onFailure
        onFailure = nil
        cleanup?()
        promise.fail(error)
    }
}
