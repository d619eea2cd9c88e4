import IMAPWire
import Testing

private func mailbox(_ text: String) -> MailboxName { MailboxName(bytes: Array(text.utf8)) }

private func status(_ text: String) throws -> StatusResponse {
    guard case .status(let status) = try response(text) else { throw TestFailure("not a status response") }
    return status
}

@Suite("Response views")
struct ResponseViewTests {
    @Test("CAPABILITY as a response and as a response code")
    func capability() throws {
        let response = try #require(CapabilityResponse(try data("* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n")))
        #expect(response.capabilities == ["IMAP4rev1", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED"])
        #expect(response.contains("starttls"))
        let greeting = try status("* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE] Dovecot ready.\r\n")
        let code = try #require(greeting.text.code)
        #expect(CapabilityResponse(code)?.capabilities == ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"])
        #expect(greeting.tag == nil && greeting.status == .ok)
        #expect(greeting.text.text == Array("Dovecot ready.".utf8))
    }

    @Test("LIST and LSUB")
    func list() throws {
        let noselect = try #require(ListResponse(try data("* LIST (\\Noselect) \"/\" ~/Mail/foo\r\n")))
        #expect(noselect.attributes == ["\\Noselect"] && noselect.delimiter == UInt8(ascii: "/"))
        #expect(noselect.mailbox == mailbox("~/Mail/foo"))
        let flat = try #require(ListResponse(try data("* LIST (\\HasNoChildren) NIL \"x y\"\r\n")))
        #expect(flat.delimiter == nil && flat.mailbox == mailbox("x y"))
        let dovecot = try #require(ListResponse(try data("* LSUB () \".\" INBOX.Sent\r\n")))
        #expect(dovecot.isLSUB && dovecot.delimiter == UInt8(ascii: "."))
        let literal = try #require(ListResponse(try data("* LIST () \"/\" {6}\r\nfoo\"ba\r\n")))
        #expect(literal.mailbox == mailbox("foo\"ba"))
        let childinfo = try #require(ListResponse(try data("* LIST (\\Subscribed) \"/\" \"Foo\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n")))
        #expect(childinfo.extendedData.count == 2 && childinfo.oldName == nil)
        let renamed = try #require(ListResponse(try data("* LIST () \"/\" \"NewFolder\" (\"OLDNAME\" (\"OldFolder\"))\r\n")))
        #expect(renamed.oldName == mailbox("OldFolder"))
        #expect(ListResponse(try data("* LIST () \"//\" foo\r\n")) == nil)
    }

    @Test("STATUS")
    func mailboxStatus() throws {
        let status = try #require(MailboxStatusResponse(try data("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n")))
        #expect(status.mailbox == mailbox("blurdybloop") && status["messages"] == 231 && status["UIDNEXT"] == 44292)
    }

    @Test("SELECT's answer: FLAGS, EXISTS, RECENT, OK codes, tagged READ-WRITE (RFC 3501 §6.3.1)")
    func selectResponses() throws {
        #expect(MessageCountResponse(try data("* 172 EXISTS\r\n")) .map { [$0.kind.rawValue, "\($0.number)"] } == ["EXISTS", "172"])
        #expect(MessageCountResponse(try data("* 1 RECENT\r\n"))?.kind == .recent)
        #expect(MessageCountResponse(try data("* 3 EXPUNGE\r\n"))?.kind == .expunge)
        #expect(FlagsResponse(try data("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"))?.flags.count == 5)
        let codes: [(String, KnownResponseCode)] = [
            ("* OK [UNSEEN 12] Message 12 is first unseen\r\n", .unseen(12)),
            ("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n", .uidValidity(3_857_529_045)),
            ("* OK [UIDNEXT 4392] Predicted next UID\r\n", .uidNext(4392)),
            ("* OK [HIGHESTMODSEQ 715194045007] Highest\r\n", .highestModSeq(715_194_045_007)),
            ("A142 OK [READ-WRITE] SELECT completed\r\n", .readWrite),
            ("A932 OK [READ-ONLY] EXAMINE completed\r\n", .readOnly),
            ("A003 NO [TRYCREATE] Mailbox doesn't exist\r\n", .tryCreate),
            ("a NO [NONEXISTENT] Unknown Mailbox\r\n", .plain("NONEXISTENT")),
        ]
        for (text, expected) in codes {
            let code = try #require(try status(text).text.code)
            #expect(KnownResponseCode(code) == expected, "\(text)")
        }
        let tagged = try status("A142 OK [READ-WRITE] SELECT completed\r\n")
        #expect(tagged.tag == "A142" && tagged.text.text == Array("SELECT completed".utf8))
    }

