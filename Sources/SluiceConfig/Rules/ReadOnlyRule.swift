import SluiceFilters

/// `read_only: true` → `ReadOnlyFilter`.
enum ReadOnlyRule: RuleReader {
    static let key = "read_only"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let flag = value.bool() else { return nil }
        if !flag { value.report("read_only: false has no effect; leave the rule out") }
        return flag ? ReadOnlyFilter() : nil
    }
}
