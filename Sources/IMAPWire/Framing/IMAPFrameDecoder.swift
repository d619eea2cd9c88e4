import NIOCore

/// Assembles the framer's events into whole `Frame`s.
///
/// For tools and filters that want a frame at a time. Literal bytes are kept
/// (as the zero-copy slices they arrived in) only up to `literalCaptureLimit`
/// bytes per literal; larger literals are recorded by size alone, so a 50 MB
/// FETCH through the decoder holds no more than one read's worth of it.
public struct IMAPFrameDecoder: Sendable {
    public var framer: IMAPFramer
    /// Largest literal whose bytes are kept in the frame.
    public var literalCaptureLimit: UInt64

    private var partial: Frame?
    /// A synchronizing literal was announced and none of its bytes has come:
    /// the peer waits for a continuation request.
    private var awaitingContinuation: LiteralHeader?

    public init(peer: IMAPPeer, limits: IMAPLimits? = nil, literalCaptureLimit: UInt64 = 64 * 1024) {
        self.framer = IMAPFramer(peer: peer, limits: limits)
        self.literalCaptureLimit = literalCaptureLimit
    }

    /// The next whole frame in `buffer`, or `nil` if more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(IMAPFramingError) -> Frame? {
        while true {
            let offsetBefore = framer.streamOffset
            guard let event = try framer.next(&buffer) else { return nil }
            switch event {
            case .line(let segment):
                awaitingContinuation = segment.literal.flatMap { $0.isSynchronizing ? $0 : nil }
                if segment.isFrameStart {
                    partial = Frame(kind: segment.kind, segments: [], literals: [], offset: offsetBefore, length: 0)
                }
                guard var frame = partial else { preconditionFailure("segment without a frame") }
                frame.segments.append(segment.bytes)
                frame.length += segment.bytes.readableBytes
                if let literal = segment.literal {
                    let capture = literal.size <= literalCaptureLimit
                    frame.literals.append(FrameLiteral(header: literal, chunks: capture ? [] : nil))
                    partial = frame
                } else {
                    partial = nil
                    return frame
                }
            case .literalBytes(let chunk, _):
                awaitingContinuation = nil
                guard var frame = partial, !frame.literals.isEmpty else {
                    preconditionFailure("literal bytes without a frame")
                }
                frame.length += chunk.readableBytes
                let last = frame.literals.count - 1
                if frame.literals[last].chunks != nil {
                    partial = nil  // keep the array uniquely referenced while appending
                    frame.literals[last].chunks?.append(chunk)
                }
                partial = frame
            }
        }
    }

    /// The synchronizing literal the peer is waiting to send, once: a server
    /// (or a proxy answering in its place) then sends `+` — or refuses the
    /// command and calls `abandonLiteral()`.
    public mutating func takeContinuationRequest() -> LiteralHeader? {
        defer { awaitingContinuation = nil }
        return awaitingContinuation
    }

    /// The frame read so far while it waits for a literal (its lines up to
    /// the announcement), or `nil` between frames.
    public var frameInProgress: Frame? { partial }

    /// The client's synchronizing literal was refused; see `IMAPFramer.abandonLiteral()`.
    /// Returns the frame as it stands (without the literal's bytes).
    public mutating func abandonLiteral() -> Frame? {
        framer.abandonLiteral()
        awaitingContinuation = nil
        defer { partial = nil }
        return partial
    }

    /// Check the stream may end here (see `IMAPFramer.checkEnd(_:)`); an
    /// incomplete frame is reported at the offset where it starts.
    public func checkEnd(_ buffer: ByteBuffer) throws(IMAPFramingError) {
        do {
            try framer.checkEnd(buffer)
        } catch {
            var error = error
            if let partial { error.offset = partial.offset }
            throw error
        }
    }
}
