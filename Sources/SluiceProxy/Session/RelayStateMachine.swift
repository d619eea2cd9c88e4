import IMAPWire
import NIOCore

/// The relay's protocol bookkeeping between the client's and the upstream's
/// framers, without I/O: which client bytes may go upstream now, which of
/// the upstream's continuation requests are the proxy's own, and how many
/// commands are in flight. The session feeds it frame starts and runs the
/// actions it returns (see `Tests/SluiceProxyTests/RelayStateMachine+Tests.swift`).
///
/// Invariants it keeps:
/// - **Literal gating** (DESIGN principle 4): after a client line announcing
///   a synchronizing literal, no client byte is consumed until the upstream
///   sends `+` (the bytes are the literal) or answers the command (the client
///   will not send it; whatever it sent anyway is read as commands, which the
///   rules see). A client that does not wait cannot hide a command in a
///   "literal" the server never accepted (review S2).
/// - **The proxy's own continuations** (a rewritten command whose literals
///   must wait for `+`) are consumed here and never reach the client; the
///   client's bytes wait until the last part is sent or the command refused.
/// - **Bounded in-flight commands**: at `maxCommandsInFlight`, client bytes
///   wait for answers.
/// - **A literal needs a tag**: a client line that announces a synchronizing
///   literal must carry a valid tag, or the upstream's refusal could not be
///   matched to it and the gate would stay shut or open by guesswork.
/// - **No literal the server does not read**: with rules, the session sends
///   the client's `{n+}` upstream as `{n}` (`upstreamWaits`). A server reads
///   only the arguments a command takes; the bytes of a non-synchronizing
///   literal it does not take (`a NOOP {17+}` CRLF `c DELETE Doomed` CRLF)
///   would run as commands no rule saw. Now the server's `+` (consumed here)
///   releases them, and its refusal drops them.
/// - **Every `+` is accounted for**: it belongs to the oldest unanswered
///   command (a server reads commands in order) — IDLE's, a held part's, or
///   the awaited literal's — or it is stray: the server read a literal the
///   proxy did not see, and with rules the session ends.
struct RelayStateMachine {
    enum Action: Equatable {
        /// Write this part of a rewritten command upstream (and flush).
        case sendToUpstream(ByteBuffer)
        /// The upstream line is the proxy's business: do not relay it.
        case consumeLine
        /// The client's announced literal was refused: reset the client's
        /// framer so its next bytes are read as commands.
        case abandonClientLiteral
        /// The client's `{n+}` literal was refused before the server read it:
        /// read and drop the literal's bytes (the client sends them anyway)
        /// and the rest of its command.
        case dropClientLiteral
        /// Client bytes held back may be taken now.
        case resumeClient
        /// A `+` no command in flight asked for: the server read something
        /// the proxy did not. With rules the session ends (fail closed);
        /// without, the line goes to the client as before.
        case strayContinuation
    }

    /// A client literal the upstream must ask for before its bytes go on.
    struct AwaitedLiteral: Equatable {
        var tag: String
        /// The client itself waits for `+` (`{n}`); otherwise it announced
        /// `{n+}` and the `+` is the proxy's.
        var clientWaits: Bool
    }

    /// What to do with a client line the relay is about to forward.
    enum ClientLineVerdict: Equatable {
        case forward
        /// The line announces a synchronizing literal without a valid tag.
        case refuse(hint: String)
    }

    let maxCommandsInFlight: Int

    /// What a command in flight may still get from the server before its
    /// tagged answer.
    enum Expectation: Equatable {
        /// Only its answer (untagged data, then tagged).
        case answer
        /// IDLE: one `+`, then (after DONE) its answer.
        case idleContinuation
        /// `+` for each of the proxy's held parts.
        case proxyParts
        /// `+` for the client literal in `awaitedLiteral`.
        case clientLiteral
    }

    struct InFlight: Equatable {
        var tag: String
        var expects: Expectation
    }

    /// Commands relayed and not yet answered, oldest first. A server reads
    /// commands in order, so a `+` belongs to the oldest one: it is only
    /// taken as a literal's (or IDLE's, or a held part's) when that command
    /// is the oldest unanswered; any other `+` is one the proxy cannot
    /// account for (the server read something the proxy did not, red team:
    /// Dovecot answers `+ OK` to a `{11}` in the middle of a line).
    private(set) var inFlight = CircularBuffer<InFlight>(initialCapacity: 8)
    /// The client literal that waits for the upstream's `+`.
    private(set) var awaitedLiteral: AwaitedLiteral?
    /// Parts of a rewritten command the proxy sends after each `+`.
    private(set) var heldParts: [ByteBuffer] = []
    private(set) var heldPartsTag: String?
    /// The tag of the client command being read (its lines and literals).
    private(set) var currentClientTag: String?
    /// The upstream said `* BYE`: its closing needs no BYE from the proxy.
    private(set) var upstreamSaidBye = false

    init(maxCommandsInFlight: Int) {
        self.maxCommandsInFlight = maxCommandsInFlight
    }

    /// Tagged client commands relayed and not yet answered.
    var commandsInFlight: Int { inFlight.count }

