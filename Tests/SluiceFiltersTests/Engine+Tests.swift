import IMAPWire
import Logging
import NIOCore
import Testing
@testable import SluiceFilters

/// Frames one command or response from text.
private func frame(_ text: String, peer: IMAPPeer) throws -> Frame {
    var decoder = IMAPFrameDecoder(peer: peer)
    var buffer = ByteBuffer(string: text)
    return try #require(try decoder.next(&buffer))
}

private func makeEngine(_ filters: [any Filter], user: String = "alice") throws -> FilterEngine {
    let set = FilterSet(filters.map { FilterSet.Entry(filter: $0) })
    return try #require(set.engine(user: user, clientAddress: "127.0.0.1:1", upstreamCapabilities: [], logger: Logger(label: "test")))
}

private func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

/// Records the order filters see things in (a test double for the chain's
/// order, not for the thing under test).
private final class Trace: @unchecked Sendable {
    var events: [String] = []
}

private struct Recorder: Filter {
    let name: String
    let trace: Trace
    var commands: CommandSelection { .all }
    var responses: ResponseSelection { ResponseSelection(untagged: ["LIST"], taggedFor: .all) }

    func handle(command: ClientCommand, context: FilterContext, next: CommandNext) -> CommandOutcome {
        trace.events.append("\(name) command \(command.name)")
        return next(command, context)
    }

    func handle(response: ServerResponse, context: FilterContext, next: ResponseNext) -> ResponseOutcome {
        trace.events.append("\(name) response")
        return next(response, context)
    }
}

@Suite("Filter engine")
struct FilterEngineTests {
    @Test("commands pass filters in order, responses in reverse (an onion)")
    func order() throws {
        let trace = Trace()
        let engine = try makeEngine([Recorder(name: "first", trace: trace), Recorder(name: "second", trace: trace)])
        _ = engine.process(command: try frame("a LIST \"\" *\r\n", peer: .client), streamedLiteral: nil)
        _ = engine.process(response: try frame("* LIST () \".\" INBOX\r\n", peer: .server))
        #expect(trace.events == ["first command LIST", "second command LIST", "second response", "first response"])
    }

    @Test("a rejection short-circuits: later filters never see the command, and the reply is tagged")
    func shortCircuit() throws {
        let trace = Trace()
        let engine = try makeEngine([DenyCommandsFilter(names: ["DELETE"]), Recorder(name: "after", trace: trace)])
        let decision = engine.process(command: try frame("x1 DELETE Trash\r\n", peer: .client), streamedLiteral: nil)
        guard case .respond(let bytes) = decision else { Issue.record("not refused: \(decision)"); return }
        #expect(text(bytes) == "x1 NO [NOPERM] Not allowed here.\r\n")
        #expect(trace.events.isEmpty)
        #expect(engine.context.inFlight.isEmpty, "a refused command is not in flight")
    }

    @Test("the in-flight queue follows pipelined commands; tagged responses carry their command")
    func inFlight() throws {
        let trace = Trace()
        let engine = try makeEngine([Recorder(name: "r", trace: trace)])
        _ = engine.process(command: try frame("a SELECT Sent\r\n", peer: .client), streamedLiteral: nil)
        engine.commandPassed(tag: "b", name: "UID FETCH")
        _ = engine.process(command: try frame("c NOOP\r\n", peer: .client), streamedLiteral: nil)
        #expect(engine.context.inFlight.map(\.tag) == ["a", "b", "c"])
        _ = engine.process(response: try frame("a OK [READ-WRITE] done\r\n", peer: .server))
        #expect(engine.context.state == .selected(mailbox: MailboxName(bytes: Array("Sent".utf8)), readOnly: false))
        engine.taggedResponsePassed(tag: "c")
        #expect(engine.context.inFlight.map(\.tag) == ["b"])
        #expect(engine.context.inFlight(named: ["FETCH"]).map(\.tag) == ["b"])
    }

