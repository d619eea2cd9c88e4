import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// The ways a session ends: each tells the client why (`* BYE`) after what is queued for it.
extension ProxySession {
    /// The client broke the relay's rules in a way that leaves no safe way
    /// on (a literal the upstream's answer could not be matched to): `* BAD`
    /// and `* BYE`, after what is queued.
    func endForClientProtocolError(hint: String) {
        record.endReason = .clientProtocolError(hint: hint)
        endUpstreamFrameForBye()
        queueLocalResponse(ByteBuffer(string: "* BAD \(hint).\r\n* BYE \(hint).\r\n"))
        closeWhenWritten()
    }

    /// The server asked for literal data (`+`) that no command the proxy
    /// relayed announced: it read the client's bytes differently from the
    /// proxy, and the rules can no longer be applied to what follows.
    func endForStrayContinuation() {
        record.endReason = .strayContinuation
        logger.warning("server asked for data the proxy did not see; ending the session")
        localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] The server and this proxy disagree on the commands sent.\r\n"))
        closeWhenWritten()
    }

    /// The upstream's stream is over (closed, or failed) during the relay:
    /// what was relayed reaches the client, a response cut inside a literal
    /// is made unmistakably incomplete, and the client gets a BYE unless the
    /// upstream said one.
    func upstreamEnded(reason: EndReason) {
        record.endReason = reason
        // A response cut short is ended visibly even after the server's own BYE.
        endUpstreamFrameForBye()
        if !relay.upstreamSaidBye {
            let text: String
            if case .upstreamFramingError(let hint) = reason {
                text = "* BYE [UNAVAILABLE] The server's response broke this proxy's limits (\(hint)).\r\n"
            } else {
                text = "* BYE [UNAVAILABLE] Server closed the connection.\r\n"
            }
            localResponses.append(ByteBuffer(string: text))
        }
        // The session ends (and leaves the registry) when the client's
        // connection closes, after what is queued for it has gone out.
        closeWhenWritten()
    }

    /// The upstream died inside a response: bring the client's parser to a
    /// point where it can read a BYE. The rest of an open literal is filled
    /// with spaces (a BYE there would be read as message bytes), then the
    /// line is ended without its closing parenthesis, so the truncated
    /// response is malformed and no client can take it for complete data.
    /// A line cut inside its text (streamed in pieces) gets ` (` first: a
    /// `* SEARCH 1 2 11` cut from `… 114` must not read as a valid answer
    /// (red team B.4 #2); an unclosed parenthesis, or an unclosed quoted
    /// string, is a syntax error in every response but free text.
    func endUpstreamFrameForBye() {
        guard !upstreamDecoder.framer.isAtFrameBoundary else { return }
        if upstreamDecoder.framer.isInsideLine { clientChannel.write(ByteBuffer(string: " ("), promise: nil) }
        var remaining = upstreamDecoder.framer.literalBytesRemaining
        if remaining > 0 {
            logger.notice("upstream closed inside a literal; padding it for the client",
                          metadata: ["literal.missing_bytes": "\(remaining)"])
            let chunk = ProxySession.padding
            while remaining >= UInt64(chunk.readableBytes) {
                clientChannel.write(chunk, promise: nil)
                remaining -= UInt64(chunk.readableBytes)
            }
            if remaining > 0 {
                clientChannel.write(ByteBuffer(repeating: UInt8(ascii: " "), count: Int(remaining)), promise: nil)
            }
        }
        clientChannel.write(ByteBuffer(string: "\r\n"), promise: nil)
        upstreamDecoder = IMAPFrameDecoder(peer: .server)
    }

    static let padding = ByteBuffer(repeating: UInt8(ascii: " "), count: 64 * 1024)

    /// SIGTERM: BYE now if nothing is in flight, else once it finishes.
    func beginShutdown() {
        switch phase.kind {
        case .connecting, .preAuth, .loginFailed:
            record.endReason = .shutdown
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: "* BYE Server shutting down, please reconnect.\r\n")).whenComplete {
                [clientChannel] _ in clientChannel.close(promise: nil)
            }
        case .loggingIn, .relay:
            draining = true
            byeIfQuiet()
        case .closed:
            break
        }
    }

    /// The grace period is over: BYE where the stream allows it, and close.
    func forceClose() {
        guard phase.kind != .closed else { return }
        record.endReason = .shutdownGraceOver
        if phase.kind == .relay {
            endUpstreamFrameForBye()
            queueLocalResponse(ByteBuffer(string: "* BYE Server shutting down.\r\n"))
        } else {
            writeToClient("* BYE Server shutting down.\r\n", flush: true)
        }
        closeBoth()
    }

    /// While draining: BYE and close once no command is in flight (a client
    /// in IDLE counts as quiet) and both streams are between frames.
    func byeIfQuiet() {
        guard draining, phase.kind == .relay else { return }
        let quiet = relay.commandsInFlight == 0 || clientDecoder.framer.clientExpectation == .idleDone
        guard quiet, upstreamDecoder.framer.isAtFrameBoundary, clientDecoder.framer.isAtFrameBoundary else { return }
        record.endReason = .shutdown
        queueLocalResponse(ByteBuffer(string: "* BYE Server shutting down, please reconnect.\r\n"))
        closeWhenWritten()
    }


    /// How long a closing session waits for its client to take what is
    /// already queued for it before the connection is cut.
    static let closeDrainLimit: TimeAmount = .seconds(30)

    /// Closes the client connection once everything queued for it has been
    /// written: NIO's `close` drops unwritten data, so a slow reader would
    /// lose the end of a FETCH the upstream had already finished, and its
    /// BYE and tagged OK (the upstream answers a pipelined LOGOUT and closes
    /// while the client is still reading). A client that stops reading is cut
    /// after `closeDrainLimit`.
    ///
    /// On a plaintext connection the socket usually takes everything at
    /// once: the write completes, and the connection is closed, inside
    /// `writeAndFlush`, and no task is needed (issue 14: one was scheduled
    /// and cancelled at the end of every session). A client that has not
    /// read what it was sent gets the limit's task; so does every TLS
    /// client, whose connection stays open while NIOSSL waits for its
    /// close_notify, a wait the limit bounds too.
    func closeClientWhenWritten() {
        let channel = clientChannel
        channel.writeAndFlush(ProxySession.empty).whenComplete { _ in channel.close(promise: nil) }
        guard channel.isActive else { return }
        let limit = channel.eventLoop.scheduleTask(in: ProxySession.closeDrainLimit) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in limit.cancel() }
    }

    /// Ends the session after the proxy's last answer: the upstream closes
    /// now, the client once that answer and all before it are written.
    func closeWhenWritten() {
        phase = .closed
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        flushLocalResponses()
        closeClientWhenWritten()
    }

    func closeBoth() {
        closingUpstream = true
        flushLocalResponses()
        clientChannel.flush()
        clientChannel.close(promise: nil)
        upstreamChannel?.close(promise: nil)
    }

    func end() {
        guard !ended else { return }
        ended = true
        if clientLoggedOut, [.clientClosed, .upstreamSaidBye, .upstreamClosed].contains(record.endReason) {
            record.endReason = .logout
        }
        listenerMetrics?.active.decrement()
        if let started = loginStarted {
            // The client left first (aborted), or the proxy ended the session (a timeout, shutdown).
            let clientLeft: Bool
            switch record.endReason {
            case .clientClosed, .clientError, .clientTLSError, .clientFramingError, .clientProtocolError: clientLeft = true
            default: clientLeft = false
            }
            metrics.login(clientLeft ? .aborted : .unavailable,
                          mechanism: transparentLogin?.mechanism ?? preAuth.loginMechanism, duration: .now() - started)
            loginStarted = nil
        }
        phase = .closed
        relayOutputs = nil
        sessionTimer?.task.cancel()
        sessionTimer = nil
        closingUpstream = true
        upstreamChannel?.close(promise: nil)
        logger.info("session ended", metadata: record.endMetadata())
    }
}
