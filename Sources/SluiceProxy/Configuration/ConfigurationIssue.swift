/// One problem in a configuration file: where it is and what is wrong.
///
/// Printed as `FILE:LINE: KEY.PATH: message`, like a compiler, so an
/// operator can jump straight to it.
public struct ConfigurationIssue: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String?
    public var line: Int?
    /// Dotted path of the key, e.g. `listeners[1].address`.
    public var keyPath: String
    public var message: String

    public init(file: String?, line: Int?, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        var location = file ?? "configuration"
        if let line { location += ":\(line)" }
        return keyPath.isEmpty ? "\(location): \(message)" : "\(location): \(keyPath): \(message)"
    }
}

/// Every problem found in a configuration (validation does not stop at the first).
public struct ConfigurationErrors: Error, Sendable, CustomStringConvertible {
    public var issues: [ConfigurationIssue]

    /// `issues` in file order (stable for issues on the same line).
    public init(_ issues: [ConfigurationIssue]) {
        self.issues = issues.enumerated().sorted { a, b in
            (a.element.line ?? Int.max, a.offset) < (b.element.line ?? Int.max, b.offset)
        }.map(\.element)
    }

    public var description: String { issues.map(\.description).joined(separator: "\n") }
}
