/// The typed view of a response, for the responses IMAPWire understands.
public enum ResponseView: Hashable, Sendable {
    case status(StatusResponse)
    case continuation(ResponseText)
    case capability(CapabilityResponse)
    case list(ListResponse)
    case mailboxStatus(MailboxStatusResponse)
    case flags(FlagsResponse)
    case messageCount(MessageCountResponse)
    case fetch(FetchResponse)
    case id(IDResponse)
    case enabled(EnabledResponse)
    case namespace(NamespaceResponse)

    /// The view of `response`, or `nil` if it is unknown or does not match its grammar.
    public init?(_ response: ParsedResponse) {
        let view: ResponseView?
        switch response {
        case .status(let status): view = .status(status)
        case .continuation(let text): view = .continuation(text)
        case .data(let data):
            switch data.name {
            case "CAPABILITY": view = CapabilityResponse(data).map(ResponseView.capability)
            case "LIST", "LSUB": view = ListResponse(data).map(ResponseView.list)
            case "STATUS": view = MailboxStatusResponse(data).map(ResponseView.mailboxStatus)
            case "FLAGS": view = FlagsResponse(data).map(ResponseView.flags)
            case "EXISTS", "RECENT", "EXPUNGE": view = MessageCountResponse(data).map(ResponseView.messageCount)
            case "FETCH": view = FetchResponse(data).map(ResponseView.fetch)
            case "ID": view = IDResponse(data).map(ResponseView.id)
            case "ENABLED": view = EnabledResponse(data).map(ResponseView.enabled)
            case "NAMESPACE": view = NamespaceResponse(data).map(ResponseView.namespace)
            default: view = nil
            }
        }
        guard let view else { return nil }
        self = view
    }
}

extension Frame {
    /// Whether a typed view parses this frame: a known command or response
    /// that matches its grammar, an IDLE `DONE`, or a SASL line.
    public func isUnderstood(limits: IMAPLimits? = nil) -> Bool {
        switch kind {
        case .idleDone, .saslResponse:
            return true
        case .command:
            guard let command = try? command(limits: limits ?? .client) else { return false }
            return CommandView(command) != nil
        case .taggedResponse, .untaggedResponse, .continuationRequest:
            guard let response = try? response(limits: limits ?? .server) else { return false }
            return ResponseView(response) != nil
        }
    }
}