    @Test("deny with mailboxes: only commands naming (or acting in) a matching mailbox are refused")
    func denyMailboxes() throws {
        let engine = try makeEngine([DenyCommandsFilter(names: ["DELETE", "EXPUNGE"], mailboxes: [Glob("Archive*")],
                                                        reply: TaggedReply(parsing: "NO [NOPERM] Archives stay")!)])
        func refused(_ line: String) throws -> Bool {
            if case .respond = engine.process(command: try frame(line, peer: .client), streamedLiteral: nil) { return true }
            return false
        }
        #expect(try refused("a DELETE Archive.2019\r\n"))
        #expect(try !refused("b DELETE Trash.old\r\n"))
        #expect(try !refused("c EXPUNGE\r\n"), "nothing selected yet")
        _ = engine.process(command: try frame("d SELECT Archive\r\n", peer: .client), streamedLiteral: nil)
        _ = engine.process(response: try frame("d OK [READ-WRITE] done\r\n", peer: .server))
        #expect(try refused("e UID EXPUNGE 1:5\r\n"), "EXPUNGE acts in the selected Archive")
    }

    @Test("read-only: SELECT becomes EXAMINE, mutating commands and UID forms are refused")
    func readOnly() throws {
        let engine = try makeEngine([ReadOnlyFilter()])
        guard case .forwardRewritten(let command) = engine.process(
            command: try frame("a SELECT INBOX (CONDSTORE)\r\n", peer: .client), streamedLiteral: nil)
        else { Issue.record("SELECT not rewritten"); return }
        #expect(command.name == "EXAMINE" && command.tag == "a" && command.arguments.count == 2)
        for line in ["b UID EXPUNGE 1:3", "c STORE 1 +FLAGS (\\Seen)", "d UID MOVE 1 Trash", "e RENAME a b"] {
            guard case .respond(let bytes) = engine.process(command: try frame(line + "\r\n", peer: .client), streamedLiteral: nil)
            else { Issue.record("\(line) not refused"); continue }
            #expect(text(bytes).hasSuffix("NO [NOPERM] Read-only access.\r\n"))
        }
        guard case .forwardOriginal = engine.process(command: try frame("f FETCH 1 FLAGS\r\n", peer: .client), streamedLiteral: nil)
        else { Issue.record("FETCH touched"); return }
    }

    @Test("rename: commands to server names, responses to client names, shadowed names dropped")
    func rename() throws {
        let renaming = try MailboxRenaming([("Sent Items", "Sent"), ("Old/*", "Archive/*"), ("Ébauches", "Entwürfe")])
        let engine = try makeEngine([RenameMailboxesFilter(renaming: renaming)])
        func forwarded(_ line: String) throws -> String? {
            switch engine.process(command: try frame(line, peer: .client), streamedLiteral: nil) {
            case .forwardRewritten(let command):
                return String(buffer: IMAPEncoder.encode(command, options: EncodingOptions(receiver: .server)).bytes()!)
            case .forwardOriginal: return nil
            case .respond(let bytes): return "respond " + text(bytes)
            }
        }
        #expect(try forwarded("a SELECT \"Sent Items\"\r\n") == "a SELECT \"Sent\"\r\n")
        #expect(try forwarded("b RENAME \"Old/x\" Old\r\n") == "b RENAME \"Archive/x\" \"Archive\"\r\n")
        #expect(try forwarded("c LIST \"\" \"Old/%\"\r\n") == "c LIST \"\" \"Archive/%\"\r\n")
        #expect(try forwarded("d UID MOVE 1:* &AMk-bauches\r\n") == "d UID MOVE 1:* \"Entw&APw-rfe\"\r\n")
        #expect(try forwarded("e SELECT INBOX\r\n") == nil)
        func response(_ line: String) throws -> String? {
            switch engine.process(response: try frame(line, peer: .server)) {
            case .forwardRewritten(let bytes): return text(bytes)
            case .forwardOriginal: return line
            case .drop: return nil
            case .endSession(let reason): return "end: \(reason)"
            }
        }
        #expect(try response("* LIST (\\HasNoChildren) \"/\" Sent\r\n") == "* LIST (\\HasNoChildren) \"/\" \"Sent Items\"\r\n")
        #expect(try response("* LIST () \"/\" \"Archive/2019\"\r\n") == "* LIST () \"/\" \"Old/2019\"\r\n")
        #expect(try response("* STATUS Entw&APw-rfe (MESSAGES 2)\r\n") == "* STATUS \"&AMk-bauches\" (MESSAGES 2)\r\n")
        #expect(try response("* LIST () \"/\" \"Sent Items\"\r\n") == nil, "a real 'Sent Items' is shadowed by the rename")
        #expect(try response("* LIST () \"/\" INBOX\r\n") == "* LIST () \"/\" INBOX\r\n")
    }

