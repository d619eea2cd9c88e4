/// What Sluice knows about each IMAP command, in one table: the states it is
/// valid in, whether it changes the mailbox store, where its mailbox
/// arguments are, and which extension brings it. Rules, the pre-login state
/// machine and configuration checks all read this table; a command not in
/// it is still framed and relayed untouched (DESIGN principle 2).
public enum IMAPCommandCatalog {
    /// Connection states (RFC 9051 §3).
    public enum State: Hashable, Sendable {
        case notAuthenticated, authenticated, selected
    }

    /// The shape of a command's arguments, where a typed view relies on it.
    public enum Arguments: Hashable, Sendable {
        /// None (`NOOP`); `UID EXPUNGE` takes a sequence set (RFC 4315).
        case none
        /// One mailbox name (CREATE may add RFC 4466 parameters).
        case oneMailbox
        case other
    }

    /// How a command's success changes the session state rules are judged in.
    public enum SessionEffect: Hashable, Sendable {
        case none
        /// Selects its mailbox argument (SELECT, EXAMINE).
        case selects
        /// Leaves the selected state (CLOSE, UNSELECT).
        case deselects
        /// Enables extensions (ENABLE).
        case enables
    }

    public struct Command: Hashable, Sendable {
        /// The base name (`FETCH` for `UID FETCH`).
        public let name: String
        public let states: Set<State>
        /// Changes mailboxes, messages, flags, subscriptions, ACLs, quotas,
        /// metadata or URL keys (what `read_only` refuses).
        public let isMutating: Bool
        /// Indices of its mailbox arguments (LIST and LSUB take patterns, not names).
        public let mailboxArguments: [Int]
        /// The capabilities that announce it; empty for IMAP4rev1 / IMAP4rev2 itself.
        public let capabilities: Set<String>
        /// Has a `UID` form.
        public let hasUIDForm: Bool
        public let arguments: Arguments
        public let sessionEffect: SessionEffect

        init(_ name: String, _ states: Set<State>, mutating: Bool = false, mailboxes: [Int] = [],
             capabilities: Set<String> = [], uid: Bool = false, arguments: Arguments = .other,
             effect: SessionEffect = .none) {
            self.name = name
            self.states = states
            self.isMutating = mutating
            self.mailboxArguments = mailboxes
            self.capabilities = capabilities
            self.hasUIDForm = uid
            self.arguments = arguments
            self.sessionEffect = effect
        }
    }

    private static let any: Set<State> = [.notAuthenticated, .authenticated, .selected]
    private static let loggedIn: Set<State> = [.authenticated, .selected]
    private static let selected: Set<State> = [.selected]

