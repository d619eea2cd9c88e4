import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// The authenticated relay: client and upstream frames through `RelayStateMachine`, byte for byte.
extension ProxySession {
    /// Client bytes after login: each command line is checked (literal
    /// gating, unreadable tags with rules, IDLE's DONE, COMPRESS), collected
    /// for the rules when one selects it, and otherwise written upstream as
    /// the slice it arrived in; literal bytes stream through. The order of
    /// the checks matters: a frame being dropped or collected takes its
    /// following segments before anything looks at them as new commands.
    func relayFromClient() throws {
        guard let upstream = relayOutputs?.upstream else { return }
        // Literal gating (DESIGN principle 4, review S2): after a line that
        // announces a synchronizing literal, no client byte is consumed until
        // the upstream's `+` (then they are the literal) or its tagged answer
        // (then the client will not send it, and what it sent anyway is
        // framed as commands, which the rules see). Reads pause meanwhile.
        while phase.kind == .relay, relayTakesClientBytes, let event = try clientDecoder.framer.next(&clientBuffer) {
            switch consume event {
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
                if segment.kind == .command, rulesMayApply, SynchronizingLiterals.announcesLiteralInside(segment.bytes) {
                    // A server reads `{11}` as a literal wherever an argument may start
                    // and asks for it with "+"; the proxy frames literals only at the end
                    // of a line. What the two would read differently is refused.
                    if segment.isFrameStart {
                        engine?.proxyRefused(commandNamed: ProxySession.name(of: segment), status: "BAD", failClosed: true)
                    }
                    endForClientProtocolError(hint: "Literal announcement inside a line")
                    return
                }
                if filters?.collectingCommand != nil {
                    collectCommand(segment)
                    continue
                }
                if filters?.continuingCommand != nil {
                    // A new command ends any continued one (its literal was refused).
                    if segment.isFrameStart { filters?.continuingCommand = nil } else {
                        continueCommand(segment)
                        continue
                    }
                }
                if segment.isFrameStart, segment.kind == .command, rulesMayApply,
                   !(segment.tag.map(IMAPTag.isValid) ?? false) || ProxySession.name(of: segment) == nil {
                    // With rules, a command whose tag or name the proxy cannot read
                    // is not forwarded: the server might read it (a 70-byte tag).
                    refuseUnreadableCommand(segment)
                    if phase.kind != .relay { return }
                    continue
                }
                if segment.isFrameStart, segment.kind == .command, clientInIdle, engine != nil {
                    // The server reads any line during IDLE as its end, and what
                    // follows as commands: a literal announced here never gets its "+".
                    endForClientProtocolError(hint: "Expected DONE")
                    return
                }
                if segment.isFrameStart { clientInIdle = false }
                if segment.isFrameStart, segment.kind == .command, segment.secondWordIs("COMPRESS"), let tag = segment.tag {
                    engine?.proxyRefused(commandNamed: "COMPRESS", status: "NO", failClosed: false)
                    // In any form (a literal argument too): the stream must stay readable.
                    queueLocalResponse(ByteBuffer(string: "\(tag) NO [CANNOT] COMPRESS is not available through this proxy.\r\n"))
                    dropRestOfClientFrame(segment)
                    continue
                }
                if segment.isFrameStart, segment.kind == .command, segment.secondWordIs("UNAUTHENTICATE"), let tag = segment.tag {
                    // RFC 8437 would let the client become another user in this session, under the first one's rules.
                    engine?.proxyRefused(commandNamed: "UNAUTHENTICATE", status: "NO", failClosed: false)
                    queueLocalResponse(ByteBuffer(string: "\(tag) NO [CANNOT] UNAUTHENTICATE is not available through this proxy.\r\n"))
                    dropRestOfClientFrame(segment)
                    continue
                }
                if configuration.mode == .transparent, segment.isFrameStart, segment.kind == .command, segment.endsFrame,
                   segment.secondWordIs("STARTTLS"), let tag = segment.tag {
                    queueLocalResponse(ByteBuffer(string: "\(tag) BAD STARTTLS is not available through this proxy.\r\n"))
                    continue
                }
                let isIdle = segment.isFrameStart && segment.kind == .command && segment.endsFrame
                    && segment.secondWordIs("IDLE")
                if let engine, segment.isFrameStart, segment.kind == .command, let tag = segment.tag {
                    let name = ProxySession.name(of: segment)
                    if let name, engine.wantsCommand(named: name) {
                        filters?.collectingCommand = CollectedFrame(kind: .command)
                        relay.clientFrameStarted(kind: .command, tag: tag, isIdle: isIdle)
                        clientInIdle = isIdle
                        collectCommand(segment)
                        continue
                    }
                    engine.commandPassed(tag: tag, name: name ?? "")
                }
                if segment.isFrameStart {
                    if segment.kind == .command, segment.secondWordIs("LOGOUT") { clientLoggedOut = true }
                    relay.clientFrameStarted(kind: segment.kind, tag: segment.tag, isIdle: isIdle)
                    clientInIdle = isIdle
                    if segment.kind == .command, configuration.mode == .transparent, user == nil,
                       !noteTransparentLogin(segment) {
                        relay.commandAnsweredByProxy()
                        queueLocalResponse(ByteBuffer(string: "\(segment.tag ?? "*") NO [CANNOT] With this proxy's rules, "
                            + "log in with LOGIN on one line or AUTHENTICATE PLAIN with an initial response, "
                            + "once earlier commands are answered.\r\n"))
                        dropRestOfClientFrame(segment)
                        continue
                    }
                }
                var bytes = segment.bytes
                var upstreamWaits = false
                if rulesMayApply, let literal = segment.literal, !literal.isSynchronizing {
                    bytes = SynchronizingLiterals.synchronizing(bytes)
                    upstreamWaits = true
                }
                if case .refuse(let hint) = relay.clientLineForwarded(literal: segment.literal, upstreamWaits: upstreamWaits) {
                    endForClientProtocolError(hint: hint)
                    return
                }
                upstream.write(NIOAny(bytes), promise: nil)
            case .literalBytes(let chunk, _):
                if droppingClientFrame { continue }
                if filters?.collectingCommand != nil {
                    filters?.collectingCommand?.appendLiteralBytes(chunk)
                    continue
                }
                if filters?.continuingCommand?.collectingLiteral == true {
                    filters?.continuingCommand?.frame.appendLiteralBytes(chunk)
                    continue
                }
                upstream.write(NIOAny(chunk), promise: nil)
            }
        }
        compact(&clientBuffer)
    }


