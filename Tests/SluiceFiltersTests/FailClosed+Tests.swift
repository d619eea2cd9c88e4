import IMAPWire
import Logging
import NIOCore
import Testing
@testable import SluiceFilters

/// Rules under attack (reviews F1, F2, S5, S6): what a rule cannot read is
/// refused, pipelined commands are judged in the state they will run in,
/// and mailbox names are compared the way the server compares them.
@Suite("Filter engine: fail closed")
struct FailClosedTests {
    private func frame(_ text: String, peer: IMAPPeer) throws -> Frame {
        var decoder = IMAPFrameDecoder(peer: peer)
        var buffer = ByteBuffer(string: text)
        return try #require(try decoder.next(&buffer))
    }

    private func engine(_ filters: [any Filter]) throws -> FilterEngine {
        let set = FilterSet(filters.map { FilterSet.Entry(filter: $0) })
        return try #require(set.engine(user: "u", clientAddress: nil, upstreamCapabilities: [], logger: Logger(label: "test")))
    }

    /// The proxy's own answer to `line`, or `nil` when it is forwarded.
    private func answer(_ engine: FilterEngine, _ line: String) throws -> String? {
        switch engine.process(command: try frame(line, peer: .client), streamedLiteral: nil) {
        case .respond(let bytes): return String(buffer: bytes)
        case .forwardOriginal, .forwardRewritten: return nil
        }
    }

    static let deep = String(repeating: "(", count: 40) + "ALL" + String(repeating: ")", count: 40)

    @Test("a selected command that does not parse is answered BAD, never forwarded", arguments: [
        ("a DELETE Secret x[\r\n", "a BAD Unterminated [."),
        ("a SELECT INBOX x[\r\n", "a BAD Unterminated [."),
        ("a STORE 1 +FLAGS.SILENT (\\Deleted) x[\r\n", "a BAD Unterminated [."),
        ("a EXPUNGE x[\r\n", "a BAD Unterminated [."),
        ("a SEARCH \(deep)\r\n", "a BAD Lists nested deeper than 32 levels."),
        ("a DELETE \"Secret\r\n", "a BAD Unterminated quoted string."),
        ("a DELETE Secret )\r\n", "a BAD Unbalanced parenthesis."),
    ])
    func unparseableRefused(line: String, expected: String) throws {
        let engine = try engine([DenyCommandsFilter(names: ["DELETE", "SEARCH"], mailboxes: [Glob("Nothing")]),
                                 ReadOnlyFilter(), HideMailboxesFilter(patterns: [Glob("Secret*")])])
        #expect(try answer(engine, line) == expected + "\r\n")
        #expect(engine.context.inFlight.isEmpty)
    }

    @Test("an unparseable LIST line a hiding rule selected is dropped; one no rule selected passes")
    func unparseableListDropped() throws {
        let hiding = try engine([HideMailboxesFilter(patterns: [Glob("Secret*")])])
        let broken = try frame("* LIST (\\HasNoChildren \".\" \"Secret\r\n", peer: .server)
        guard case .drop = hiding.process(response: broken) else { Issue.record("forwarded"); return }

        let other = try engine([DenyCommandsFilter(names: ["DELETE"])])
        guard case .forwardOriginal = other.process(response: broken) else { Issue.record("not forwarded"); return }
    }