    /// Whether the relay may consume more client bytes now.
    var takesClientBytes: Bool {
        heldParts.isEmpty && awaitedLiteral == nil && inFlight.count < maxCommandsInFlight
    }

    // MARK: - Client side

    /// A client frame starts (`tag` is `nil` for lines that are not
    /// commands). Only commands with a valid tag count as in flight: a
    /// server answers the others untagged, which would never bring the
    /// count down.
    mutating func clientFrameStarted(kind: FrameKind, tag: String?, isIdle: Bool = false) {
        currentClientTag = kind == .command ? tag : nil
        guard kind == .command, let tag, IMAPTag.isValid(tag) else { return }
        inFlight.append(InFlight(tag: tag, expects: isIdle ? .idleContinuation : .answer))
    }

    /// A client line goes upstream; `literal` is the literal it announces.
    /// `upstreamWaits`: the session announced a client `{n+}` to the
    /// upstream as `{n}`.
    mutating func clientLineForwarded(literal: LiteralHeader?, upstreamWaits: Bool = false) -> ClientLineVerdict {
        guard let literal, literal.isSynchronizing || upstreamWaits else { return .forward }
        guard let tag = currentClientTag, IMAPTag.isValid(tag), let last = inFlight.indices.last,
              inFlight[last].tag == tag
        else {
            return .refuse(hint: "A command announcing a literal needs a valid tag")
        }
        awaitedLiteral = AwaitedLiteral(tag: tag, clientWaits: literal.isSynchronizing)
        if inFlight[last].expects != .proxyParts { inFlight[last].expects = .clientLiteral }
        return .forward
    }

    /// The proxy answered the current command itself (a rule refused it).
    mutating func commandAnsweredByProxy() {
        guard let tag = currentClientTag, let last = inFlight.indices.last, inFlight[last].tag == tag else { return }
        inFlight.removeLast()
    }

    /// A rewritten command went upstream up to its first synchronizing
    /// literal; `parts` follow, one per `+`.
    mutating func holdParts(_ parts: [ByteBuffer], tag: String) {
        guard !parts.isEmpty, let last = inFlight.indices.last, inFlight[last].tag == tag else { return }
        heldParts = parts
        heldPartsTag = tag
        inFlight[last].expects = .proxyParts
    }

    // MARK: - Upstream side

    /// An upstream frame starts. Returns what the session must do before
    /// (or instead of) relaying the line.
    mutating func upstreamFrameStarted(kind: FrameKind, tag: String?, isBye: Bool) -> [Action] {
        if kind == .untaggedResponse, isBye { upstreamSaidBye = true }
        switch kind {
        case .taggedResponse:
            guard let tag else { return [] }
            return commandAnswered(tag: tag)
        case .continuationRequest:
            return continuationRequested()
        default:
            return []
        }
    }

    /// The oldest command with `tag` is answered (tags may repeat; answers
    /// come in order).
    private mutating func commandAnswered(tag: String) -> [Action] {
        guard let index = inFlight.firstIndex(where: { $0.tag == tag }) else { return [] }
        let wasFull = inFlight.count >= maxCommandsInFlight
        let command = index == inFlight.startIndex ? inFlight.removeFirst() : inFlight.remove(at: index)
        var actions: [Action] = []
        switch command.expects {
        case .proxyParts, .clientLiteral:
            // Refused before the rest was sent / before its literal.
            heldParts = []
            heldPartsTag = nil
            if let awaited = awaitedLiteral, awaited.tag == tag {
                awaitedLiteral = nil
                actions.append(awaited.clientWaits ? .abandonClientLiteral : .dropClientLiteral)
            }
            actions.append(.resumeClient)
        case .answer, .idleContinuation:
            if wasFull { actions.append(.resumeClient) }  // back under the in-flight limit
        }
        return actions
    }

    /// A `+`: the oldest unanswered command's, or nobody's.
    private mutating func continuationRequested() -> [Action] {
        guard let oldest = inFlight.indices.first else { return [.strayContinuation] }
        switch inFlight[oldest].expects {
        case .idleContinuation:
            inFlight[oldest].expects = .answer
            return []  // relayed to the client, which waits for it
        case .proxyParts:
            guard !heldParts.isEmpty else { return [.strayContinuation] }
            var actions: [Action] = [.sendToUpstream(heldParts.removeFirst()), .consumeLine]
            if heldParts.isEmpty {
                heldPartsTag = nil
                if awaitedLiteral?.tag == inFlight[oldest].tag {
                    inFlight[oldest].expects = .clientLiteral
                } else {
                    inFlight[oldest].expects = .answer
                    actions.append(.resumeClient)
                }
            }
            return actions
        case .clientLiteral:
            inFlight[oldest].expects = .answer
            let clientWaits = awaitedLiteral?.clientWaits ?? true
            awaitedLiteral = nil
            // A "+" the client did not ask for is the proxy's.
            return clientWaits ? [.resumeClient] : [.consumeLine, .resumeClient]
        case .answer:
            return [.strayContinuation]
        }
    }
}
