import IMAPWire
import NIOCore
import Testing
@testable import SluiceProxy

/// The relay's invariants as vectors: events in, actions and the client
/// gate out. Each group is one invariant of `RelayStateMachine`.
@Suite("Relay state machine")
struct RelayStateMachineTests {
    private static let sync = LiteralHeader(size: 21)
    private static let nonSync = LiteralHeader(size: 21, form: .nonSynchronizing)

    /// One step of a vector.
    enum Event {
        case clientCommand(tag: String?, literal: LiteralHeader?)
        case upstream(FrameKind, tag: String?)
        case upstreamBye
        case held([String], tag: String)
    }

    /// Runs `events`, returning every action and whether client bytes flow after each step.
    private func run(_ events: [Event], max: Int = 1000) -> (actions: [[RelayStateMachine.Action]], gate: [Bool],
                                                             verdicts: [RelayStateMachine.ClientLineVerdict]) {
        var machine = RelayStateMachine(maxCommandsInFlight: max)
        var actions: [[RelayStateMachine.Action]] = []
        var gate: [Bool] = []
        var verdicts: [RelayStateMachine.ClientLineVerdict] = []
        for event in events {
            switch event {
            case .clientCommand(let tag, let literal):
                machine.clientFrameStarted(kind: .command, tag: tag)
                verdicts.append(machine.clientLineForwarded(literal: literal))
                actions.append([])
            case .upstream(let kind, let tag):
                actions.append(machine.upstreamFrameStarted(kind: kind, tag: tag, isBye: false))
            case .upstreamBye:
                actions.append(machine.upstreamFrameStarted(kind: .untaggedResponse, tag: "*", isBye: true))
            case .held(let parts, let tag):
                machine.holdParts(parts.map { ByteBuffer(string: $0) }, tag: tag)
                actions.append([])
            }
            gate.append(machine.takesClientBytes)
        }
        return (actions, gate, verdicts)
    }

    // MARK: Literal gating

    @Test("a synchronizing literal shuts the gate until the upstream's +")
    func gateOpensOnContinuation() {
        let result = run([.clientCommand(tag: "a", literal: Self.sync), .upstream(.continuationRequest, tag: nil)])
        #expect(result.gate == [false, true])
        #expect(result.actions[1] == [.resumeClient], "the + is relayed to the client, not consumed")
    }

    @Test("a tagged refusal of the announcing command abandons the literal: held bytes are commands")
    func refusalAbandonsLiteral() {
        let result = run([.clientCommand(tag: "a", literal: Self.sync), .upstream(.taggedResponse, tag: "a")])
        #expect(result.gate == [false, true])
        #expect(result.actions[1] == [.abandonClientLiteral, .resumeClient])
    }

    @Test("untagged lines and other tags leave the gate shut")
    func otherLinesKeepGateShut() {
        let result = run([
            .clientCommand(tag: "a", literal: nil), .clientCommand(tag: "b", literal: Self.sync),
            .upstream(.untaggedResponse, tag: "*"), .upstream(.taggedResponse, tag: "a"),
        ])
        #expect(result.gate == [true, false, false, false])
        #expect(result.actions[2] == [] && result.actions[3] == [])
    }

    @Test("a non-synchronizing literal does not wait")
    func literalPlusDoesNotWait() {
        #expect(run([.clientCommand(tag: "a", literal: Self.nonSync)]).gate == [true])
    }

    @Test("a literal needs a valid tag", arguments: [nil, "*", "+", "a{b", "a b", "(x"])
    func literalNeedsTag(tag: String?) {
        let result = run([.clientCommand(tag: tag, literal: Self.sync)])
        guard case .refuse = result.verdicts[0] else { Issue.record("forwarded with tag \(tag ?? "nil")"); return }
    }

    @Test("a literal without a valid tag is fine when it does not wait", arguments: [nil, "*"])
    func untaggedNonSynchronizing(tag: String?) {
        #expect(run([.clientCommand(tag: tag, literal: Self.nonSync)]).verdicts == [.forward])
    }