    @Test("rename with UTF8=ACCEPT enabled uses UTF-8 names on the wire")
    func renameUTF8() throws {
        let engine = try makeEngine([RenameMailboxesFilter(renaming: try MailboxRenaming([("Ébauches", "Entwürfe")]))])
        _ = engine.process(command: try frame("a ENABLE UTF8=ACCEPT\r\n", peer: .client), streamedLiteral: nil)
        _ = engine.process(response: try frame("* ENABLED UTF8=ACCEPT\r\n", peer: .server))
        #expect(engine.context.utf8Enabled)
        guard case .forwardRewritten(let command) = engine.process(
            command: try frame("b SELECT \"Ébauches\"\r\n", peer: .client), streamedLiteral: nil)
        else { Issue.record("not renamed"); return }
        #expect(command.arguments.first?.stringBytes == Array("Entwürfe".utf8))
    }

    @Test("hide: LIST held to its reply, hidden names dropped, \\HasChildren corrected, commands answered NONEXISTENT")
    func hide() throws {
        let engine = try makeEngine([HideMailboxesFilter(patterns: [Glob("Calendar"), Glob("Journal*")])])
        _ = engine.process(command: try frame("a LIST \"\" *\r\n", peer: .client), streamedLiteral: nil)
        for line in ["* LIST (\\HasChildren) \".\" Work\r\n", "* LIST (\\HasNoChildren) \".\" Work.Journal\r\n",
                     "* LIST (\\HasChildren) \".\" Calendars\r\n", "* LIST () \".\" Calendars.x\r\n",
                     "* LIST () \".\" Calendar\r\n"] {
            guard case .drop = engine.process(response: try frame(line, peer: .server)) else {
                Issue.record("\(line) not held"); return
            }
        }
        guard case .forwardRewritten(let bytes) = engine.process(response: try frame("a OK done\r\n", peer: .server)) else {
            Issue.record("nothing released"); return
        }
        // "Work.Journal" matches no pattern (Journal* is anchored at the start); Calendar is hidden.
        #expect(text(bytes) == "* LIST (\\HasChildren) \".\" Work\r\n* LIST (\\HasNoChildren) \".\" Work.Journal\r\n"
                + "* LIST (\\HasChildren) \".\" Calendars\r\n* LIST () \".\" Calendars.x\r\na OK done\r\n")

        let second = try makeEngine([HideMailboxesFilter(patterns: [Glob("Work.*")])])
        _ = second.process(command: try frame("b LIST \"\" *\r\n", peer: .client), streamedLiteral: nil)
        _ = second.process(response: try frame("* LIST (\\HasChildren) \".\" Work\r\n", peer: .server))
        _ = second.process(response: try frame("* LIST (\\HasNoChildren) \".\" Work.Secret\r\n", peer: .server))
        guard case .forwardRewritten(let released) = second.process(response: try frame("b OK done\r\n", peer: .server)) else {
            Issue.record("nothing released"); return
        }
        #expect(text(released) == "* LIST (\\HasNoChildren) \".\" Work\r\nb OK done\r\n")

