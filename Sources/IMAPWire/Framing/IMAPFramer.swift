import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Whose bytes a framer reads.
public enum IMAPPeer: Hashable, Sendable {
    /// Commands, from a mail client.
    case client
    /// Responses, from an IMAP server.
    case server
}

/// Turns one direction of an IMAP connection into frames, incrementally.
///
/// The framer is total: every byte stream frames, whatever the commands or
/// responses mean; only a limit breach or a malformed literal announcement is
/// an error. It does no I/O: the caller appends what it reads to a buffer and
/// calls `next(_:)` until it returns `nil` ("need more bytes"; nothing was
/// consumed that is not part of an event).
///
/// Line bytes are scanned once: the offset up to which a partial line was
/// searched for its terminator is kept, so a line arriving a byte at a time is
/// still O(n). Literal bytes are never scanned; they come out as slices of the
/// input as soon as they arrive.
public struct IMAPFramer: Sendable {
    /// What a client is expected to send next (commands, or a special line).
    public enum ClientExpectation: Hashable, Sendable {
        case command
        /// After IDLE: `DONE` (any other line means the server refused IDLE).
        case idleDone
        /// After AUTHENTICATE: SASL response lines, until the server's tagged answer.
        case saslResponse
    }

    public let peer: IMAPPeer
    public var limits: IMAPLimits
    public private(set) var clientExpectation: ClientExpectation = .command
    /// Bytes consumed into events so far.
    public private(set) var streamOffset: Int = 0

    private var literalRemaining: UInt64 = 0
    /// A frame is in progress: its last segment announced a literal.
    private var frameOpen = false
    private var frameKind: FrameKind = .command
    private var frameIsStatusResponse = false
    private var frameTextLength = 0
    private var frameLiteralCount = 0
    /// First segment of the open frame, kept (by reference) to name the tag in errors.
    private var frameFirstSegment: ByteBuffer?
    private var expectationAfterFrame: ClientExpectation = .command
    /// Bytes after the reader index already searched for a line feed.
    private(set) var scannedBytes = 0
    /// Bytes of the current line already handed out as pieces (`streamsLongLines`).
    private var lineBytesStreamed = 0
    /// Bytes of the current line (after its pieces) known to hold no cut (`LineScan.PieceCut.none`).
    private var lineBytesWithoutCut = 0
    /// The current line is not cut at all (`LineScan.PieceCut.never`, or not an untagged response).
    private var lineIsWhole = false
    /// Total bytes ever searched for a line feed (for tests: proves no rescans).
    private(set) var bytesSearched = 0
    /// Total bytes looked at for a cut of a long line (for tests: proves no rescans).
    private(set) var pieceBytesExamined = 0

    /// Untagged server lines longer than `IMAPLimits.streamedLinePiece` are
    /// handed out in pieces as they arrive (`LineSegment.continuesLine`)
    /// instead of being held until their line feed. For a relay that reads a
    /// line's first piece to decide what to do with the rest; off by default.
    public var streamsLongLines = false
    /// Held bytes of a line past which `streamsLongLines` cuts it
    /// (`IMAPLimits.streamedLinePiece`; the fuzzer sets it small).
    public var linePieceSize = IMAPLimits.streamedLinePiece

    public init(peer: IMAPPeer, limits: IMAPLimits? = nil) {
        self.peer = peer
        self.limits = limits ?? (peer == .client ? .client : .server)
    }

    /// Whether the framer is between frames (no partial frame consumed).
    public var isAtFrameBoundary: Bool { !frameOpen }

    /// Whether pieces of a line went out and its end has not (`streamsLongLines`).
    public var isInsideLine: Bool { lineBytesStreamed > 0 }

    /// Bytes of the current literal not yet consumed (0 outside literals).
    public var literalBytesRemaining: UInt64 { literalRemaining }

