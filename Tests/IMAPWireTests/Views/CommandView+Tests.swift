import IMAPWire
import Testing

private func mailbox(_ text: String) -> MailboxName { MailboxName(bytes: Array(text.utf8)) }

@Suite("Command views")
struct CommandViewTests {
    @Test("LOGIN: atoms, quoted with escapes, literals")
    func login() throws {
        let plain = try #require(LoginCommand(try command("a001 LOGIN SMITH SESAME\r\n")))
        #expect(plain.user == Array("SMITH".utf8) && plain.password == Array("SESAME".utf8))
        let quoted = try #require(LoginCommand(try command(#"a LOGIN "fred@example.org" "p\"w\\d""# + "\r\n")))
        #expect(quoted.password == Array(#"p"w\d"#.utf8))
        let literal = try #require(LoginCommand(try command("a LOGIN {4}\r\nfred {5+}\r\nse cr\r\n")))
        #expect(literal.user == Array("fred".utf8) && literal.password == Array("se cr".utf8))
        #expect(!String(describing: literal).contains("se cr"))
        #expect(LoginCommand(try command("a LOGIN onlyone\r\n")) == nil)
    }

    @Test("AUTHENTICATE with and without SASL-IR (RFC 4959)")
    func authenticate() throws {
        let bare = try #require(AuthenticateCommand(try command("A001 AUTHENTICATE GSSAPI\r\n")))
        #expect(bare.mechanism == "GSSAPI" && bare.initialResponse == nil)
        let ir = try #require(AuthenticateCommand(try command("a AUTHENTICATE plain dGVzdAB0ZXN0AHRlc3Q=\r\n")))
        #expect(ir.mechanism == "PLAIN" && ir.initialResponse == Array("dGVzdAB0ZXN0AHRlc3Q=".utf8))
        #expect(!String(describing: ir).contains("dGVzd"))
    }

    @Test("SELECT and EXAMINE, with parameters")
    func select() throws {
        let select = try #require(SelectCommand(try command("A142 SELECT INBOX\r\n")))
        #expect(select.mailbox.isInbox && !select.isExamine)
        let examine = try #require(SelectCommand(try command("A932 EXAMINE blurdybloop\r\n")))
        #expect(examine.isExamine && examine.mailbox == mailbox("blurdybloop"))
        let condstore = try #require(SelectCommand(try command("a SELECT \"Sent Items\" (CONDSTORE)\r\n")))
        #expect(condstore.mailbox == mailbox("Sent Items") && condstore.parameters == [.atom(Array("CONDSTORE".utf8))])
    }

    @Test("LIST, LSUB and LIST-EXTENDED (RFC 5258)")
    func list() throws {
        let simple = try #require(ListCommand(try command("A101 LIST \"\" \"\"\r\n")))
        #expect(simple.reference == mailbox("") && simple.patterns == [mailbox("")])
        let wildcard = try #require(ListCommand(try command("A202 LIST ~/Mail/ %\r\n")))
        #expect(wildcard.reference == mailbox("~/Mail/") && wildcard.patterns == [mailbox("%")])
        let lsub = try #require(ListCommand(try command("A002 LSUB \"#news.\" \"comp.mail.*\"\r\n")))
        #expect(lsub.isLSUB && lsub.patterns == [mailbox("comp.mail.*")])
        let extended = try #require(ListCommand(try command("A02 LIST (SUBSCRIBED) \"\" \"*\" RETURN (CHILDREN STATUS (MESSAGES))\r\n")))
        #expect(extended.selectionOptions == ["SUBSCRIBED"])
        #expect(extended.returnOptions.count == 3)
        let multiple = try #require(ListCommand(try command("A01 LIST \"\" (\"INBOX\" \"Drafts\" \"Sent/%\")\r\n")))
        #expect(multiple.patterns == [mailbox("INBOX"), mailbox("Drafts"), mailbox("Sent/%")])
        #expect(ListCommand(try command("A LIST \"\"\r\n")) == nil)
    }

    @Test("STATUS")
    func status() throws {
        let status = try #require(StatusCommand(try command("A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n")))
        #expect(status.mailbox == mailbox("blurdybloop") && status.items == ["UIDNEXT", "MESSAGES"])
    }

    @Test("CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, RENAME")
    func mailboxCommands() throws {
        let create = try #require(MailboxCommand(try command("A003 CREATE owatagusiam/\r\n")))
        #expect(create.name == "CREATE" && create.mailbox == mailbox("owatagusiam/"))
        let special = try #require(MailboxCommand(try command("t1 CREATE \"Sent\" (USE (\\Sent))\r\n")))
        #expect(special.parameters.count == 2)
        #expect(MailboxCommand(try command("A682 DELETE foo.bar\r\n"))?.name == "DELETE")
        #expect(MailboxCommand(try command("A002 SUBSCRIBE #news.comp.mail.mime\r\n"))?.mailbox == mailbox("#news.comp.mail.mime"))
        #expect(MailboxCommand(try command("A002 UNSUBSCRIBE {4}\r\nabcd\r\n"))?.mailbox == mailbox("abcd"))
        let rename = try #require(RenameCommand(try command("A683 RENAME blurdybloop sarasoop\r\n")))
        #expect(rename.from == mailbox("blurdybloop") && rename.to == mailbox("sarasoop"))
        #expect(MailboxCommand(try command("a DELETE a b\r\n")) == nil)
    }