    /// With rules (or, in transparent mode, rules that may apply after the
    /// login), commands the proxy cannot read are not forwarded.
    var rulesMayApply: Bool {
        engine != nil || (configuration.mode == .transparent && user == nil && !configuration.filters.isEmpty)
    }

    /// A command line whose tag or name the proxy cannot read, with rules:
    /// answered `* BAD` and dropped; with a literal the client may wait for,
    /// the session ends (the answer cannot be matched to its tag).
    func refuseUnreadableCommand(_ segment: LineSegment) {
        engine?.proxyRefused(commandNamed: ProxySession.name(of: segment), status: "BAD", failClosed: true)
        if segment.literal?.isSynchronizing == true {
            endForClientProtocolError(hint: "Command tag or name could not be read")
            return
        }
        queueLocalResponse(ByteBuffer(string: "* BAD Command tag or name could not be read.\r\n"))
        dropRestOfClientFrame(segment)
    }

    /// The rest of a client frame after its first line is read and dropped.
    func dropRestOfClientFrame(_ segment: LineSegment) {
        guard let literal = segment.literal else { return }
        if literal.isSynchronizing {
            clientDecoder.framer.abandonLiteral()  // refused: the client will not send it
        } else {
            droppingClientFrame = true
        }
    }

    /// Upstream bytes after login: each frame start goes through the relay
    /// state machine first (a `+` may belong to the proxy's own held parts,
    /// IDLE, or the client's literal; a tagged answer ends a command in
    /// flight), then answers the rules swallowed are dropped, frames a rule
    /// selects are collected, capability lists are rewritten, and the rest is
    /// written to the client as the slices it arrived in (long untagged
    /// lines in pieces). Afterwards the proxy's own queued answers go out, and
    /// client bytes held behind a literal's `+` are taken.
    func relayFromUpstream() throws {
        while let event = try upstreamDecoder.framer.next(&upstreamBuffer) {
            switch consume event {
            case .line(let segment):
                if segment.isFrameStart {
                    if segment.kind == .untaggedResponse, user == nil, transparentLogin?.rulesConfigured == true,
                       segment.secondWordIs("PREAUTH") {
                        // Logged in without a login the proxy could read: the rules could not be chosen.
                        record.endReason = .rulesNeedUser
                        logger.warning("upstream greeted with PREAUTH: the rules need the user name; session refused")
                        queueLocalResponse(ByteBuffer(string: "* BYE [UNAVAILABLE] Server is unavailable.\r\n"))
                        closeWhenWritten()
                        return
                    }
                    if segment.kind == .taggedResponse, transparentLogin?.answers(segment) == true,
                       !transparentLoginAnswered(segment) {
                        return  // the session ended: the rules cannot be applied
                    }
                    let isBye = segment.kind == .untaggedResponse && segment.secondWordIs("BYE")
                    var consumed = false
                    // Only a tagged line's tag matters (and building it costs a String).
                    let tag = segment.kind == .taggedResponse ? segment.tag : nil
                    for action in relay.upstreamFrameStarted(kind: segment.kind, tag: tag, isBye: isBye) {
                        switch action {
                        case .sendToUpstream(let part): upstreamChannel?.writeAndFlush(part, promise: nil)
                        case .consumeLine: consumed = true
                        case .abandonClientLiteral:
                            clientDecoder.framer.abandonLiteral()
                            filters?.continuingCommand = nil
                        case .dropClientLiteral:
                            droppingClientFrame = true
                            filters?.continuingCommand = nil
                        case .resumeClient: clientGateOpened = true
                        case .strayContinuation:
                            guard rulesMayApply else { break }  // without rules: the client's own business
                            endForStrayContinuation()
                            return
                        }
                    }
                    if consumed { continue }
                    if let tag, !(filters?.swallowedAnswers.isEmpty ?? true), filters?.swallowedAnswers.remove(tag) != nil {
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
                if segment.isFrameStart, segment.continuesLine,
                   capabilityRewriter.mayRewrite(kind: segment.kind, line: segment.bytes) {
                    // A long line that may list capabilities: rewritten once whole.
                    responseHead = CollectedFrame(kind: segment.kind)
                    collectResponse(segment)
                } else if segment.isFrameStart, segment.endsFrame,
                          let rewritten = capabilityRewriter.rewrite(kind: segment.kind, line: segment.bytes) {
                    relayOutputs?.client.write(NIOAny(rewritten), promise: nil)
                } else {
                    relayOutputs?.client.write(NIOAny(segment.bytes), promise: nil)
                }
            case .literalBytes(let chunk, _):
                if swallowingUpstreamFrame { continue }
                if responseHead != nil {
                    responseHead?.appendLiteralBytes(chunk)
                    continue
                }
                relayOutputs?.client.write(NIOAny(chunk), promise: nil)
            }
        }
        compact(&upstreamBuffer)
        flushLocalResponses()
        let gateOpened = clientGateOpened
        clientGateOpened = false
        if clientBuffer.readableBytes > 0, gateOpened || clientDecoder.framer.isAtFrameBoundary {
            try relayFromClient()  // bytes held behind a literal's "+", or behind an abandoned literal
            relayOutputs?.upstream.flush()
        }
        // Reads held for the "+", or for the in-flight limit, may go on now.
        if clientReadPending && mayReadFromClient { resumeReads() }
        if draining { byeIfQuiet() }
    }

    /// An answer of the proxy's own, written when the upstream's stream is
    /// between frames (never inside a response).
    func queueLocalResponse(_ bytes: ByteBuffer) {
        localResponses.append(bytes)
        localResponseBytes += bytes.readableBytes
        flushLocalResponses()
        clientChannel.flush()
    }

    func flushLocalResponses() {
        guard !localResponses.isEmpty, upstreamDecoder.framer.isAtFrameBoundary || phase.kind != .relay else { return }
        for response in localResponses { clientChannel.write(response, promise: nil) }
        localResponses.removeAll()
        localResponseBytes = 0
    }
}
