import IMAPWire

/// Where commands name mailboxes, so rules can read and replace them.
///
/// LIST and LSUB are not here: their reference and patterns are not
/// mailbox names (see `ListArguments`).
public enum MailboxArguments {
    /// Command (base) name → indices of its mailbox arguments.
    static let positions: [String: [Int]] = [
        "SELECT": [0], "EXAMINE": [0], "CREATE": [0], "DELETE": [0], "SUBSCRIBE": [0], "UNSUBSCRIBE": [0],
        "STATUS": [0], "APPEND": [0], "RENAME": [0, 1], "COPY": [1], "MOVE": [1],
        "GETQUOTAROOT": [0], "MYRIGHTS": [0], "GETACL": [0], "SETACL": [0], "DELETEACL": [0], "LISTRIGHTS": [0],
        "GETMETADATA": [0], "SETMETADATA": [0],
    ]

    public static let names = Set(positions.keys)

    /// Indices of the mailbox arguments of `command` (GETMETADATA may put an
    /// options list first).
    static func indices(in command: ParsedCommand) -> [Int] {
        guard var indices = positions[command.baseName] else { return [] }
        if command.baseName == "GETMETADATA", command.arguments.first?.list != nil { indices = [1] }
        return indices.filter { $0 < command.arguments.count }
    }

    /// The mailboxes `command` names, in argument order.
    public static func all(of command: ParsedCommand) -> [MailboxName] {
        indices(in: command).compactMap { command.arguments[$0].stringBytes.map(MailboxName.init(bytes:)) }
    }

    public static func first(of command: ParsedCommand) -> MailboxName? {
        all(of: command).first
    }

    /// `command` with each mailbox argument replaced by `transform`'s result
    /// (unchanged where it returns `nil`); `nil` when nothing changed.
    public static func mapping(_ command: ParsedCommand, _ transform: (MailboxName) -> MailboxName?) -> ParsedCommand? {
        var result = command
        var changed = false
        for index in indices(in: command) {
            guard let bytes = command.arguments[index].stringBytes,
                  let replacement = transform(MailboxName(bytes: bytes)), replacement.bytes != bytes
            else { continue }
            result.arguments[index] = .quoted(replacement.bytes)
            changed = true
        }
        return changed ? result : nil
    }
}

/// LIST and LSUB arguments: `[selection options] reference pattern(s) [RETURN (…)]`.
public enum ListArguments {
    /// Index of the reference name.
    static func referenceIndex(_ command: ParsedCommand) -> Int? {
        guard command.baseName == "LIST" || command.baseName == "LSUB" else { return nil }
        let index = command.arguments.first?.list != nil ? 1 : 0
        return index + 1 < command.arguments.count ? index : nil
    }

    /// The patterns (one, or a parenthesized list of several).
    public static func patterns(of command: ParsedCommand) -> [[UInt8]] {
        guard let reference = referenceIndex(command) else { return [] }
        let token = command.arguments[reference + 1]
        if let list = token.list { return list.compactMap(\.stringBytes) }
        return token.stringBytes.map { [$0] } ?? []
    }

    /// `command` with its reference and each pattern passed through `transform`.
    public static func mapping(_ command: ParsedCommand, reference transformReference: ([UInt8]) -> [UInt8],
                               pattern transform: ([UInt8]) -> [UInt8]) -> ParsedCommand? {
        guard let reference = referenceIndex(command) else { return nil }
        var result = command
        var changed = false
        func apply(_ token: IMAPToken, _ function: ([UInt8]) -> [UInt8]) -> IMAPToken {
            guard let bytes = token.stringBytes else { return token }
            let mapped = function(bytes)
            guard mapped != bytes else { return token }
            changed = true
            return .quoted(mapped)
        }
        result.arguments[reference] = apply(command.arguments[reference], transformReference)
        let token = command.arguments[reference + 1]
        if let list = token.list {
            result.arguments[reference + 1] = .list(list.map { apply($0, transform) })
        } else {
            result.arguments[reference + 1] = apply(token, transform)
        }
        return changed ? result : nil
    }
}
