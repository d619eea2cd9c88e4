import NIOCore

/// Where the relay writes: the session's own handler context on each
/// channel, taken once when the relay starts.
///
/// A write through `Channel.write` enters the pipeline at its tail, goes
/// through the existential `Channel` and a generic `NIOAny` conversion
/// (a dynamic cast), and passes the session's handler, which only forwards
/// it. From the handler's context it goes straight to the handler before
/// it (TLS, or the socket) (docs/performance.md). Order is kept: both ways
/// end in the same next handler, synchronously, on the session's event loop.
///
/// A context on a closed channel fails the write, as the channel would.
/// The session drops these when it ends: the contexts hold its handlers,
/// which hold the session.
struct RelayOutputs {
    /// Written to as `client.write(NIOAny(bytes), promise: nil)`, flushed at
    /// the end of a read. (Methods on this struct measured worse: called
    /// through the session's optional property, the struct was copied, two
    /// retains and releases, per write.)
    let client: ChannelHandlerContext
    let upstream: ChannelHandlerContext

    /// The contexts of `ClientHandler` and `UpstreamHandler` on the two
    /// channels; `nil` when either is no longer in its pipeline (closed).
    init?(client: Channel, upstream: Channel) {
        guard let client = try? client.pipeline.syncOperations.context(handlerType: ClientHandler.self),
              let upstream = try? upstream.pipeline.syncOperations.context(handlerType: UpstreamHandler.self)
        else { return nil }
        self.client = client
        self.upstream = upstream
    }
}
