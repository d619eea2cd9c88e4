import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Stops accepting for `pause` when accepting fails (no descriptors left,
/// EMFILE/ENFILE, or no memory), and logs why at most once per
/// `logInterval` (review F4).
///
/// NIO's own `AcceptBackoffHandler` delays the listener's next `read()`,
/// which does not help here: in this NIO version a failed `accept4` leaves
/// the listener's read interest registered (`readPending` is cleared only
/// after a successful accept), so a level-triggered epoll reported it
/// readable again at once, and an event loop that also serves sessions spun
/// at 100 % CPU on failing `accept4` calls (33,000 in 3 s, measured).
/// Turning `autoRead` off removes the read interest; turning it back on
/// after the pause registers it again.
final class ListenerBackoff: ChannelInboundHandler {
    typealias InboundIn = Channel

    private let logger: Logger
    private let listener: String
    private let pause: TimeAmount
    private let logInterval: TimeAmount
    private var lastLogged: NIODeadline?
    private var suppressed = 0
    private var resume: Scheduled<Void>?

    private let metrics: ProxyMetrics?

    init(logger: Logger, listener: String, metrics: ProxyMetrics? = nil, pause: TimeAmount = .seconds(1),
         logInterval: TimeAmount = .seconds(10)) {
        self.logger = logger
        self.metrics = metrics
        self.listener = listener
        self.pause = pause
        self.logInterval = logInterval
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Only running out of descriptors or memory is worth pausing for.
        guard let ioError = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(ioError.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        report(ioError)
        if [EMFILE, ENFILE].contains(ioError.errnoCode) { metrics?.connectionRefused(.descriptors) }
        guard resume == nil, let options = context.channel.syncOptions else { return }
        try? options.setOption(.autoRead, value: false)
        let channel = context.channel
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [self] in
            resume = nil
            try? channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
        context.fireChannelInactive()
    }

    private func report(_ error: IOError) {
        let now = NIODeadline.now()
        if let lastLogged, now - lastLogged < logInterval {
            suppressed += 1
            return
        }
        var metadata: Logger.Metadata = [
            "listen.address": "\(listener)", "error": "\(error)", "pause.ms": "\(pause.nanoseconds / 1_000_000)",
        ]
        if suppressed > 0 { metadata["errors.suppressed"] = "\(suppressed)" }
        logger.error("accepting connections failed; pausing the listener", metadata: metadata)
        lastLogged = now
        suppressed = 0
    }
}

@available(*, unavailable)
extension ListenerBackoff: Sendable {}