    @Test("a hidden mailbox whose name holds an unclosed [ stays hidden in LIST")
    func bracketNameHidden() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret*")])])
        _ = try answer(engine, "l LIST \"\" *\r\n")
        _ = engine.process(response: try frame("* LIST (\\HasNoChildren) \".\" Secret[x\r\n", peer: .server))
        _ = engine.process(response: try frame("* LIST (\\HasNoChildren) \".\" INBOX\r\n", peer: .server))
        guard case .forwardRewritten(let bytes) = engine.process(response: try frame("l OK done\r\n", peer: .server)) else {
            Issue.record("LIST not released"); return
        }
        #expect(String(buffer: bytes) == "* LIST (\\HasNoChildren) \".\" INBOX\r\nl OK done\r\n")
    }

    @Test("commands behind a pipelined SELECT are judged in the mailbox it selects")
    func pipelinedSelect() throws {
        let engine = try engine([DenyCommandsFilter(names: ["FETCH", "EXPUNGE"], mailboxes: [Glob("Secret*")])])
        #expect(try answer(engine, "a SELECT Public\r\n") == nil)
        #expect(try answer(engine, "b SELECT Secret\r\n") == nil)
        #expect(try answer(engine, "c FETCH 1 BODY[]\r\n") == "c NO [NOPERM] Not allowed here.\r\n")
        // The answers arrive; the state stays Secret (the last SELECT).
        _ = engine.process(response: try frame("a OK [READ-WRITE] done\r\n", peer: .server))
        #expect(try answer(engine, "d EXPUNGE\r\n") == "d NO [NOPERM] Not allowed here.\r\n")
        _ = engine.process(response: try frame("b OK [READ-WRITE] done\r\n", peer: .server))
        #expect(engine.context.confirmedState == engine.context.state)
        // A pipelined SELECT away from Secret: the command behind it runs in Public.
        #expect(try answer(engine, "e SELECT Public\r\n") == nil)
        #expect(try answer(engine, "f EXPUNGE\r\n") == nil)
        // CLOSE (not selected by any rule) counts once it succeeded: until then the
        // mailbox it closes is the worst case (a failing CLOSE leaves it selected).
        engine.commandPassed(tag: "g", name: "CLOSE")
        #expect(try answer(engine, "h EXPUNGE\r\n") == nil, "still judged in Public")
        _ = engine.process(response: try frame("e OK [READ-WRITE] done\r\n", peer: .server))
        _ = engine.process(response: try frame("g OK closed\r\n", peer: .server))
        #expect(engine.context.state == .authenticated)

        // UID CLOSE is no command (the server answers BAD, Secret stays selected).
        #expect(try answer(engine, "i SELECT Secret\r\n") == nil)
        engine.commandPassed(tag: "j", name: "UID CLOSE")
        #expect(try answer(engine, "k FETCH 1 BODY[]\r\n") == "k NO [NOPERM] Not allowed here.\r\n")
        _ = engine.process(response: try frame("i OK [READ-WRITE] done\r\n", peer: .server))
        _ = engine.process(response: try frame("j BAD Unknown command\r\n", peer: .server))
        #expect(try answer(engine, "l FETCH 1 BODY[]\r\n") == "l NO [NOPERM] Not allowed here.\r\n")
    }

    @Test("INBOX's hierarchy matches whatever its case", arguments: ["inbox.Private", "Inbox.Private", "INBOX.Private"])
    func inboxCase(name: String) throws {
        let hide = try engine([HideMailboxesFilter(patterns: [Glob("INBOX.Private")])])
        #expect(try answer(hide, "a SELECT \(name)\r\n") == "a NO [NONEXISTENT] Mailbox does not exist.\r\n")
        let deny = try engine([DenyCommandsFilter(names: ["SELECT"], mailboxes: [Glob("INBOX.Private*")])])
        #expect(try answer(deny, "a SELECT \(name)\r\n") == "a NO [NOPERM] Not allowed here.\r\n")
        #expect(try answer(deny, "a SELECT INBOXPrivate\r\n") == nil)
    }

    @Test("mailboxes inside IMAP URLs are subject to hide and deny; unreadable URLs are refused", arguments: [
        ("a APPEND Sent CATENATE (URL \"/INBOX.Private/;UID=1\")\r\n", "a NO [NONEXISTENT] Mailbox does not exist."),
        ("a APPEND Sent CATENATE (TEXT {1+}\r\nx URL \"/inbox.Private;UIDVALIDITY=3/;UID=1\")\r\n", "a NO [NONEXISTENT] Mailbox does not exist."),
        ("a APPEND Sent CATENATE (URL \"imap://u@host/INBOX%2EPrivate/;UID=1\")\r\n", "a NO [NONEXISTENT] Mailbox does not exist."),
        ("a URLFETCH \"imap://u@host/INBOX.Private/;UID=1;URLAUTH=user+u:internal:0\"\r\n", "a NO [NONEXISTENT] Mailbox does not exist."),
        ("a GENURLAUTH \"imap://u@host/INBOX.Private/;UID=1;URLAUTH=user+u\" INTERNAL\r\n", "a NO [NONEXISTENT] Mailbox does not exist."),
        ("a APPEND Sent CATENATE (URL \"INBOX.Private\")\r\n", "a BAD Mailbox name could not be read."),
        ("a APPEND Sent CATENATE (URL \"/%ZZ/;UID=1\")\r\n", "a BAD Mailbox name could not be read."),
        ("a APPEND Sent CATENATE URL\r\n", "a BAD Mailbox name could not be read."),
    ])
    func urlMailboxes(line: String, expected: String) throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("INBOX.Private")])])
        #expect(try answer(engine, line) == expected + "\r\n")
    }

    @Test("a CATENATE from a visible mailbox passes")
    func visibleURL() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("INBOX.Private")])])
        #expect(try answer(engine, "a APPEND Sent CATENATE (URL \"/INBOX/;UID=1\")\r\n") == nil)
    }

    @Test("deny with mailboxes: COPY reads the selected mailbox; a name that does not decode is refused")
    func denyCopyAndUndecodable() throws {
        let engine = try engine([DenyCommandsFilter(names: ["COPY", "SELECT"], mailboxes: [Glob("Secret*")])])
        engine.commandPassed(tag: "x", name: "NOOP")
        _ = engine.process(command: try frame("s EXAMINE Secret\r\n", peer: .client), streamedLiteral: nil)
        #expect(try answer(engine, "c COPY 1 Public\r\n") == "c NO [NOPERM] Not allowed here.\r\n")
        #expect(try answer(engine, "d SELECT &Jjo-&\r\n") == "d NO [NOPERM] Not allowed here.\r\n")
    }

    @Test("a SELECT whose name the proxy could not read selects a mailbox every scoped rule refuses")
    func unreadableSelect() throws {
        let engine = try engine([DenyCommandsFilter(names: ["FETCH"], mailboxes: [Glob("Secret*")])])
        // As the relay holds it: a literal whose bytes stream is in the frame by size only.
        var decoder = IMAPFrameDecoder(peer: .client, literalCaptureLimit: 0)
        var buffer = ByteBuffer(string: "b SELECT {6}\r\n")
        #expect(try decoder.next(&buffer) == nil)
        let firstPart = try #require(decoder.frameInProgress)
        guard case .forwardOriginal = engine.process(command: firstPart, streamedLiteral: firstPart.literals.last?.header)
        else { Issue.record("SELECT refused"); return }
        #expect(try answer(engine, "g FETCH 1 BODY[]\r\n") == "g NO [NOPERM] Not allowed here.\r\n")
        // Still so once the server confirmed it.
        _ = engine.process(response: try frame("b OK [READ-WRITE] done\r\n", peer: .server))
        #expect(try answer(engine, "h FETCH 1 BODY[]\r\n") == "h NO [NOPERM] Not allowed here.\r\n")
        // A SELECT the server answers BAD was not run: the unreadable mailbox stays the worst case.
        #expect(try answer(engine, "i SELECT ()\r\n") == nil)
        _ = engine.process(response: try frame("i BAD Invalid arguments\r\n", peer: .server))
        #expect(try answer(engine, "j FETCH 1 BODY[]\r\n") == "j NO [NOPERM] Not allowed here.\r\n")
    }

    @Test("REPLACE names its target mailbox and may CATENATE: both are checked")
    func replace() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret*")])])
        #expect(try answer(engine, "a REPLACE 1 Secret {5+}\r\nhello\r\n") == "a NO [NONEXISTENT] Mailbox does not exist.\r\n")
        #expect(try answer(engine, "b REPLACE 1 Public CATENATE (URL \"/Secret/;UID=1\")\r\n")
            == "b NO [NONEXISTENT] Mailbox does not exist.\r\n")
        #expect(try answer(engine, "c REPLACE 1 Public {5+}\r\nhello\r\n") == nil)
    }

    @Test("RENAME of a parent is refused when a hidden or protected name lies under it")
    func renameParent() throws {
        let hide = try engine([HideMailboxesFilter(patterns: [Glob("Archive.2019")])])
        #expect(try answer(hide, "a RENAME Archive Renamed\r\n") == "a NO [CANNOT] This mailbox cannot be renamed.\r\n")
        #expect(try answer(hide, "b RENAME Arch Renamed\r\n") == nil)
        #expect(try answer(hide, "c RENAME Archive.2018 Renamed\r\n") == nil)
        let deny = try engine([DenyCommandsFilter(names: ["RENAME"], mailboxes: [Glob("Archive.2019")])])
        #expect(try answer(deny, "d RENAME Archive Y\r\n") == "d NO [NOPERM] Not allowed here.\r\n")
        #expect(try answer(deny, "e RENAME Other Y\r\n") == nil)
    }

    @Test("globs that may match names under a prefix", arguments: [
        ("Archive.2019", "Archive.", true), ("Secret*", "Sec.", false), ("*Private", "Foo.", true),
        ("Arch?ve.*", "Archive.", true), ("Archive", "Archive.", false),
    ])
    func mayMatchUnder(pattern: String, prefix: String, expected: Bool) {
        #expect(Glob(pattern).mayMatchNames(startingWith: prefix) == expected)
    }

    @Test("deny [FETCH] also refuses reading through IMAP URLs and NOTIFY with fetch attributes")
    func readsThroughURLsAndNotify() throws {
        let scoped = try engine([DenyCommandsFilter(names: ["FETCH", "COPY", "MOVE"], mailboxes: [Glob("Secret*")])])
        #expect(try answer(scoped, "b APPEND Doomed CATENATE (URL \"/Secret/;UID=3\")\r\n") == "b NO [NOPERM] Not allowed here.\r\n")
        #expect(try answer(scoped, "c APPEND Doomed CATENATE (URL \"/Public/;UID=3\")\r\n") == nil)
        #expect(try answer(scoped, "d APPEND Doomed {5+}\r\nhello\r\n") == nil, "APPEND itself is not denied")
        #expect(try answer(scoped, "e NOTIFY SET (selected (MessageNew (UID BODY.PEEK[]) MessageExpunge))\r\n")
            == "e NO [NOPERM] Not allowed here.\r\n")
        #expect(try answer(scoped, "f NOTIFY SET (selected (MessageNew MessageExpunge))\r\n") == nil)
    }

    @Test("hide: a LIST line no LIST asked for (NOTIFY) is filtered at once, not held")
    func unsolicitedList() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret*")])])
        guard case .drop = engine.process(response: try frame("* LIST () \".\" Secret2\r\n", peer: .server)) else {
            Issue.record("a hidden name passed"); return
        }
        guard case .forwardOriginal = engine.process(response: try frame("* LIST () \".\" NewBox\r\n", peer: .server)) else {
            Issue.record("held or dropped"); return
        }
    }

    @Test("hide: XLIST lines are filtered like LIST; held lines are released past the byte budget")
    func xlistAndHeldBudget() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret*")])])
        #expect(try answer(engine, "x XLIST \"\" *\r\n") == nil)
        _ = engine.process(response: try frame("* XLIST () \".\" Secret\r\n", peer: .server))
        _ = engine.process(response: try frame("* XLIST () \".\" Public\r\n", peer: .server))
        guard case .forwardRewritten(let bytes) = engine.process(response: try frame("x OK done\r\n", peer: .server)) else {
            Issue.record("XLIST not released at its reply"); return
        }
        #expect(String(buffer: bytes) == "* XLIST () \".\" Public\r\nx OK done\r\n")

        #expect(try answer(engine, "l LIST \"\" *\r\n") == nil)
        let name = String(repeating: "A", count: 60_000)
        var released = false
        for index in 0..<100 {
            let line = "* LIST () \".\" \"\(name)\(index)\"\r\n"
            if case .forwardRewritten = engine.process(response: try frame(line, peer: .server)) {
                released = true
                break
            }
        }
        #expect(released, "over 4 MiB of held LIST lines are released, not kept")
    }

    @Test("the in-flight queue drains 10,000 commands answered in order")
    func inFlightQueue() throws {
        let engine = try engine([DenyCommandsFilter(names: ["DELETE"])])
        for index in 0..<10_000 { engine.commandPassed(tag: "t\(index)", name: "NOOP") }
        for index in 0..<10_000 { engine.taggedResponsePassed(tag: "t\(index)") }
        #expect(engine.context.inFlight.isEmpty)
    }
}

