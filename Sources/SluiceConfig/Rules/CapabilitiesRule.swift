import SluiceFilters

/// `capabilities: {remove: [...], add: [...]}` → `CapabilityFilter`.
enum CapabilitiesRule: RuleReader {
    static let key = "capabilities"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let parts = value.fields(["remove", "add"]) else { return nil }
        let remove = parts["remove"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() } } ?? []
        let add = parts["add"].map { $0.listOrSingle().compactMap { $0.nonEmptyString() } } ?? []
        for name in remove + add where !name.allSatisfy({ $0.isASCII && !" ()[]{}\"\\%*".contains($0) }) {
            value.report("\(name) is not a capability name")
            return nil
        }
        if remove.contains(where: { ["IMAP4REV1", "IMAP4REV2"].contains($0.uppercased()) }) {
            value.report("IMAP4rev1/IMAP4rev2 cannot be removed")
            return nil
        }
        return CapabilityFilter(remove: Set(remove), add: add)
    }
}