    @Test("APPEND, MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), UTF8 (RFC 6855)")
    func append() throws {
        let single = try #require(AppendCommand(try command(
            "A003 APPEND saved-messages (\\Seen) {310}\r\n\(rfc3501AppendMessage)\r\n")))
        #expect(single.mailbox == mailbox("saved-messages"))
        #expect(single.messages.count == 1 && single.messages[0].flags == ["\\Seen"] && single.messages[0].literalSize == 310)

        let multi = try #require(AppendCommand(try command(
            "A003 APPEND saved (\\Seen) {4}\r\nabcd (\\Seen) \" 7-Feb-1994 22:43:04 -0800\" {3}\r\nxyz {2+}\r\nqq\r\n")))
        #expect(multi.messages.map(\.literalIndex) == [0, 1, 2])
        #expect(multi.messages[1].internalDate == " 7-Feb-1994 22:43:04 -0800")

        let catenate = try #require(AppendCommand(try command(
            "A003 APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER\""
            + " TEXT {42}\r\n\r\n--------------030308070208000400050907\r\n URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME\")\r\n")))
        #expect(catenate.messages.count == 1 && catenate.messages[0].catenateParts?.count == 6)

        let utf8 = try #require(AppendCommand(try command("a APPEND INBOX UTF8 (~{5+}\r\nhello)\r\n")))
        #expect(utf8.messages[0].literalSize == 5)
        #expect(AppendCommand(try command("a APPEND INBOX (\\Seen)\r\n")) == nil)
    }

    @Test("COPY and MOVE with UID forms")
    func copyMove() throws {
        let copy = try #require(CopyCommand(try command("A003 COPY 2:4 MEETING\r\n")))
        #expect(!copy.isUID && !copy.isMove && copy.mailbox == mailbox("MEETING"))
        let move = try #require(CopyCommand(try command("a UID MOVE 42:69 \"Old Mail\"\r\n")))
        #expect(move.isUID && move.isMove && move.set == SequenceSet(elements: [.range(.number(42), .number(69))]))
    }

    @Test("FETCH, STORE, SEARCH with UID forms")
    func messageCommands() throws {
        let fetch = try #require(FetchCommand(try command("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n")))
        #expect(fetch.items.count == 2 && !fetch.isUID)
        let uidFetch = try #require(FetchCommand(try command("s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n")))
        #expect(uidFetch.isUID && uidFetch.modifiers.count == 2)
        #expect(FetchCommand(try command("A FETCH 1 FAST\r\n"))?.items == [.atom(Array("FAST".utf8))])

        let store = try #require(StoreCommand(try command("A003 STORE 2:4 +FLAGS (\\Deleted)\r\n")))
        #expect(store.operation == .add && !store.isSilent && store.flags == ["\\Deleted"])
        let uidStore = try #require(StoreCommand(try command("a UID STORE 1 (UNCHANGEDSINCE 5) -FLAGS.SILENT \\Seen \\Flagged\r\n")))
        #expect(uidStore.isUID && uidStore.operation == .remove && uidStore.isSilent)
        #expect(uidStore.flags == ["\\Seen", "\\Flagged"] && uidStore.modifiers.count == 2)

        let search = try #require(SearchCommand(try command("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n")))
        #expect(search.criteria.count == 6 && search.charset == nil)
        let charset = try #require(SearchCommand(try command("A285 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n")))
        #expect(charset.charset == "UTF-8" && charset.criteria.count == 2)
        let esearch = try #require(SearchCommand(try command("a UID SEARCH RETURN (MIN MAX) UNSEEN\r\n")))
        #expect(esearch.isUID && esearch.returnOptions?.count == 2)
    }

    @Test("ENABLE, ID, IDLE")
    func sessionCommands() throws {
        #expect(EnableCommand(try command("t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n"))?.capabilities == ["CONDSTORE", "X-GOOD-IDEA"])
        #expect(EnableCommand(try command("a ENABLE utf8=accept\r\n"))?.capabilities == ["UTF8=ACCEPT"])
        let id = try #require(IDCommand(try command(
            "a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n")))
        #expect(id.parameters["NAME"] == "sodr" && id.parameters.fields.count == 3)
        #expect(IDCommand(try command("a ID NIL\r\n"))?.parameters.fields == [])
        #expect(IdleCommand(try command("A002 IDLE\r\n")) != nil)
    }

    @Test("understood: known commands that match their grammar", arguments: [
        ("a NOOP\r\n", true), ("a CAPABILITY\r\n", true), ("a UID EXPUNGE 1:3\r\n", true),
        ("a NOOP extra\r\n", false), ("a XYZZY\r\n", false), ("a SELECT\r\n", false),
        ("a STORE 1 FLAGS\r\n", false), ("a IDLE\r\n", true),
    ])
    func understood(text: String, expected: Bool) throws {
        #expect(try singleFrame(text, peer: .client).isUnderstood() == expected)
    }
}
