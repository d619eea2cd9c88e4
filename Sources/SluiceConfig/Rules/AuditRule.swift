import SluiceFilters

/// `audit: {commands: [NAME, …], file: PATH}` → `AuditFilter` (the file
/// relative to the configuration file).
enum AuditRule: RuleReader {
    static let key = "audit"

    static func filter(from value: YAMLValue, entry: [String: YAMLValue], reading: RuleReading) -> (any Filter)? {
        guard let parts = value.fields(["commands", "file"]) else { return nil }
        guard let commandsValue = parts["commands"], let names = RulesReader.commandNames(commandsValue) else {
            if parts["commands"] == nil { value.report("audit needs commands: [NAME, …]") }
            return nil
        }
        guard let fileValue = parts["file"], let path = fileValue.nonEmptyString() else {
            if parts["file"] == nil { value.report("audit needs file: PATH") }
            return nil
        }
        let resolved = resolvePath(path, relativeTo: reading.baseDirectory)
        do {
            return AuditFilter(names: names, log: try AuditLog(path: resolved))
        } catch {
            fileValue.report(error.description)
            return nil
        }
    }
}
