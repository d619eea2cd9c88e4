import IMAPWire
import Logging
import SluiceFilters
import NIOCore
import NIOPosix
import NIOSSL

/// Frames the rules selected: collected whole, run through the `FilterEngine`, re-encoded if rewritten.
extension ProxySession {
    /// The name of a command or response from its first line (`UID FETCH`, `LIST`, `FETCH` for `* 3 FETCH`).
    static func name(of segment: LineSegment) -> String? {
        Frame(kind: segment.kind, line: segment.bytes).name
    }

    /// Adds a line of the command being collected. Small LITERAL+ literals
    /// are collected too; a synchronizing literal ends the collected part
    /// (the filters decide before the client sends it, so a refusal comes
    /// before the client's literal), and so does a large one: either
    /// streams from the client as it arrives.
    func collectCommand(_ segment: LineSegment) {
        guard var head = filters?.collectingCommand else { return }
        head.append(segment)
        if head.collectedBytes > IMAPLimits.maxCollectedBytes {
            // Too large for the rules to read whole: refused, never forwarded (review S10).
            filters?.collectingCommand = nil
            logger.notice("selected command refused: over the collected-bytes budget",
                          metadata: ["limit.bytes": "\(IMAPLimits.maxCollectedBytes)"])
            engine?.proxyRefused(commandNamed: head.frame.name, status: "BAD", failClosed: true)
            relay.commandAnsweredByProxy()
            queueLocalResponse(ByteBuffer(string: "\(relay.currentClientTag ?? "*") BAD Command too large for this proxy's rules.\r\n"))
            if let literal = segment.literal {
                if literal.isSynchronizing { clientDecoder.framer.abandonLiteral() } else { droppingClientFrame = true }
            }
            return
        }
        if let literal = segment.literal {
            if !literal.isSynchronizing, literal.size <= ProxySession.filterLiteralLimit {
                head.literals.append(FrameLiteral(header: literal, chunks: []))
                filters?.collectingCommand = head
                return
            }
            head.literals.append(FrameLiteral(header: literal, chunks: nil))
            filters?.collectingCommand = nil
            finishCommand(head, streamed: literal)
        } else {
            filters?.collectingCommand = nil
            finishCommand(head, streamed: nil)
        }
    }

    func finishCommand(_ head: CollectedFrame, streamed: LiteralHeader?) {
        guard let engine, let upstream = upstreamChannel else { return }
        let frame = head.frame
        let decision = engine.process(command: frame, streamedLiteral: streamed)
        switch decision {
        case .forwardOriginal:
            sendSynchronizing(head, from: 0, to: upstream)
        case .forwardRewritten(let command):
            sendUpstream(command, original: frame, streamed: streamed)
        case .respond(let bytes):
            relay.commandAnsweredByProxy()
            queueLocalResponse(bytes)
            if let streamed {
                if streamed.isSynchronizing {
                    clientDecoder.framer.abandonLiteral()  // the client will not send it
                } else {
                    droppingClientFrame = true  // read and drop the {n+} literal and the rest
                }
            }
            return
        }
        if case .refuse(let hint) = relay.clientLineForwarded(literal: streamed, upstreamWaits: true) {
            endForClientProtocolError(hint: hint)
            return
        }
        // What follows the streamed literal is judged when it comes.
        if streamed != nil { filters?.continuingCommand = ContinuingCommand(frame: head) }
    }

    /// A line after a literal that streamed past the rules, in a command
    /// they selected: the command so far (literal bytes that streamed are
    /// not in it) runs through the chain again, as a continuation, before
    /// this part goes on. A bare CRLF ends the command without asking.
    func continueCommand(_ segment: LineSegment) {
        guard var continuing = filters?.continuingCommand, let engine, let upstream = upstreamChannel else { return }
        continuing.frame.append(segment)
        continuing.collectingLiteral = false
        if let literal = segment.literal, !literal.isSynchronizing, literal.size <= ProxySession.filterLiteralLimit,
           continuing.frame.collectedBytes <= IMAPLimits.maxCollectedBytes {
            continuing.frame.literals.append(FrameLiteral(header: literal, chunks: []))
            continuing.collectingLiteral = true
            filters?.continuingCommand = continuing
            return
        }
        if let literal = segment.literal { continuing.frame.literals.append(FrameLiteral(header: literal, chunks: nil)) }
        let endsCommand = segment.endsFrame && segment.bytes.readableBytes <= 2
        let decision: FilterEngine.CommandDecision
        if continuing.frame.collectedBytes > IMAPLimits.maxCollectedBytes {
            decision = .respond(ByteBuffer(string: "\(relay.currentClientTag ?? "*") BAD Command too large for this proxy's rules.\r\n"))
        } else if endsCommand {
            decision = .forwardOriginal
        } else {
            decision = engine.process(command: continuing.frame.frame, streamedLiteral: segment.literal, continuing: true)
        }
        switch decision {
        case .forwardOriginal, .forwardRewritten:
            sendSynchronizing(continuing.frame, from: continuing.unsentFrom, to: upstream)
            continuing.unsentFrom = continuing.frame.segments.count
            filters?.continuingCommand = segment.literal == nil ? nil : continuing
            if case .refuse(let hint) = relay.clientLineForwarded(literal: segment.literal, upstreamWaits: true) {
                endForClientProtocolError(hint: hint)
            }
        case .respond(let bytes):
            // The server holds the first parts: make it fail the whole
            // command, and answer the client with the rule's reply instead.
            filters?.continuingCommand = nil
            upstream.write(ContinuingCommand.cancellation, promise: nil)
            if let tag = relay.currentClientTag { filters?.swallowedAnswers.insert(tag) }
            queueLocalResponse(bytes)
            if let literal = segment.literal {
                if literal.isSynchronizing {
                    clientDecoder.framer.abandonLiteral()  // the client will not send it
                } else {
                    droppingClientFrame = true  // read and drop the {n+} literal and the rest
                }
            }
        }
    }

