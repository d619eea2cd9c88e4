import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// The authenticated relay: client and upstream frames through `RelayStateMachine`, byte for byte.
extension ProxySession {
    func relayFromClient() throws {
        guard let upstream = upstreamChannel else { return }
        // Literal gating (DESIGN principle 4, review S2): after a line that
        // announces a synchronizing literal, no client byte is consumed until
        // the upstream's `+` (then they are the literal) or its tagged answer
        // (then the client will not send it, and what it sent anyway is
        // framed as commands, which the rules see). Reads pause meanwhile.
        while phase == .relay, relayTakesClientBytes, let event = try clientDecoder.framer.next(&clientBuffer) {
            switch event {
            case .line(let segment):
                if droppingClientFrame {
                    if segment.endsFrame {
                        droppingClientFrame = false
                    } else if segment.literal?.isSynchronizing == true {
                        // The client saw the refusal; it will not send this literal.
                        clientDecoder.framer.abandonLiteral()
                        droppingClientFrame = false
                    }
                    continue
                }
                if commandHead != nil {
                    collectCommand(segment)
                    continue
                }
                if continuingCommand != nil {
                    continueCommand(segment)
                    continue
                }
                if segment.isFrameStart, segment.kind == .command, segment.endsFrame, let tag = segment.tag {
                    if segment.secondWordIs("COMPRESS") {
                        queueLocalResponse(ByteBuffer(string: "\(tag) NO [CANNOT] COMPRESS is not available through this proxy.\r\n"))
                        continue
                    }
                    if configuration.mode == .transparent, segment.secondWordIs("STARTTLS") {
                        queueLocalResponse(ByteBuffer(string: "\(tag) BAD STARTTLS is not available through this proxy.\r\n"))
                        continue
                    }
                }
                if let engine, segment.isFrameStart, segment.kind == .command, let tag = segment.tag {
                    let name = ProxySession.name(of: segment)
                    if let name, engine.wantsCommand(named: name) {
                        commandHead = CollectedFrame(kind: .command)
                        relay.clientFrameStarted(kind: .command, tag: tag)
                        collectCommand(segment)
                        continue
                    }
                    engine.commandPassed(tag: tag, name: name ?? "")
                }
                if segment.isFrameStart {
                    relay.clientFrameStarted(kind: segment.kind, tag: segment.tag)
                    if segment.kind == .command, configuration.mode == .transparent, user == nil {
                        noteTransparentLogin(segment)
                    }
                }
                if case .refuse(let hint) = relay.clientLineForwarded(literal: segment.literal) {
                    endForClientProtocolError(hint: hint)
                    return
                }
                upstream.write(segment.bytes, promise: nil)
            case .literalBytes(let chunk, _):
                if droppingClientFrame { continue }
                if commandHead != nil {
                    commandHead?.appendLiteralBytes(chunk)
                    continue
                }
                if continuingCommand?.collectingLiteral == true {
                    continuingCommand?.frame.appendLiteralBytes(chunk)
                    continue
                }
                upstream.write(chunk, promise: nil)
            }
        }
        compact(&clientBuffer)
    }


    func relayFromUpstream() throws {
        while let event = try upstreamDecoder.framer.next(&upstreamBuffer) {
            switch event {
            case .line(let segment):
                if segment.isFrameStart {
                    if segment.kind == .taggedResponse, transparentLoginTag != nil, segment.tag == transparentLoginTag,
                       !transparentLoginAnswered(segment) {
                        return  // the session ended: the rules cannot be applied
                    }
                    let isBye = segment.kind == .untaggedResponse && segment.secondWordIs("BYE")
                    var consumed = false
                    for action in relay.upstreamFrameStarted(kind: segment.kind, tag: segment.tag, isBye: isBye) {
                        switch action {
                        case .sendToUpstream(let part): upstreamChannel?.writeAndFlush(part, promise: nil)
                        case .consumeLine: consumed = true
                        case .abandonClientLiteral: clientDecoder.framer.abandonLiteral()
                        case .resumeClient: clientGateOpened = true
                        }
                    }
                    if consumed { continue }
                    if segment.kind == .taggedResponse, let tag = segment.tag, !swallowedAnswers.isEmpty,
                       swallowedAnswers.remove(tag) != nil {
                        // The answer to a command a rule refused mid-way (`ContinuingCommand`).
                        engine?.taggedResponsePassed(tag: tag)
                        swallowingUpstreamFrame = !segment.endsFrame
                        continue
                    }
                }
                if swallowingUpstreamFrame {
                    swallowingUpstreamFrame = !segment.endsFrame
                    continue
                }
                if responseHead != nil {
                    collectResponse(segment)
                    continue
                }
                if let engine, segment.isFrameStart,
                   segment.kind == .untaggedResponse || segment.kind == .taggedResponse {
                    if engine.wantsResponse(kind: segment.kind, name: ProxySession.name(of: segment), tag: segment.tag) {
                        responseHead = CollectedFrame(kind: segment.kind)
                        collectResponse(segment)
                        continue
                    }
                    if segment.kind == .taggedResponse, let tag = segment.tag { engine.taggedResponsePassed(tag: tag) }
                }
                if segment.isFrameStart, segment.endsFrame, let rewritten = capabilityRewriter.rewrite(segment) {
                    clientChannel.write(rewritten, promise: nil)
                } else {
                    clientChannel.write(segment.bytes, promise: nil)
                }
            case .literalBytes(let chunk, _):
                if swallowingUpstreamFrame { continue }
                if responseHead != nil {
                    responseHead?.appendLiteralBytes(chunk)
                    continue
                }
                clientChannel.write(chunk, promise: nil)
            }
        }
        compact(&upstreamBuffer)
        flushLocalResponses()
        let gateOpened = clientGateOpened
        clientGateOpened = false
        if clientBuffer.readableBytes > 0, gateOpened || clientDecoder.framer.isAtFrameBoundary {
            try relayFromClient()  // bytes held behind a literal's "+", or behind an abandoned literal
            upstreamChannel?.flush()
        }
        // Reads held for the "+", or for the in-flight limit, may go on now.
        if clientReadPending && mayReadFromClient { resumeReads() }
        if draining { byeIfQuiet() }
    }

    func queueLocalResponse(_ bytes: ByteBuffer) {
        localResponses.append(bytes)
        flushLocalResponses()
        clientChannel.flush()
    }

    func flushLocalResponses() {
        guard !localResponses.isEmpty, upstreamDecoder.framer.isAtFrameBoundary || phase != .relay else { return }
        for response in localResponses { clientChannel.write(response, promise: nil) }
        localResponses.removeAll()
    }
}
