import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Before login: the proxy answers the client itself (`PreAuthStateMachine`), and STARTTLS.
extension ProxySession {
    func processPreAuth() throws {
        while preAuth.acceptsFrames && phase.kind == .preAuth && clientChannel.isWritable {
            guard let frame = try clientDecoder.next(&clientBuffer) else {
                if clientDecoder.takeContinuationRequest() != nil, let partial = clientDecoder.frameInProgress {
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
            perform(action)
        }
        compact(&clientBuffer)
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