    /// Sends a collected command from segment `start` on, every literal
    /// announced synchronizing (`SynchronizingLiterals`): the first part now,
    /// the next ones on the upstream's `+`. Without `{n+}` literals in it the
    /// bytes go as they arrived.
    func sendSynchronizing(_ frame: CollectedFrame, from start: Int, to upstream: Channel) {
        guard SynchronizingLiterals.hasNonSynchronizing(frame, from: start) else {
            frame.write(to: upstream, from: start)
            return
        }
        var parts = SynchronizingLiterals.parts(of: frame, from: start)
        guard !parts.isEmpty else { return }
        upstream.write(parts.removeFirst(), promise: nil)
        if !parts.isEmpty, let tag = relay.currentClientTag {
            relay.holdParts(parts, tag: tag)
            upstream.flush()
        }
    }

    /// Encodes a (rewritten) command for the upstream: every literal
    /// synchronizing, original literals by reference (their bytes were
    /// collected), and a streamed literal announced last; the proxy sends
    /// each part on the upstream's `+`.
    func sendUpstream(_ command: ParsedCommand, original: Frame, streamed: LiteralHeader?) {
        guard let upstream = upstreamChannel else { return }
        // Every literal synchronizing, even to a server with LITERAL+: the
        // server must ask for each (see `SynchronizingLiterals`).
        let receiver = EncodingOptions.Receiver.server
        var encoder = IMAPEncoder(options: EncodingOptions(receiver: receiver, utf8Accepted: engine?.context.utf8Enabled ?? false))
        encoder.writeRaw(command.tag + " " + command.name)
        var arguments = command.arguments
        if streamed != nil, case .literal(_, _, nil)? = arguments.last { arguments.removeLast() }
        if !arguments.isEmpty {
            encoder.writeSpace()
            encoder.writeTokens(arguments)
        }
        if let streamed {
            encoder.writeSpace()
            encoder.writeRaw((streamed.isBinary ? "~" : "") + "{\(streamed.size)}")
        }
        let encoded = encoder.finish()
        // Split where a synchronizing literal must wait for the upstream's "+".
        var parts = encoded.synchronizingParts(original: original)
        upstream.write(parts.removeFirst(), promise: nil)
        if !parts.isEmpty {
            relay.holdParts(parts, tag: command.tag)
            upstream.flush()
        }
    }

    /// Adds a line of the response being collected. A literal too large to
    /// collect ends filtering for this response: a mailbox listing (LIST,
    /// LSUB, STATUS) is dropped, since it may name a hidden mailbox; any
    /// other (a message body) goes out as it was and the rest streams.
    func collectResponse(_ segment: LineSegment) {
        guard var head = responseHead else { return }
        head.append(segment)
        if head.collectedBytes > IMAPLimits.maxCollectedBytes {
            // A response the rules selected but cannot hold: the session ends
            // rather than passing it unread (review S10, DESIGN principle 5).
            responseHead = nil
            logger.notice("selected response over the collected-bytes budget",
                          metadata: ["limit.bytes": "\(IMAPLimits.maxCollectedBytes)"])
            upstreamBuffer.clear()  // nothing more of this stream is read
            record.endReason = .upstreamResponseTooLarge
            localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] Server response too large for this proxy's rules.\r\n"))
            closeWhenWritten()
            return
        }
        if segment.continuesLine {
            responseHead = head  // the rest of a long line follows in pieces
            return
        }
        if let literal = segment.literal {
            if literal.size <= ProxySession.filterLiteralLimit {
                head.literals.append(FrameLiteral(header: literal, chunks: []))
                responseHead = head
            } else if head.kind == .untaggedResponse,
                      let name = head.frame.name, ["LIST", "LSUB", "STATUS"].contains(name) {
                // A mailbox listing the rules cannot hold (a name over 64 KiB):
                // it may name a hidden mailbox, so it does not reach the client.
                responseHead = nil
                swallowingUpstreamFrame = true
                logger.notice("selected response dropped: a literal too large to check", metadata: ["imap.response": "\(name)"])
            } else {
                responseHead = nil
                head.write(to: clientChannel)
                if let tag = head.frame.tag, head.kind == .taggedResponse { engine?.taggedResponsePassed(tag: tag) }
            }
            return
        }
        responseHead = nil
        // Without rules, only the capability rewriter collects (a long line's pieces).
        switch engine?.process(response: head.frame) ?? .forwardOriginal {
        case .forwardOriginal:
            if head.segments.count == 1, let line = head.segments.first,
               let rewritten = capabilityRewriter.rewrite(kind: head.kind, line: line) {
                clientChannel.write(rewritten, promise: nil)
            } else {
                head.write(to: clientChannel)
            }
        case .forwardRewritten(let bytes):
            clientChannel.write(bytes, promise: nil)
        case .drop:
            break
        case .endSession(let reason):
            // A rule could not decide on this response (a failed script): it
            // may have had to hide it, so neither it nor anything after goes out.
            upstreamBuffer.clear()
            record.endReason = .ruleFailed(reason)
            localResponses.append(ByteBuffer(string: "* BYE [UNAVAILABLE] \(reason)\r\n"))
            closeWhenWritten()
        }
    }
}