    /// The next event from `buffer`, or `nil` if more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(IMAPFramingError) -> FrameEvent? {
        if literalRemaining > 0 {
            return nextLiteralChunk(&buffer)
        }
        return try nextLine(&buffer)
    }

    /// The client's synchronizing literal was refused (by the server's or the
    /// proxy's tagged answer before its `+`): the client will not send it, and
    /// the frame ends where it is.
    public mutating func abandonLiteral() {
        literalRemaining = 0
        endFrame()
    }

    /// The exchange goes on after the framer left it: whoever answers for the
    /// server (a proxy) sent another `+` challenge (a refused OAuth token's
    /// error, RFC 7628 §3.2.3), so the client's next line is a SASL response.
    /// Only between frames.
    public mutating func authenticationResumed() {
        clientExpectation = .saslResponse
        expectationAfterFrame = .saslResponse
    }

    /// The server answered the AUTHENTICATE command; the client sends commands again.
    public mutating func authenticationEnded() {
        if clientExpectation == .saslResponse { clientExpectation = .command }
        if expectationAfterFrame == .saslResponse { expectationAfterFrame = .command }
    }

    /// Check that the stream may end here: no partial frame, no unconsumed bytes.
    public func checkEnd(_ buffer: ByteBuffer) throws(IMAPFramingError) {
        if frameOpen || literalRemaining > 0 || buffer.readableBytes > 0 {
            throw IMAPFramingError(.incompleteFrame, tag: openFrameTag(buffer), offset: streamOffset)
        }
    }

    // MARK: - Literal bytes

    private mutating func nextLiteralChunk(_ buffer: inout ByteBuffer) -> FrameEvent? {
        let available = buffer.readableBytes
        guard available > 0 else { return nil }
        let count = Int(min(UInt64(available), literalRemaining))
        guard let chunk = buffer.readSlice(length: count) else {
            preconditionFailure("readSlice of \(count) of \(available) readable bytes failed")
        }
        literalRemaining -= UInt64(count)
        streamOffset += count
        return .literalBytes(chunk, remaining: literalRemaining)
    }

    // MARK: - Lines

    private mutating func nextLine(_ buffer: inout ByteBuffer) throws(IMAPFramingError) -> FrameEvent? {
        let scanFrom = scannedBytes
        let maxLine = limits.maxLineLength
        let peer = self.peer
        let scan: LineScan? = buffer.withUnsafeReadableBytes { bytes in
            LineScan.find(in: bytes, from: scanFrom, peer: peer)
        }
        bytesSearched += (scan.map { $0.lineLength } ?? buffer.readableBytes) - scanFrom
        guard let scan else {
            scannedBytes = buffer.readableBytes
            if lineBytesStreamed + scannedBytes > maxLine {
                throw IMAPFramingError(.lineTooLong(limit: maxLine), tag: openFrameTag(buffer),
                                       offset: streamOffset - lineBytesStreamed + maxLine)
            }
            if streamsLongLines, scannedBytes > linePieceSize {
                return try nextLinePiece(&buffer)
            }
            return nil
        }
        scannedBytes = 0
        let lineLength = scan.lineLength
        if lineBytesStreamed + lineLength > maxLine {
            throw IMAPFramingError(.lineTooLong(limit: maxLine), tag: openFrameTag(buffer),
                                   offset: streamOffset - lineBytesStreamed + maxLine)
        }
        if let nul = scan.nulOffset {
            throw IMAPFramingError(.nulByte, tag: openFrameTag(buffer), offset: streamOffset + nul)
        }
        frameTextLength += lineLength
        if frameTextLength > limits.maxFrameTextLength {
            throw IMAPFramingError(
                .frameTooLong(limit: limits.maxFrameTextLength), tag: openFrameTag(buffer), offset: streamOffset)
        }

        let isFrameStart = !frameOpen
        if isFrameStart {
            classifyFrame(scan)
        }
        lineBytesStreamed = 0
        lineBytesWithoutCut = 0
        lineIsWhole = false

        var literal: LiteralHeader? = nil
        if frameMayCarryLiterals {
            switch scan.literal {
            case .none:
                break
            case .invalid(let at):
                throw IMAPFramingError(.invalidLiteralHeader, tag: openFrameTag(buffer), offset: streamOffset + at)
            case .overflow(let at):
                throw IMAPFramingError(.literalSizeOverflow, tag: openFrameTag(buffer), offset: streamOffset + at)
            case .header(let header, let at):
                if header.size > limits.maxLiteralSize {
                    throw IMAPFramingError(
                        .literalTooLarge(size: header.size, limit: limits.maxLiteralSize),
                        tag: openFrameTag(buffer), offset: streamOffset + at)
                }
                frameLiteralCount += 1
                if frameLiteralCount > limits.maxLiteralsPerFrame {
                    throw IMAPFramingError(
                        .tooManyLiterals(limit: limits.maxLiteralsPerFrame),
                        tag: openFrameTag(buffer), offset: streamOffset + at)
                }
                literal = header
            }
        }

        guard let bytes = buffer.readSlice(length: lineLength) else {
            preconditionFailure("line of \(lineLength) bytes not readable")
        }
        streamOffset += lineLength
        if let literal {
            if isFrameStart { frameFirstSegment = bytes }
            frameOpen = true
            literalRemaining = literal.size
        } else {
            endFrame()
        }
        return .line(LineSegment(
            bytes: bytes, kind: frameKind, isFrameStart: isFrameStart, literal: literal,
            firstSpace: scan.firstSpace, secondSpace: scan.secondSpace))
    }

    /// The first bytes of a long untagged server line, up to where no literal
    /// announcement can start (so the line's end is read as it would be whole),
    /// or `nil` to wait for the line feed: another kind of frame, or a giant
    /// last word.
    private mutating func nextLinePiece(_ buffer: inout ByteBuffer) throws(IMAPFramingError) -> FrameEvent? {
        guard !lineIsWhole else { return nil }
        let isFrameStart = !frameOpen
        // Only untagged responses are cut (decided before any scan: a tagged
        // or `+` line costs nothing here however long it grows).
        if isFrameStart {
            guard buffer.readableBytes > 0, buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == UInt8(ascii: "*") else {
                lineIsWhole = true
                return nil
            }
        } else if frameKind != .untaggedResponse {
            lineIsWhole = true
            return nil
        }
        let known = lineBytesWithoutCut
        let peer = self.peer
        let cut = buffer.withUnsafeReadableBytes { bytes in
            LineScan.piece(in: bytes, peer: peer, startsLine: isFrameStart, known: known)
        }
        pieceBytesExamined += max(0, buffer.readableBytes - known)
        let piece: LineScan
        switch cut {
        case .cut(let scan):
            piece = scan
        case .none(let upTo):
            lineBytesWithoutCut = upTo
            return nil
        case .never:
            lineIsWhole = true
            return nil
        }
        if isFrameStart { classifyFrame(piece) }
        if let nul = piece.nulOffset {
            throw IMAPFramingError(.nulByte, tag: openFrameTag(buffer), offset: streamOffset + nul)
        }
        frameTextLength += piece.lineLength
        if frameTextLength > limits.maxFrameTextLength {
            throw IMAPFramingError(
                .frameTooLong(limit: limits.maxFrameTextLength), tag: openFrameTag(buffer), offset: streamOffset)
        }
        guard let bytes = buffer.readSlice(length: piece.lineLength) else {
            preconditionFailure("line piece of \(piece.lineLength) bytes not readable")
        }
        if isFrameStart { frameFirstSegment = bytes }
        frameOpen = true
        streamOffset += piece.lineLength
        lineBytesStreamed += piece.lineLength
        lineBytesWithoutCut = 0
        scannedBytes = buffer.readableBytes
        return .line(LineSegment(
            bytes: bytes, kind: frameKind, isFrameStart: isFrameStart, literal: nil, continuesLine: true,
            firstSpace: piece.firstSpace, secondSpace: piece.secondSpace))
    }

    /// Status responses and continuation requests end in human-readable text
    /// (RFC 3501 `resp-text`), where a trailing `{5}` is text, not a literal.
    /// IDLE's `DONE` and SASL lines carry no literals either.
    private var frameMayCarryLiterals: Bool {
        switch frameKind {
        case .command: return true
        case .untaggedResponse: return !frameIsStatusResponse
        case .taggedResponse, .continuationRequest, .idleDone, .saslResponse: return false
        }
    }

    private mutating func classifyFrame(_ scan: LineScan) {
        frameIsStatusResponse = false
        switch peer {
        case .server:
            switch scan.firstByte {
            case UInt8(ascii: "*"):
                frameKind = .untaggedResponse
                frameIsStatusResponse = scan.secondWordIsStatus
            case UInt8(ascii: "+"):
                frameKind = .continuationRequest
            default:
                frameKind = .taggedResponse
            }
        case .client:
            switch clientExpectation {
            case .idleDone where scan.isDone:
                frameKind = .idleDone
                expectationAfterFrame = .command
                return
            case .saslResponse where !scan.hasSpace:
                frameKind = .saslResponse
                expectationAfterFrame = .saslResponse
                return
            case .command, .idleDone, .saslResponse:
                frameKind = .command
                switch scan.secondWord {
                case .idle: expectationAfterFrame = .idleDone
                case .authenticate: expectationAfterFrame = .saslResponse
                case .other: expectationAfterFrame = .command
                }
            }
        }
    }

    private mutating func endFrame() {
        frameOpen = false
        lineBytesStreamed = 0
        lineBytesWithoutCut = 0
        lineIsWhole = false
        frameTextLength = 0
        frameLiteralCount = 0
        frameFirstSegment = nil
        if peer == .client { clientExpectation = expectationAfterFrame }
    }

    /// The tag of the frame being read: from its kept first segment, or from the
    /// start of the unconsumed bytes when the frame has not started yet.
    private func openFrameTag(_ buffer: ByteBuffer) -> String? {
        let source = frameOpen ? frameFirstSegment : buffer
        guard let source else { return nil }
        return source.withUnsafeReadableBytes { FrameHead.tag(in: $0) }
    }
}
