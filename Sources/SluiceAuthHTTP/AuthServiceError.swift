/// The auth service could not be used (down, slow, or an answer that is not nginx's protocol).
public struct AuthServiceError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
