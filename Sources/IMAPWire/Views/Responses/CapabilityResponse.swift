/// Capabilities, from `* CAPABILITY …` or from a `[CAPABILITY …]` response code.
///
/// ```
/// capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev1" *(SP capability)
/// resp-text-code  =/ capability-data
/// ```
public struct CapabilityResponse: Hashable, Sendable {
    /// The capability names, case kept as sent.
    public var capabilities: [String]

    public init(capabilities: [String]) {
        self.capabilities = capabilities
    }

    public init?(_ data: DataResponse) {
        guard data.name == "CAPABILITY", data.number == nil, let atoms = data.arguments.atoms else { return nil }
        capabilities = atoms
    }

    public init?(_ code: ResponseCode) {
        guard code.name == "CAPABILITY", let atoms = code.plainAtomStrings ?? code.arguments?.atoms else { return nil }
        capabilities = atoms
    }

    /// Whether a capability is present (names compare case-insensitively).
    public func contains(_ name: String) -> Bool {
        let upper = name.uppercased()
        return capabilities.contains { $0.uppercased() == upper }
    }
}
