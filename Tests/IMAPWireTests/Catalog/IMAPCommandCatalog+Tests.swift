import IMAPWire
import Testing

@Suite("Command catalog")
struct IMAPCommandCatalogTests {
    @Test("UID forms resolve to their base command; only commands that have one")
    func uidForms() {
        #expect(IMAPCommandCatalog.command(named: "UID FETCH")?.name == "FETCH")
        #expect(IMAPCommandCatalog.command(named: "UID EXPUNGE")?.isMutating == true)
        #expect(IMAPCommandCatalog.command(named: "UID SELECT") == nil)
        #expect(IMAPCommandCatalog.command(named: "XNOPE") == nil)
    }

    @Test("states, mutation and mailbox arguments", arguments: [
        ("LOGIN", false, [Int](), true), ("FETCH", false, [], false), ("STORE", true, [], false),
        ("RENAME", true, [0, 1], false), ("COPY", true, [1], false), ("STATUS", false, [0], false),
        ("GENURLAUTH", true, [], false), ("CAPABILITY", false, [], true),
    ])
    func entries(name: String, mutating: Bool, mailboxes: [Int], beforeLogin: Bool) throws {
        let command = try #require(IMAPCommandCatalog.command(named: name))
        #expect(command.isMutating == mutating)
        #expect(command.mailboxArguments == mailboxes)
        #expect(command.states.contains(.notAuthenticated) == beforeLogin)
    }

    @Test("commands announced by a capability, = forms by their base", arguments: [
        ("COMPRESS=DEFLATE", ["COMPRESS"]), ("THREAD=REFERENCES", ["THREAD"]), ("METADATA-SERVER", ["GETMETADATA", "SETMETADATA"]),
        ("URLAUTH", ["URLFETCH", "GENURLAUTH", "RESETKEY"]), ("UIDPLUS", []), ("IDLE", ["IDLE"]),
    ])
    func announced(capability: String, names: [String]) {
        #expect(IMAPCommandCatalog.commands(announcedBy: capability) == Set(names))
    }

    @Test("argument shapes and session effects as RFC 3501 / 9051 define them")
    func shapes() throws {
        // RFC 9051 §6.1.1-3, §6.3.5, §6.4.1-3 (and RFC 3691 UNSELECT): no arguments.
        #expect(IMAPCommandCatalog.argumentlessNames
            == ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "NAMESPACE"])
        #expect(IMAPCommandCatalog.oneMailboxNames == ["CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"])
        #expect(IMAPCommandCatalog.stateChangingNames == ["SELECT", "EXAMINE", "CLOSE", "UNSELECT", "ENABLE"])
        #expect(try #require(IMAPCommandCatalog.command(named: "CLOSE")).sessionEffect == .deselects)
        // The views follow the catalog: NOOP with an argument is no NOOP, DELETE with two is no DELETE.
        #expect(CommandView(try command("a NOOP x\r\n")) == nil)
        #expect(CommandView(try command("a NOOP\r\n")) != nil)
        #expect(MailboxCommand(try command("a DELETE x y\r\n")) == nil)
        #expect(MailboxCommand(try command("a DELETE x\r\n"))?.mailbox.bytes == Array("x".utf8))
    }

    @Test("one entry per name")
    func unique() {
        let names = IMAPCommandCatalog.commands.map(\.name)
        #expect(Set(names).count == names.count)
    }
}
