/// `* NAMESPACE personal other shared` (RFC 2342 §5).
///
/// ```
/// namespace-response = "NAMESPACE" SP namespace SP namespace SP namespace
/// namespace = nil / "(" 1*namespace-descr ")"
/// namespace-descr = "(" string SP (DQUOTE QUOTED-CHAR DQUOTE / nil) [namespace-response-extensions] ")"
/// ```
public struct NamespaceResponse: Hashable, Sendable {
    public struct Namespace: Hashable, Sendable {
        public var prefix: MailboxName
        public var delimiter: UInt8?
        public var extensions: [IMAPToken]
    }

    public var personal: [Namespace]
    public var otherUsers: [Namespace]
    public var shared: [Namespace]

    public init?(_ data: DataResponse) {
        guard data.name == "NAMESPACE", data.number == nil, data.arguments.count == 3,
              let personal = NamespaceResponse.namespaces(data.arguments[0]),
              let other = NamespaceResponse.namespaces(data.arguments[1]),
              let shared = NamespaceResponse.namespaces(data.arguments[2])
        else { return nil }
        self.personal = personal
        self.otherUsers = other
        self.shared = shared
    }

    private static func namespaces(_ token: IMAPToken) -> [Namespace]? {
        if token.isNil { return [] }
        guard let list = token.list, !list.isEmpty else { return nil }
        var result: [Namespace] = []
        for description in list {
            guard let parts = description.list, parts.count >= 2, let prefix = parts[0].stringBytes else { return nil }
            let delimiter: UInt8?
            switch parts[1] {
            case .nilValue: delimiter = nil
            case .quoted(let bytes) where bytes.count == 1: delimiter = bytes[0]
            default: return nil
            }
            result.append(Namespace(prefix: MailboxName(bytes: prefix), delimiter: delimiter, extensions: Array(parts.dropFirst(2))))
        }
        return result
    }
}