    @Test("a {n+} announced to the upstream as {n}: its + is the proxy's, its refusal drops the literal")
    func literalPlusMadeSynchronizing() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        machine.clientFrameStarted(kind: .command, tag: "a")
        #expect(machine.clientLineForwarded(literal: Self.nonSync, upstreamWaits: true) == .forward)
        #expect(!machine.takesClientBytes, "the client's bytes wait for the server's +")
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [.consumeLine, .resumeClient])
        #expect(machine.takesClientBytes)

        machine.clientFrameStarted(kind: .command, tag: "b")
        _ = machine.clientLineForwarded(literal: Self.nonSync, upstreamWaits: true)
        // a NOOP {17+}: the server answers without reading the literal; its bytes are dropped, never commands.
        #expect(machine.upstreamFrameStarted(kind: .taggedResponse, tag: "b", isBye: false) == [.dropClientLiteral, .resumeClient])
    }

    // MARK: IDLE

    @Test("IDLE's + never opens the gate of a literal announced behind it")
    func idleContinuation() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        machine.clientFrameStarted(kind: .command, tag: "i", isIdle: true)
        machine.clientFrameStarted(kind: .idleDone, tag: nil)
        machine.clientFrameStarted(kind: .command, tag: "b")
        _ = machine.clientLineForwarded(literal: Self.sync)
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [], "+ idling")
        #expect(!machine.takesClientBytes, "still waiting for b's own +")
        _ = machine.upstreamFrameStarted(kind: .taggedResponse, tag: "i", isBye: false)
        #expect(machine.upstreamFrameStarted(kind: .taggedResponse, tag: "b", isBye: false) == [.abandonClientLiteral, .resumeClient])
    }

    @Test("a + while an earlier command is unanswered is stray, whatever waits behind it")
    func strayContinuation() {
        // a LIST {11} x: Dovecot answers "+ OK" for the mid-line {11}, then BAD.
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        machine.clientFrameStarted(kind: .command, tag: "a")
        machine.clientFrameStarted(kind: .command, tag: "x")
        _ = machine.clientLineForwarded(literal: Self.nonSync, upstreamWaits: true)
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [.strayContinuation])
        #expect(!machine.takesClientBytes, "the literal is still held")
    }

    @Test("a + with nothing in flight is stray")
    func strayWhenIdle() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [.strayContinuation])
    }

    @Test("a reused tag: the answer closes the oldest command with it, IDLE's + stays IDLE's")
    func reusedTagWithIdle() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        machine.clientFrameStarted(kind: .command, tag: "a")                // a NOOP
        machine.clientFrameStarted(kind: .command, tag: "a", isIdle: true)  // a IDLE
        machine.clientFrameStarted(kind: .idleDone, tag: nil)               // DONE
        machine.clientFrameStarted(kind: .command, tag: "b")                // b NOOP {17+}
        _ = machine.clientLineForwarded(literal: Self.nonSync, upstreamWaits: true)
        _ = machine.upstreamFrameStarted(kind: .taggedResponse, tag: "a", isBye: false)  // a OK NOOP
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [], "+ idling")
        _ = machine.upstreamFrameStarted(kind: .taggedResponse, tag: "a", isBye: false)  // a OK IDLE
        #expect(machine.upstreamFrameStarted(kind: .taggedResponse, tag: "b", isBye: false) == [.dropClientLiteral, .resumeClient])
    }

    @Test("a refused IDLE expects no +")
    func idleRefused() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        machine.clientFrameStarted(kind: .command, tag: "i", isIdle: true)
        _ = machine.upstreamFrameStarted(kind: .taggedResponse, tag: "i", isBye: false)
        machine.clientFrameStarted(kind: .command, tag: "b")
        _ = machine.clientLineForwarded(literal: Self.sync)
        #expect(machine.upstreamFrameStarted(kind: .continuationRequest, tag: nil, isBye: false) == [.resumeClient])
    }

    @Test("commands with tags a server answers untagged do not count as in flight")
    func invalidTagsUncounted() {
        var machine = RelayStateMachine(maxCommandsInFlight: 2)
        for tag in ["a]", "*", "+", nil] as [String?] { machine.clientFrameStarted(kind: .command, tag: tag) }
        #expect(machine.commandsInFlight == 0)
        #expect(machine.takesClientBytes)
    }

    // MARK: The proxy's own continuations

    @Test("the proxy's parts are sent on each +, which the client never sees")
    func heldParts() {
        let result = run([
            .clientCommand(tag: "a", literal: nil), .held(["part1", "part2"], tag: "a"),
            .upstream(.continuationRequest, tag: nil), .upstream(.continuationRequest, tag: nil),
        ])
        #expect(result.gate == [true, false, false, true])
        #expect(result.actions[2] == [.sendToUpstream(ByteBuffer(string: "part1")), .consumeLine])
        #expect(result.actions[3] == [.sendToUpstream(ByteBuffer(string: "part2")), .consumeLine, .resumeClient])
    }

    @Test("held parts ending in the client's own literal: the last + goes to the client")
    func heldPartsThenClientLiteral() {
        let result = run([
            .clientCommand(tag: "a", literal: Self.sync), .held(["part1"], tag: "a"),
            .upstream(.continuationRequest, tag: nil), .upstream(.continuationRequest, tag: nil),
        ])
        #expect(result.gate == [false, false, false, true])
        #expect(result.actions[2] == [.sendToUpstream(ByteBuffer(string: "part1")), .consumeLine])
        #expect(result.actions[3] == [.resumeClient])
    }

    @Test("a refusal before the proxy's parts were sent drops them and the client's literal")
    func heldPartsRefused() {
        let result = run([
            .clientCommand(tag: "a", literal: Self.sync), .held(["part1"], tag: "a"), .upstream(.taggedResponse, tag: "a"),
        ])
        #expect(result.gate == [false, false, true])
        #expect(result.actions[2] == [.abandonClientLiteral, .resumeClient])
    }

    // MARK: Bounded in-flight commands

    @Test("at the in-flight limit the gate shuts until an answer comes")
    func inFlightLimit() {
        let result = run([
            .clientCommand(tag: "a", literal: nil), .clientCommand(tag: "b", literal: nil),
            .upstream(.taggedResponse, tag: "a"), .upstream(.taggedResponse, tag: "b"),
        ], max: 2)
        #expect(result.gate == [true, false, true, true])
        #expect(result.actions[2] == [.resumeClient])
        #expect(result.actions[3] == [])
    }

    @Test("an answer given by the proxy counts as an answer")
    func proxyAnswers() {
        var machine = RelayStateMachine(maxCommandsInFlight: 1)
        machine.clientFrameStarted(kind: .command, tag: "a")
        #expect(!machine.takesClientBytes)
        machine.commandAnsweredByProxy()
        #expect(machine.takesClientBytes)
        #expect(machine.commandsInFlight == 0)
    }

    // MARK: Endings

    @Test("an untagged BYE is remembered (the upstream's close then needs no BYE from the proxy)")
    func byeRemembered() {
        var machine = RelayStateMachine(maxCommandsInFlight: 10)
        #expect(!machine.upstreamSaidBye)
        _ = machine.upstreamFrameStarted(kind: .untaggedResponse, tag: "*", isBye: true)
        #expect(machine.upstreamSaidBye)
    }
}

@Suite("Tags")
struct IMAPTagTests {
    @Test("valid and invalid tags", arguments: [
        ("a1", true), ("A.001", true), ("x]", false), ("*", false), ("+", false), ("a+", false), ("", false),
        ("a b", false), ("a{", false), ("a%", false), ("a\"", false), ("caf\u{E9}", false),
    ])
    func tags(tag: String, valid: Bool) {
        #expect(IMAPTag.isValid(tag) == valid)
    }
}