    /// RFC 3501 / RFC 9051 and the extensions Sluice's rules know.
    public static let commands: [Command] = [
        Command("CAPABILITY", any, arguments: .none), Command("NOOP", any, arguments: .none),
        Command("LOGOUT", any, arguments: .none),
        Command("ID", any, capabilities: ["ID"]),
        Command("STARTTLS", [.notAuthenticated], arguments: .none), Command("AUTHENTICATE", [.notAuthenticated]),
        Command("LOGIN", [.notAuthenticated]),
        Command("ENABLE", loggedIn, capabilities: ["ENABLE"], effect: .enables),
        Command("SELECT", loggedIn, mailboxes: [0], effect: .selects),
        Command("EXAMINE", loggedIn, mailboxes: [0], effect: .selects),
        Command("CREATE", loggedIn, mutating: true, mailboxes: [0], arguments: .oneMailbox),
        Command("DELETE", loggedIn, mutating: true, mailboxes: [0], arguments: .oneMailbox),
        Command("RENAME", loggedIn, mutating: true, mailboxes: [0, 1]),
        Command("SUBSCRIBE", loggedIn, mutating: true, mailboxes: [0], arguments: .oneMailbox),
        Command("UNSUBSCRIBE", loggedIn, mutating: true, mailboxes: [0], arguments: .oneMailbox),
        Command("LIST", loggedIn), Command("LSUB", loggedIn), Command("XLIST", loggedIn),
        Command("STATUS", loggedIn, mailboxes: [0]),
        Command("APPEND", loggedIn, mutating: true, mailboxes: [0]),
        Command("NAMESPACE", loggedIn, capabilities: ["NAMESPACE"], arguments: .none),
        Command("IDLE", loggedIn, capabilities: ["IDLE"]),
        Command("CHECK", selected, arguments: .none), Command("CLOSE", selected, arguments: .none, effect: .deselects),
        Command("UNSELECT", selected, capabilities: ["UNSELECT"], arguments: .none, effect: .deselects),
        Command("EXPUNGE", selected, mutating: true, uid: true, arguments: .none),
        Command("SEARCH", selected, uid: true), Command("FETCH", selected, uid: true),
        Command("STORE", selected, mutating: true, uid: true),
        Command("COPY", selected, mutating: true, mailboxes: [1], uid: true),
        Command("MOVE", selected, mutating: true, mailboxes: [1], capabilities: ["MOVE"], uid: true),
        Command("SORT", selected, capabilities: ["SORT"], uid: true),
        Command("THREAD", selected, capabilities: ["THREAD"], uid: true),
        Command("REPLACE", selected, mutating: true, mailboxes: [1], capabilities: ["REPLACE"], uid: true),
        Command("GETQUOTA", loggedIn, capabilities: ["QUOTA"]),
        Command("GETQUOTAROOT", loggedIn, mailboxes: [0], capabilities: ["QUOTA"]),
        Command("SETQUOTA", loggedIn, mutating: true, capabilities: ["QUOTA"]),
        Command("GETACL", loggedIn, mailboxes: [0], capabilities: ["ACL"]),
        Command("SETACL", loggedIn, mutating: true, mailboxes: [0], capabilities: ["ACL"]),
        Command("DELETEACL", loggedIn, mutating: true, mailboxes: [0], capabilities: ["ACL"]),
        Command("LISTRIGHTS", loggedIn, mailboxes: [0], capabilities: ["ACL"]),
        Command("MYRIGHTS", loggedIn, mailboxes: [0], capabilities: ["ACL"]),
        Command("GETMETADATA", loggedIn, mailboxes: [0], capabilities: ["METADATA", "METADATA-SERVER"]),
        Command("SETMETADATA", loggedIn, mutating: true, mailboxes: [0], capabilities: ["METADATA", "METADATA-SERVER"]),
        Command("COMPRESS", loggedIn, capabilities: ["COMPRESS"]),
        Command("NOTIFY", loggedIn, capabilities: ["NOTIFY"]),
        Command("URLFETCH", loggedIn, capabilities: ["URLAUTH"]),
        Command("GENURLAUTH", loggedIn, mutating: true, capabilities: ["URLAUTH"]),
        Command("RESETKEY", loggedIn, mutating: true, capabilities: ["URLAUTH"]),
    ]

    private static let byName: [String: Command] = Dictionary(uniqueKeysWithValues: commands.map { ($0.name, $0) })

    /// The command named `name` (upper case; a `UID ` form by its base name,
    /// if it has one), or `nil` for a command the catalog does not know.
    public static func command(named name: String) -> Command? {
        if name.hasPrefix("UID ") {
            guard let base = byName[String(name.dropFirst(4))], base.hasUIDForm else { return nil }
            return base
        }
        return byName[name]
    }

    /// Names of commands that take no arguments.
    public static let argumentlessNames: Set<String> = names { $0.arguments == .none }

    /// Names of commands whose one argument is a mailbox (CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE).
    public static let oneMailboxNames: Set<String> = names { $0.arguments == .oneMailbox }

    /// Names of commands whose success changes the session state (`SessionEffect`).
    public static let stateChangingNames: Set<String> = names { $0.sessionEffect != .none }

    private static func names(where included: (Command) -> Bool) -> Set<String> {
        Set(commands.filter(included).map(\.name))
    }

    /// Base names of commands that change the store.
    public static let mutatingNames: Set<String> = Set(commands.filter(\.isMutating).map(\.name))

    /// Base names of commands with mailbox arguments, and where they are.
    public static let mailboxArguments: [String: [Int]] = Dictionary(
        uniqueKeysWithValues: commands.filter { !$0.mailboxArguments.isEmpty }.map { ($0.name, $0.mailboxArguments) })

    /// The commands a capability announces (`COMPRESS=DEFLATE` by its name
    /// before `=`, `THREAD=REFERENCES` likewise).
    public static func commands(announcedBy capability: String) -> Set<String> {
        let upper = capability.uppercased()
        let base = upper.split(separator: "=", maxSplits: 1).first.map(String.init) ?? upper
        return Set(commands.filter { $0.capabilities.contains(upper) || $0.capabilities.contains(base) }.map(\.name))
    }
}