        guard case .respond(let refusal) = engine.process(command: try frame("c STATUS Calendar (MESSAGES)\r\n", peer: .client),
                                                           streamedLiteral: nil)
        else { Issue.record("not refused"); return }
        #expect(text(refusal) == "c NO [NONEXISTENT] Mailbox does not exist.\r\n")
    }

    @Test("capabilities: removed and added in lists and codes, removed commands BAD, pre-auth only unscoped rules")
    func capabilities() throws {
        let filter = CapabilityFilter(remove: ["MOVE", "THREAD"], add: ["XSLUICE"])
        let engine = try makeEngine([filter])
        let data = engine.process(response: try frame("* CAPABILITY IMAP4rev1 MOVE THREAD=REFS IDLE\r\n", peer: .server))
        guard case .forwardRewritten(let bytes) = data else { Issue.record("not rewritten"); return }
        #expect(text(bytes) == "* CAPABILITY IMAP4rev1 IDLE XSLUICE\r\n")
        guard case .respond(let refusal) = engine.process(command: try frame("a UID MOVE 1 x\r\n", peer: .client), streamedLiteral: nil)
        else { Issue.record("MOVE not refused"); return }
        #expect(text(refusal) == "a BAD UID MOVE is not available.\r\n")
        let scoped = FilterSet([.init(users: try UserMatcher(["bob"]), filter: filter)])
        #expect(scoped.preAuthCapabilities(["IMAP4rev1", "MOVE"]) == ["IMAP4rev1", "MOVE"])
        #expect(FilterSet([.init(filter: filter)]).preAuthCapabilities(["IMAP4rev1", "MOVE"]) == ["IMAP4rev1", "XSLUICE"])
    }

    @Test("users: globs and /regex/; no engine for a user no rule applies to")
    func users() throws {
        let matcher = try UserMatcher(["*@example.org", "bob", "/^archive[0-9]+$/"])
        #expect(matcher.matches("Alice@Example.org") && matcher.matches("bob") && matcher.matches("archive42"))
        #expect(!matcher.matches("bobby") && !matcher.matches("archive") && !matcher.matches("alice@example.org.evil"))
        let set = FilterSet([.init(users: matcher, filter: ReadOnlyFilter())])
        #expect(set.engine(user: "carol", clientAddress: nil, upstreamCapabilities: [], logger: Logger(label: "t")) == nil)
    }
}

@Suite("Rule building blocks")
struct RuleBlockTests {
    @Test("globs", arguments: [
        ("Journal*", "Journal", true), ("Journal*", "Journal.2020", true), ("Journal*", "MyJournal", false),
        ("*.bak", "a.b.bak", true), ("a?c", "abc", true), ("a?c", "ac", false), ("*a*b*", "xaybz", true),
    ])
    func globs(pattern: String, text: String, matches: Bool) {
        #expect(Glob(pattern).matches(text) == matches)
    }

    @Test("tagged replies parse from configuration text")
    func replies() {
        #expect(TaggedReply(parsing: "NO [NOPERM] Not allowed here")?.description == "NO [NOPERM] Not allowed here")
        #expect(TaggedReply(parsing: "bad nope")?.description == "BAD nope")
        #expect(TaggedReply(parsing: "MAYBE later") == nil)
        #expect(TaggedReply(parsing: "NO [UNCLOSED text") == nil)
    }

    @Test("renaming rules that cannot work are refused")
    func badRenames() {
        #expect(throws: RuleError.self) { try MailboxRenaming([("A*", "B")]) }
        #expect(throws: RuleError.self) { try MailboxRenaming([("A", "B"), ("A", "C")]) }
        #expect(throws: RuleError.self) { try MailboxRenaming([("A", "C"), ("B", "C")]) }
        #expect(throws: RuleError.self) { try MailboxRenaming([("A*B", "C")]) }
    }

    @Test("a namespace prefix added and removed; INBOX keeps its name")
    func prefix() throws {
        let renaming = try MailboxRenaming([("*", "INBOX.*")])
        #expect(renaming.toServer("Sent") == "INBOX.Sent")
        #expect(renaming.toServer("INBOX") == "INBOX")
        #expect(renaming.toClient("INBOX.Sent") == "Sent")
        #expect(renaming.toClient("INBOX") == "INBOX")
    }
}