/// Commands the filters see part by part (review S13).
@Suite("Filter engine: continuing commands")
struct ContinuingCommandTests {
    private func frame(_ text: String) throws -> Frame {
        var decoder = IMAPFrameDecoder(peer: .client, literalCaptureLimit: 16)
        var buffer = ByteBuffer(string: text)
        return try #require(try decoder.next(&buffer))
    }

    /// A command's first part, up to a literal announcement whose bytes have not come.
    private func partialFrame(_ text: String) throws -> Frame {
        var decoder = IMAPFrameDecoder(peer: .client, literalCaptureLimit: 16)
        var buffer = ByteBuffer(string: text)
        #expect(try decoder.next(&buffer) == nil)
        return try #require(decoder.frameInProgress)
    }

    private func engine(_ filters: [any Filter]) throws -> FilterEngine {
        let set = FilterSet(filters.map { FilterSet.Entry(filter: $0) })
        return try #require(set.engine(user: "u", clientAddress: nil, upstreamCapabilities: [], logger: Logger(label: "test")))
    }

    @Test("a CATENATE URL after a streamed literal is judged when its part comes")
    func catenateAfterLiteral() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret")])])
        // The whole command so far, the 20-byte TEXT literal's bytes not captured (it streamed).
        let soFar = try frame("a APPEND Sent CATENATE (TEXT {20+}\r\n01234567890123456789 URL \"/Secret/;UID=1\")\r\n")
        let decision = engine.process(command: soFar, streamedLiteral: nil, continuing: true)
        guard case .respond(let bytes) = decision else { Issue.record("forwarded"); return }
        #expect(String(buffer: bytes) == "a NO [NONEXISTENT] Mailbox does not exist.\r\n")
        #expect(engine.context.inFlight.isEmpty, "a continuation does not enter the in-flight queue again")
    }

    @Test("a first part that ends inside a list (CATENATE's streamed TEXT) parses; the same text complete does not")
    func firstPartInsideList() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret")])])
        let firstPart = try partialFrame("a APPEND INBOX CATENATE (TEXT {70000}\r\n")
        let streamed = try #require(firstPart.literals.last?.header)
        guard case .forwardOriginal = engine.process(command: firstPart, streamedLiteral: streamed) else {
            Issue.record("refused"); return
        }
        let unclosed = try frame("b APPEND INBOX CATENATE (TEXT \"x\"\r\n")
        guard case .respond = engine.process(command: unclosed, streamedLiteral: nil) else { Issue.record("forwarded"); return }
    }

    @Test("a rewrite cannot leave a list open around a streamed literal: refused")
    func rewriteInsideListRefused() throws {
        let engine = try engine([ReadOnlyFilter()])
        let firstPart = try partialFrame("a SELECT (TEXT {70000}\r\n")
        let streamed = try #require(firstPart.literals.last?.header)
        guard case .respond(let bytes) = engine.process(command: firstPart, streamedLiteral: streamed) else {
            Issue.record("forwarded"); return
        }
        #expect(String(buffer: bytes).hasPrefix("a NO [CANNOT]"))
    }

    @Test("a continuation that passes is forwarded as sent, even if a filter would rewrite it")
    func continuationNotRewritten() throws {
        let engine = try engine([ReadOnlyFilter(), HideMailboxesFilter(patterns: [Glob("Secret")])])
        let soFar = try frame("a SELECT Public\r\n")
        guard case .forwardOriginal = engine.process(command: soFar, streamedLiteral: nil, continuing: true) else {
            Issue.record("rewritten or refused"); return
        }
    }

    @Test("a continuation that does not parse is refused")
    func continuationUnparseable() throws {
        let engine = try engine([HideMailboxesFilter(patterns: [Glob("Secret")])])
        let soFar = try frame("a APPEND Sent {20+}\r\n01234567890123456789 x[\r\n")
        guard case .respond = engine.process(command: soFar, streamedLiteral: nil, continuing: true) else {
            Issue.record("forwarded"); return
        }
    }
}
