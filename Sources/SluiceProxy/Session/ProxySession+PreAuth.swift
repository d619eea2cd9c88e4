import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Before login: the proxy answers the client itself (`PreAuthStateMachine`), and STARTTLS.
extension ProxySession {
    /// Answers the client's pre-login commands. The answers of one batch go
    /// out together, in writes of up to `preAuthAnswerBatch` bytes: written
    /// one by one, a flood of `NOOP`s from a client that does not read
    /// queued ~10,000 small writes whose bookkeeping, not their bytes, held
    /// 2 MB per connection below the write high-water mark (red team 8 #1).
    func processPreAuth() throws {
        var answers = ByteBuffer()
        defer {
            if answers.readableBytes > 0 { clientChannel.writeAndFlush(answers, promise: nil) }
            compact(&clientBuffer)
        }
        while preAuth.acceptsFrames && phase.kind == .preAuth && clientChannel.isWritable {
            guard let frame = try clientDecoder.next(&clientBuffer) else {
                if clientDecoder.takeContinuationRequest() != nil, let partial = clientDecoder.frameInProgress {
                    sendAnswers(&answers)
                    if let refusal = preAuth.literalAnnounced(in: partial) {
                        _ = clientDecoder.abandonLiteral()  // the client will not send it
                        perform(refusal)
                        continue
                    }
                    writeToClient("+ Ready for literal data\r\n", flush: true)
                }
                break
            }
            let action = preAuth.receive(frame)
            if !preAuth.isAwaitingSASL { clientDecoder.framer.authenticationEnded() }
            if case .send(let lines) = action {
                answers.writeString(lines)
                if answers.readableBytes >= ProxySession.preAuthAnswerBatch { sendAnswers(&answers) }
            } else {
                sendAnswers(&answers)
                perform(action)
            }
        }
    }

    /// Writes the answers collected so far (before anything else is written).
    private func sendAnswers(_ answers: inout ByteBuffer) {
        guard answers.readableBytes > 0 else { return }
        clientChannel.writeAndFlush(answers, promise: nil)
        answers = ByteBuffer()
    }

    func perform(_ action: PreAuthStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let lines):
            writeToClient(lines, flush: true)
        case .sendAndClose(let lines):
            record.endReason = .closedBeforeLogin
            phase = .closed
            clientChannel.writeAndFlush(ByteBuffer(string: lines)).whenComplete { [clientChannel] _ in
                clientChannel.close(promise: nil)
            }
        case .startTLS(let ok):
            startClientTLS(ok: ok)
        case .login(_, let credentials):
            loginStarted = .now()
            phase = .loggingIn(nil)
            user = credentials.userName
            logFields.user = credentials.userName
            route(credentials)
        }
    }

    func startClientTLS(ok: String) {
        guard let context = tls.server else {
            writeToClient("* BAD TLS is not configured.\r\n", flush: true)
            return
        }
        // Plaintext pipelined behind STARTTLS is discarded (ClientTLSUpgrade).
        clientBuffer.clear()
        clientDecoder = IMAPFrameDecoder(peer: .client, limits: ProxySession.preAuthLimits,
                                         literalCaptureLimit: IMAPLimits.preAuth.maxLiteralSize)
        do {
            try ClientTLSUpgrade.start(on: clientChannel, context: context, ok: ok)
        } catch {
            record.endReason = .clientTLSError(ErrorText.describe(error))
            clientChannel.close(promise: nil)
        }
    }
}