    @Test("FETCH (RFC 3501 §8 example) with a body literal by reference")
    func fetch() throws {
        let envelope = "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" "
            + "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
            + "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) "
            + "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\") (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
            + "\"<B27397-0100000@cac.washington.edu>\")"
        let text = "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE \(envelope) "
            + "BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n"
        let fetch = try #require(FetchResponse(try data(text)))
        #expect(fetch.number == 12 && fetch.flags == ["\\Seen"] && fetch["RFC822.SIZE"]?.number == 4286)
        #expect(fetch["ENVELOPE"]?.list?.count == 10)

        let body = try #require(FetchResponse(try data("* 2 FETCH (UID 4827313 BODY[] {11}\r\nhello world FLAGS (\\Deleted \\Seen))\r\n")))
        #expect(body.uid == 4_827_313)
        guard case .literal(let index, let size, _) = body["body[]"] else { Issue.record("no literal"); return }
        #expect(index == 0 && size == 11)
        #expect(body.flags == ["\\Deleted", "\\Seen"])
    }

    @Test("ID, ENABLED, NAMESPACE")
    func sessionResponses() throws {
        let id = try #require(IDResponse(try data(
            "* ID (\"name\" \"Cyrus\" \"version\" \"1.5\" \"os\" \"sunos\" \"os-version\" \"5.5\" \"support-url\" NIL)\r\n")))
        #expect(id.parameters["name"] == "Cyrus" && id.parameters.fields.count == 5)
        #expect(IDResponse(try data("* ID NIL\r\n"))?.parameters.fields.isEmpty == true)
        #expect(EnabledResponse(try data("* ENABLED CONDSTORE QRESYNC\r\n"))?.capabilities == ["CONDSTORE", "QRESYNC"])
        #expect(EnabledResponse(try data("* ENABLED\r\n"))?.capabilities == [])
        let namespace = try #require(NamespaceResponse(try data(
            "* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\") (\"#public/\" \"/\") (\"#ftp/\" \"/\") (\"#news.\" \".\"))\r\n")))
        #expect(namespace.personal.first?.delimiter == UInt8(ascii: "/"))
        #expect(namespace.shared.count == 4 && namespace.shared[3].prefix == mailbox("#news."))
        let dovecot = try #require(NamespaceResponse(try data("* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n")))
        #expect(dovecot.personal.first?.prefix == mailbox("INBOX.") && dovecot.otherUsers.isEmpty)
        let extended = try #require(NamespaceResponse(try data(
            "* NAMESPACE ((\"\" \"/\" \"X-PARAM\" (\"FLAG1\" \"FLAG2\"))) NIL NIL\r\n")))
        #expect(extended.personal.first?.extensions.count == 2)
    }

    @Test("tagged NO/BAD and BYE with codes; continuation requests")
    func statusAndContinuation() throws {
        let bye = try status("* BYE Autologout; idle for too long\r\n")
        #expect(bye.status == .bye && bye.tag == nil && bye.text.code == nil)
        let bad = try status("a BAD [PARSE] Missing argument\r\n")
        #expect(bad.status == .bad && bad.text.code?.name == "PARSE")
        guard case .continuation(let text) = try response("+ Ready for additional command text\r\n") else {
            Issue.record("not a continuation"); return
        }
        #expect(text.text == Array("Ready for additional command text".utf8))
        guard case .continuation(let challenge) = try response("+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMCAQGi\r\n") else {
            Issue.record("not a continuation"); return
        }
        #expect(challenge.code == nil)
    }

    @Test("RFC 6855: UTF-8 mailbox names in LIST after UTF8=ACCEPT")
    func utf8List() throws {
        let list = try #require(ListResponse(try data("* LIST () \"/\" \"Entw\u{FC}rfe/\u{53F0}\u{5317}\"\r\n")))
        #expect(list.mailbox.displayName(utf8: true) == "Entw\u{FC}rfe/\u{53F0}\u{5317}")
        #expect(list.mailbox.displayName(utf8: false) == nil)
        #expect(list.mailbox.converted(fromUTF8: true)?.description == "Entw&APw-rfe/&U,BTFw-")
    }

    @Test("understood: known responses that match their grammar", arguments: [
        ("* 5 EXISTS\r\n", true), ("* XFOO bar\r\n", false), ("* LIST (\\X) \"/\"\r\n", false),
        ("* SEARCH 1 2 3\r\n", false), ("+ go\r\n", true), ("a OK done\r\n", true), ("* 5 FETCH UID\r\n", false),
    ])
    func understood(text: String, expected: Bool) throws {
        #expect(try singleFrame(text, peer: .server).isUnderstood() == expected)
    }
}
