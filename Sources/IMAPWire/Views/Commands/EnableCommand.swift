/// `ENABLE capability…` (RFC 5161).
///
/// ```
/// enable = "ENABLE" 1*(SP capability)
/// ```
public struct EnableCommand: Hashable, Sendable {
    /// The capabilities to enable, upper-cased.
    public var capabilities: [String]

    public init?(_ command: ParsedCommand) {
        guard command.name == "ENABLE", let capabilities = command.arguments.keywords, !capabilities.isEmpty
        else { return nil }
        self.capabilities = capabilities
    }
}
