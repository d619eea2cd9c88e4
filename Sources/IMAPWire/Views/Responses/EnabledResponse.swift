/// `* ENABLED capability…` (RFC 5161 §3.2).
///
/// ```
/// enable-data = "ENABLED" *(SP capability)
/// ```
public struct EnabledResponse: Hashable, Sendable {
    /// Enabled capabilities, upper-cased (may be empty).
    public var capabilities: [String]

    public init?(_ data: DataResponse) {
        guard data.name == "ENABLED", data.number == nil, let capabilities = data.arguments.keywords else {
            return nil
        }
        self.capabilities = capabilities
    }
}
