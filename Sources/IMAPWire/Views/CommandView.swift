/// The typed view of a command, for the commands IMAPWire understands.
public enum CommandView: Hashable, Sendable {
    case login(LoginCommand)
    case authenticate(AuthenticateCommand)
    case select(SelectCommand)
    case list(ListCommand)
    case status(StatusCommand)
    case mailbox(MailboxCommand)
    case rename(RenameCommand)
    case append(AppendCommand)
    case copy(CopyCommand)
    case fetch(FetchCommand)
    case store(StoreCommand)
    case search(SearchCommand)
    case enable(EnableCommand)
    case id(IDCommand)
    case idle(IdleCommand)
    /// Commands without arguments whose meaning is their name alone.
    case simple(String)

    /// The view of `command`, or `nil` if it is unknown or does not match its grammar.
    public init?(_ command: ParsedCommand) {
        let view: CommandView?
        switch command.baseName {
        case "LOGIN": view = LoginCommand(command).map(CommandView.login)
        case "AUTHENTICATE": view = AuthenticateCommand(command).map(CommandView.authenticate)
        case "SELECT", "EXAMINE": view = SelectCommand(command).map(CommandView.select)
        case "LIST", "LSUB": view = ListCommand(command).map(CommandView.list)
        case "STATUS": view = StatusCommand(command).map(CommandView.status)
        case "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE": view = MailboxCommand(command).map(CommandView.mailbox)
        case "RENAME": view = RenameCommand(command).map(CommandView.rename)
        case "APPEND": view = AppendCommand(command).map(CommandView.append)
        case "COPY", "MOVE": view = CopyCommand(command).map(CommandView.copy)
        case "FETCH": view = FetchCommand(command).map(CommandView.fetch)
        case "STORE": view = StoreCommand(command).map(CommandView.store)
        case "SEARCH": view = SearchCommand(command).map(CommandView.search)
        case "ENABLE": view = EnableCommand(command).map(CommandView.enable)
        case "ID": view = IDCommand(command).map(CommandView.id)
        case "IDLE": view = IdleCommand(command).map(CommandView.idle)
        case let name where IMAPCommandCatalog.argumentlessNames.contains(name):
            // UID EXPUNGE (RFC 4315) takes a sequence set; the others none.
            if command.isUID {
                view = command.name == "UID EXPUNGE" && command.arguments.count == 1
                    && SequenceSet(command.arguments[0]) != nil ? .simple(command.name) : nil
            } else {
                view = command.arguments.isEmpty ? .simple(name) : nil
            }
        default: view = nil
        }
        guard let view else { return nil }
        self = view
    }
}
