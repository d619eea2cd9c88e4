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

    @Test("one entry per name")
    func unique() {
        let names = IMAPCommandCatalog.commands.map(\.name)
        #expect(Set(names).count == names.count)
    }
}
