/// `STORE` and `UID STORE` (RFC 3501 §6.4.6, RFC 7162 UNCHANGEDSINCE).
///
/// ```
/// store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags
/// store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
/// ```
public struct StoreCommand: Hashable, Sendable {
    public enum Operation: Hashable, Sendable { case replace, add, remove }

    public var isUID: Bool
    public var set: SequenceSet
    public var modifiers: [IMAPToken]
    public var operation: Operation
    public var isSilent: Bool
    /// The item name as sent upper-cased (`+FLAGS.SILENT`, or `X-GM-LABELS` and other extensions).
    public var item: String
    public var flags: [String]

    public init?(_ command: ParsedCommand) {
        guard command.baseName == "STORE", command.arguments.count >= 3,
              let set = SequenceSet(command.arguments[0])
        else { return nil }
        isUID = command.isUID
        self.set = set
        var rest = command.arguments.dropFirst()
        modifiers = []
        if let modifiers = rest.first?.list {
            self.modifiers = modifiers
            rest = rest.dropFirst()
        }
        guard let item = rest.first?.keyword else { return nil }
        self.item = item
        rest = rest.dropFirst()
        var base = Substring(item)
        switch base.first {
        case "+": operation = .add; base = base.dropFirst()
        case "-": operation = .remove; base = base.dropFirst()
        default: operation = .replace
        }
        isSilent = base.hasSuffix(".SILENT")
        if isSilent { base = base.dropLast(7) }
        guard !base.isEmpty, !rest.isEmpty else { return nil }
        let values: [IMAPToken]
        if rest.count == 1, let list = rest.first?.list { values = list } else { values = Array(rest) }
        guard let flags = values.atoms else { return nil }
        self.flags = flags
    }
}
