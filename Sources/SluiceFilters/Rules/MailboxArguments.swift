import IMAPWire

/// Where commands name mailboxes, so rules can read and replace them.
///
/// LIST and LSUB are not here: their reference and patterns are not
/// mailbox names (see `ListArguments`).
public enum MailboxArguments {
    /// Command (base) name → indices of its mailbox arguments.
    static let positions = IMAPCommandCatalog.mailboxArguments

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

    /// Commands that name mailboxes inside IMAP URLs (RFC 5092): CATENATE's
    /// `URL` parts (RFC 4469), URLFETCH and GENURLAUTH (RFC 4467).
    public static let urlCommands: Set<String> = ["APPEND", "REPLACE", "URLFETCH", "GENURLAUTH"]

    /// Every mailbox `command` reads or writes: its mailbox arguments and the
    /// mailboxes of the IMAP URLs it carries. `nil` when some argument where
    /// a mailbox or URL belongs cannot be read: rules refuse the command then
    /// (a name the proxy cannot read is one the server may still act on).
    public static func referenced(by command: ParsedCommand) -> [MailboxName]? {
        var names: [MailboxName] = []
        for index in indices(in: command) {
            guard let bytes = command.arguments[index].stringBytes else { return nil }
            names.append(MailboxName(bytes: bytes))
        }
        guard urlCommands.contains(command.baseName) else { return names }
        guard let fromURLs = urlMailboxes(of: command) else { return nil }
        return names + fromURLs
    }

    /// The mailboxes the IMAP URLs of `command` read from; `nil` when one
    /// cannot be read.
    public static func urlMailboxes(of command: ParsedCommand) -> [MailboxName]? {
        var names: [MailboxName] = []
        for url in urls(in: command) {
            guard let bytes = url, let mailbox = IMAPURL.mailbox(of: bytes) else { return nil }
            names.append(mailbox)
        }
        return names
    }

    /// The URL arguments of `command`; a `nil` element is one that is not a string.
    static func urls(in command: ParsedCommand) -> [[UInt8]?] {
        switch command.baseName {
        case "APPEND", "REPLACE":
            // APPEND mailbox [flags] [date] (literal / CATENATE (parts)) …, MULTIAPPEND repeats the message;
            // REPLACE seq mailbox [flags] [date] (literal / CATENATE (parts)) (RFC 8508).
            var result: [[UInt8]?] = []
            var index = 0
            let arguments = command.arguments
            while index < arguments.count {
                if arguments[index].atom?.uppercased() == "CATENATE", index + 1 < arguments.count {
                    guard let parts = arguments[index + 1].list else { return [nil] }
                    var part = 0
                    while part < parts.count {
                        if parts[part].atom?.uppercased() == "URL" {
                            result.append(part + 1 < parts.count ? parts[part + 1].stringBytes : nil)
                        }
                        part += 2
                    }
                    index += 2
                } else {
                    index += 1
                }
            }
            return result
        case "URLFETCH":
            // URLFETCH url / (url options) … (RFC 4467, RFC 5524)
            return command.arguments.map { $0.stringBytes ?? $0.list?.first?.stringBytes }
        case "GENURLAUTH":
            // GENURLAUTH url mechanism [url mechanism …]
            return stride(from: 0, to: command.arguments.count, by: 2).map { command.arguments[$0].stringBytes }
        default:
            return []
        }
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

/// The mailbox named by an IMAP URL (RFC 5092): absolute
/// `imap://[user@]host[:port]/mailbox[;UIDVALIDITY=n][/;UID=n…]` or
/// relative `/mailbox…`. Percent-escapes are decoded; the result is the
/// name as it travels on the wire (modified UTF-7 or UTF-8).
public enum IMAPURL {
    public static func mailbox(of url: [UInt8]) -> MailboxName? {
        var path = url[...]
        let scheme = Array("imap://".utf8)
        if path.count >= scheme.count, path.prefix(scheme.count).map({ $0 | 0x20 }) == scheme {
            path = path.dropFirst(scheme.count)
            guard let slash = path.firstIndex(of: UInt8(ascii: "/")) else { return nil }
            path = path[slash...]
        }
        guard path.first == UInt8(ascii: "/") else { return nil }
        path = path.dropFirst()
        // The mailbox ends at ";UIDVALIDITY=", at "/;" (a UID part) or at "?" (a search).
        var end = path.endIndex
        var index = path.startIndex
        while index < path.endIndex {
            let byte = path[index]
            if byte == UInt8(ascii: ";") || byte == UInt8(ascii: "?") { end = index; break }
            if byte == UInt8(ascii: "/"), path.index(after: index) < path.endIndex,
               path[path.index(after: index)] == UInt8(ascii: ";") { end = index; break }
            index = path.index(after: index)
        }
        let encoded = path[path.startIndex..<end]
        guard !encoded.isEmpty, let decoded = percentDecoded(encoded) else { return nil }
        return MailboxName(bytes: decoded)
    }

    static func percentDecoded(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        var result: [UInt8] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                guard bytes.distance(from: index, to: bytes.endIndex) >= 3,
                      let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else { return nil }
                result.append(high << 4 | low)
                index += 3
            } else {
                result.append(byte)
                index += 1
            }
        }
        return result
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
