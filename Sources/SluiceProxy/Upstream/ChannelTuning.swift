import NIOCore
import NIOPosix

/// The socket options of both connections of a session: no Nagle delay
/// (IMAP is request and response), receive buffers that start small and
/// grow with full reads (docs/design-notes.md, "Small receive buffers"),
/// and the write water marks that pause the other side's reads.
struct ChannelTuning: Sendable {
    let writeBufferWaterMark: ChannelOptions.Types.WriteBufferWaterMark

    init(_ configuration: ProxyConfiguration) {
        writeBufferWaterMark = .init(low: configuration.writeBufferLowWaterMark,
                                     high: configuration.writeBufferHighWaterMark)
    }

    /// An idle session holds its last receive buffer per channel: 512 bytes
    /// at first, up to 64 KiB after full reads.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 64 * 1024)

    /// For an accepted channel (set one by one so that a failure can be
    /// logged) and, in its initializer, an outgoing one: set directly, not as
    /// bootstrap options, which NIO applies through a chain of futures
    /// (~37,000 instructions per upstream connection, callgrind, issue 14).
    /// `TCP_NODELAY` is not among them: an accepted socket inherits it from
    /// the listening one, and the upstream's bootstrap sets it (a system
    /// call and ~4,000 instructions each, per login).
    func apply(to options: NIOSynchronousChannelOptions) throws {
        try options.setOption(.recvAllocator, value: ChannelTuning.receiveAllocator)
        try options.setOption(.writeBufferWaterMark, value: writeBufferWaterMark)
    }
}
