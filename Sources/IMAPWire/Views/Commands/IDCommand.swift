/// `ID` (RFC 2971), also the shape of the `* ID` response.
///
/// ```
/// id = "ID" SP id-params-list
/// id-params-list = "(" *(string SP nstring) ")" / nil
/// ```
public struct IDParameters: Hashable, Sendable {
    public struct Field: Hashable, Sendable {
        public var key: String
        public var value: String?

        public init(key: String, value: String?) {
            self.key = key
            self.value = value
        }
    }

    /// The fields in order; empty for `NIL`.
    public var fields: [Field]

    public init(fields: [Field]) {
        self.fields = fields
    }

    init?(_ token: IMAPToken) {
        if token.isNil {
            fields = []
            return
        }
        guard let list = token.list, list.count % 2 == 0, list.count <= 60 else { return nil }
        fields = []
        for pair in stride(from: 0, to: list.count, by: 2) {
            guard let key = list[pair].string else { return nil }
            let value = list[pair + 1]
            if value.isNil {
                fields.append(Field(key: key, value: nil))
            } else if let text = value.string {
                fields.append(Field(key: key, value: text))
            } else {
                return nil
            }
        }
    }

    /// The value for a key, compared case-insensitively.
    public subscript(key: String) -> String? {
        fields.first { $0.key.caseInsensitiveCompare(key) }?.value
    }
}

/// The client's `ID` command.
public struct IDCommand: Hashable, Sendable {
    public var parameters: IDParameters

    public init?(_ command: ParsedCommand) {
        guard command.name == "ID", command.arguments.count == 1,
              let parameters = IDParameters(command.arguments[0])
        else { return nil }
        self.parameters = parameters
    }
}

extension String {
    fileprivate func caseInsensitiveCompare(_ other: String) -> Bool {
        lowercased() == other.lowercased()
    }
}
