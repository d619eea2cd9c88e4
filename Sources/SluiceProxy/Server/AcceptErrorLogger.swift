import Logging
import NIOCore

/// Logs why accepting connections fails (at most once per `interval`),
/// behind NIO's `AcceptBackoffHandler`, which pauses accepting for a second
/// on each failure. Without the back-off a listener at the open-file limit
/// retried `accept4` in a tight loop on an event loop that also serves
/// sessions, and nothing said why (review F4).
final class AcceptErrorLogger: ChannelInboundHandler {
    typealias InboundIn = Channel

    private let logger: Logger
    private let listener: String
    private let interval: TimeAmount
    private var lastLogged: NIODeadline?
    private var suppressed = 0

    init(logger: Logger, listener: String, interval: TimeAmount = .seconds(10)) {
        self.logger = logger
        self.listener = listener
        self.interval = interval
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let now = NIODeadline.now()
        if let lastLogged, now - lastLogged < interval {
            suppressed += 1
            return
        }
        var metadata: Logger.Metadata = ["listen.address": "\(listener)", "error": "\(error)"]
        if suppressed > 0 { metadata["errors.suppressed"] = "\(suppressed)" }
        logger.error("accepting connections failed; retrying in 1s", metadata: metadata)
        lastLogged = now
        suppressed = 0
    }
}

@available(*, unavailable)
extension AcceptErrorLogger: Sendable {}
