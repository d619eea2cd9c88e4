/// `FETCH` and `UID FETCH` (RFC 3501 §6.4.5, RFC 7162 modifiers).
///
/// ```
/// fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
///         "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers]
/// ```
public struct FetchCommand: Hashable, Sendable {
    public var isUID: Bool
    public var set: SequenceSet
    /// The requested items (a macro such as `FAST`, or the list's elements).
    public var items: [IMAPToken]
    /// Modifiers such as `(CHANGEDSINCE 12345 VANISHED)`, as tokens.
    public var modifiers: [IMAPToken]

    public init?(_ command: ParsedCommand) {
        guard command.baseName == "FETCH", (2...3).contains(command.arguments.count),
              let set = SequenceSet(command.arguments[0])
        else { return nil }
        isUID = command.isUID
        self.set = set
        switch command.arguments[1] {
        case .list(let elements): items = elements
        case .atom: items = [command.arguments[1]]
        default: return nil
        }
        if command.arguments.count == 3 {
            guard let modifiers = command.arguments[2].list else { return nil }
            self.modifiers = modifiers
        } else {
            modifiers = []
        }
    }
}
