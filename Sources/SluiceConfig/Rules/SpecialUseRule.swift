import SluiceFilters

/// `special_use: {MAILBOX: \Attribute, …}` → `SpecialUseFilter`.
enum SpecialUseRule: RuleReader {
    static let key = "special_use"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let pairs = value.mapping() else { return nil }
        var byName: [String: String] = [:]
        for (name, attributeValue) in pairs {
            guard let attribute = attributeValue.string() else { return nil }
            guard let known = SpecialUseFilter.attributes.first(where: { $0.lowercased() == attribute.lowercased() }) else {
                attributeValue.report("expected one of \(SpecialUseFilter.attributes.sorted().joined(separator: ", ")), got \(attribute)")
                return nil
            }
            byName[name] = known
        }
        return SpecialUseFilter(byName: byName)
    }
}
