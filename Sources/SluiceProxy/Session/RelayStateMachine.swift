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
/// - **IDLE's `+`** is IDLE's: it never opens the gate of a literal
///   announced behind a pipelined IDLE.
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

    /// Tagged client commands relayed and not yet answered.
    private(set) var commandsInFlight = 0
    /// The client literal that waits for the upstream's `+`.
    private(set) var awaitedLiteral: AwaitedLiteral?
    /// IDLE commands sent whose `+` has not come yet.
    private(set) var idleTags: [String] = []
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

    /// Whether the relay may consume more client bytes now.
    var takesClientBytes: Bool {
        heldParts.isEmpty && awaitedLiteral == nil && commandsInFlight < maxCommandsInFlight
    }

    // MARK: - Client side

    /// A client frame starts (`tag` is `nil` for lines that are not
    /// commands). Only commands with a valid tag count as in flight: a
    /// server answers the others untagged, which would never bring the
    /// count down.
    mutating func clientFrameStarted(kind: FrameKind, tag: String?, isIdle: Bool = false) {
        currentClientTag = kind == .command ? tag : nil
        guard kind == .command, let tag, IMAPTag.isValid(tag) else { return }
        commandsInFlight += 1
        if isIdle { idleTags.append(tag) }
    }

    /// A client line goes upstream; `literal` is the literal it announces.
    /// `upstreamWaits`: the session announced a client `{n+}` to the
    /// upstream as `{n}`.
    mutating func clientLineForwarded(literal: LiteralHeader?, upstreamWaits: Bool = false) -> ClientLineVerdict {
        guard let literal, literal.isSynchronizing || upstreamWaits else { return .forward }
        guard let tag = currentClientTag, IMAPTag.isValid(tag) else {
            return .refuse(hint: "A command announcing a literal needs a valid tag")
        }
        awaitedLiteral = AwaitedLiteral(tag: tag, clientWaits: literal.isSynchronizing)
        return .forward
    }

    /// The proxy answered the current command itself (a rule refused it).
    mutating func commandAnsweredByProxy() {
        commandsInFlight = max(0, commandsInFlight - 1)
    }

    /// A rewritten command went upstream up to its first synchronizing
    /// literal; `parts` follow, one per `+`.
    mutating func holdParts(_ parts: [ByteBuffer], tag: String) {
        guard !parts.isEmpty else { return }
        heldParts = parts
        heldPartsTag = tag
    }

    // MARK: - Upstream side

    /// An upstream frame starts. Returns what the session must do before
    /// (or instead of) relaying the line.
    mutating func upstreamFrameStarted(kind: FrameKind, tag: String?, isBye: Bool) -> [Action] {
        if kind == .untaggedResponse, isBye { upstreamSaidBye = true }
        if kind == .taggedResponse {
            commandsInFlight = max(0, commandsInFlight - 1)
            if let tag, let index = idleTags.firstIndex(of: tag) { idleTags.remove(at: index) }
        }
        // The server answers in order: an IDLE sent before any literal that
        // waits gets its "+" first, and it is only IDLE's.
        if kind == .continuationRequest, !idleTags.isEmpty {
            idleTags.removeFirst()
            return []
        }
        var actions: [Action] = []
        if !heldParts.isEmpty {
            if kind == .continuationRequest {
                // The "+" is for the proxy's own part, not the client.
                actions.append(.sendToUpstream(heldParts.removeFirst()))
                actions.append(.consumeLine)
                if heldParts.isEmpty {
                    heldPartsTag = nil
                    if awaitedLiteral == nil { actions.append(.resumeClient) }
                }
                return actions
            }
            if kind == .taggedResponse, tag == heldPartsTag {
                heldParts = []  // refused before the rest was sent
                heldPartsTag = nil
                if let awaited = awaitedLiteral, awaited.tag == tag {
                    awaitedLiteral = nil
                    actions.append(awaited.clientWaits ? .abandonClientLiteral : .dropClientLiteral)
                }
                actions.append(.resumeClient)
                return actions
            }
        }
        if let awaited = awaitedLiteral {
            if kind == .continuationRequest {
                awaitedLiteral = nil
                // A "+" the client did not ask for is the proxy's.
                if !awaited.clientWaits { actions.append(.consumeLine) }
                actions.append(.resumeClient)
            } else if kind == .taggedResponse, tag == awaited.tag {
                awaitedLiteral = nil
                actions.append(awaited.clientWaits ? .abandonClientLiteral : .dropClientLiteral)
                actions.append(.resumeClient)
            }
        } else if kind == .taggedResponse, commandsInFlight == maxCommandsInFlight - 1 {
            actions.append(.resumeClient)  // back under the in-flight limit
        }
        return actions
    }
}
