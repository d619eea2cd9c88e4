/// `* ID (…)` or `* ID NIL`, the server's identification (RFC 2971).
public struct IDResponse: Hashable, Sendable {
    public var parameters: IDParameters

    public init?(_ data: DataResponse) {
        guard data.name == "ID", data.number == nil, data.arguments.count == 1,
              let parameters = IDParameters(data.arguments[0])
        else { return nil }
        self.parameters = parameters
    }
}
